"""``DeepLocClassifier``: train or fine-tune DeepLoc with fit/predict; ``pretrained=`` resolved."""

import os
import warnings
from dataclasses import fields
from functools import partial
from numbers import Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from .inference import PRECISIONS, resolve_device
from .model import DeepLocModel, check_config, default_channel_names, model_config, state_problem
from .network import PAPER_CONV_CHANNELS, PAPER_FC_UNITS
from .preprocessing import STRETCH_VARIANTS
from .streaming import apply_blockwise, is_dask_array, is_lazy_array, n_cells
from .training import Recipe, train_network
from .validation import (
    IMAGE_SIZE,
    DeviceName,
    PercentilePair,
    PositiveInt,
    PositiveInts,
    check_channel_names,
    check_labels,
    validate_crops,
)

# The paper's recipe, except lr from scratch: Adam at 0.1 ends worse (benchmarks/RESULTS.md).
SCRATCH = {"lr": 1e-3, "max_iter": 10_000, "dropout": 0.0}
FINE_TUNE = {"lr": 3e-3, "max_iter": 500, "dropout": 0.5}
REGISTERED_MODELS = {"deeploc-chong": "chong"}
# The parameters DeepLocClassifier and DeepLocFeaturizer share: the model and how it predicts.
SHARED_CONSTRAINTS = {
    "pretrained": "no_validation",  # resolve_model says what it accepts
    "tta": ["boolean"],
    "batch_size": [PositiveInt()],
    "device": [DeviceName()],
    "precision": [StrOptions(set(PRECISIONS))],
    "verbose": ["verbose"],
}


def resolve_model(pretrained):
    """The :class:`DeepLocModel` behind a ``pretrained`` parameter, or None.

    A model folder (a path that exists always wins), a registered name (fetched once), a model,
    or a fitted estimator holding one as ``model_``.
    """
    if pretrained is None:
        return None
    if isinstance(pretrained, (str, os.PathLike)):
        if Path(pretrained).exists():
            return DeepLocModel.load(pretrained)
        if str(pretrained) not in REGISTERED_MODELS:
            raise FileNotFoundError(
                f"No model folder at {pretrained} (the path does not exist), and it is "
                f"not a registered model name ({sorted(REGISTERED_MODELS)})."
            )
        from .datasets import fetch_deeploc_model

        return DeepLocModel.load(fetch_deeploc_model(REGISTERED_MODELS[str(pretrained)]))
    model = (
        pretrained if isinstance(pretrained, DeepLocModel) else getattr(pretrained, "model_", None)
    )
    if isinstance(model, DeepLocModel):
        if found := state_problem(model.network.state_dict()):  # folders are checked on load
            name, problem = found
            raise ValueError(f"pretrained's tensor {name} {problem}; expected a trained model.")
        return model
    if hasattr(pretrained, "get_params") and hasattr(pretrained, "fit"):
        name = type(pretrained).__name__
        try:
            check_is_fitted(pretrained)
        except NotFittedError:
            raise ValueError(
                f"pretrained is an unfitted {name}: fit it first, or pass a model folder."
            ) from None
        where = {"best_estimator_": "search.best_estimator_", "steps": "pipeline[-1]"}
        held = [hint for attribute, hint in where.items() if hasattr(pretrained, attribute)]
        inside = f" (the one in it, if any: {held[0]})" if held else ""
        raise ValueError(
            f"pretrained is a fitted {name}, not a DeepLoc model; pass a model folder or a "
            f"fitted DeepLocClassifier{inside}."
        )
    raise TypeError(
        "pretrained must be a model folder path, a registered model name, a DeepLocModel or a "
        f"fitted DeepLocClassifier; got {type(pretrained).__name__}."
    )


def inference_options(estimator, X):
    """The prediction options of a fitted estimator for ``X``, checked once, as keywords."""
    check_is_fitted(estimator, "model_")
    estimator._validate_params()  # parameters set after fit (batch_size=0) are refused too
    try:  # a batch never holds more cells than X
        n_items = n_cells(X)
    except (TypeError, IndexError):  # not a sequence of cells: validate_crops says so
        n_items = None
    tta, batch_size, precision = estimator.model_.check_inference_options(
        estimator.tta, estimator.batch_size, estimator.precision, n_items=n_items
    )
    lazy = is_dask_array(X) and X.ndim in (2, 4)  # other shapes: apply_blockwise says so
    if lazy and _known_and_small(X.shape[1:], estimator.model_.n_features_in):
        # A lazy input's cell shape is refused now, not once computed: one cell of zeros
        validate_for(estimator, np.zeros((1, *X.shape[1:]), X.dtype), estimator.model_, reset=False)
    return {"tta": tta, "batch_size": batch_size, "precision": precision, "check_input": False}


def _known_and_small(shape, n_values):
    """Whether a cell ``shape`` is known and holds at most 16 times ``n_values`` values."""
    return not any(np.isnan(size) for size in shape) and np.prod(shape) <= 16 * n_values


def validate_for(estimator, X, model, *, reset):
    """:func:`validate_crops` against the input ``model`` takes."""
    return validate_crops(
        estimator,
        X,
        reset=reset,
        n_channels=model.n_channels,
        image_size=model.image_size,
        crop_size=model.crop_size,
    )


class KeepPretrainedMixin:
    """``clone`` keeps ``pretrained`` by reference: it is only read, and a deep clone unfits it.

    Its parameters cannot be set through this estimator: clones share it.
    """

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        params.update({k: clone(v, safe=False) for k, v in params.items() if k != "pretrained"})
        return type(self)(**params)

    def set_params(self, **params):
        if _holds(params.get("pretrained"), self):
            raise ValueError(
                "pretrained would be this estimator itself (or one that holds it), whose "
                "parameters would then nest without end; pass a model folder "
                "(save_pretrained) or a fitted copy (copy.deepcopy)."
            )
        current = self.get_params(deep=True)
        nested = [
            name
            for name, value in params.items()
            if name.startswith("pretrained__") and not _same(value, current.get(name))
        ]
        if nested:
            raise ValueError(
                f"{nested[0]} would change the pretrained estimator itself, which every clone "
                "of this one shares; set this estimator's own parameters (batch_size, tta, "
                "precision, device) or pass another pretrained."
            )
        return super().set_params(**params)


def _holds(pretrained, estimator):
    """Whether ``estimator`` is ``pretrained`` or in its chain of ``pretrained``."""
    seen = set()
    while hasattr(pretrained, "get_params") and id(pretrained) not in seen:
        if pretrained is estimator:
            return True
        seen.add(id(pretrained))
        pretrained = pretrained.get_params(deep=False).get("pretrained")
    return False


def _same(value, other):
    try:
        return value is other or bool(value == other)
    except (TypeError, ValueError):  # arrays and other values without one truth
        return False


class BackOnDeviceMixin:
    """Unpickled, ``model_`` goes back to ``device`` (pickles hold CPU models), else stays."""

    def __setstate__(self, state):
        super().__setstate__(state)
        if "model_" in state:
            try:
                precision = getattr(self, "precision", "fp32")  # older pickles have none
                self.model_ = self.model_.to(resolve_device(self.device, precision))
            except ValueError as error:  # saved on a GPU machine, loaded on one without
                warnings.warn(f"{error} The model stays on the CPU.", stacklevel=2)


class DeepLocClassifier(BackOnDeviceMixin, KeepPretrainedMixin, ClassifierMixin, BaseEstimator):
    """DeepLoc: a deep network that classifies protein localization in single cells.

    Trains the network of Kraus et al. (2017) from scratch, or fine-tunes a pretrained one, on
    single-cell crops with the paper's recipe; the result is ``model_``, a
    :class:`~sklearn_deeploc.DeepLocModel`.

    Parameters
    ----------
    pretrained : str, path-like, DeepLocClassifier, DeepLocModel or None, default=None
        A model folder (see :meth:`save_pretrained`), the registered name ``"deeploc-chong"``, a
        fitted classifier or a model. Every layer but the last is copied, with the model's
        architecture and stretch (the parameters for them here are ignored). None: from scratch.
    conv_channels : tuple of int, default=(64, 64, 128, 128, 256, 256, 256, 256)
        Feature maps of the conv layers.
    fc_units : tuple of int, default=(512, 512)
        Units of the hidden fully connected layers.
    crop_size : int, default=60
        Side of the crops the network sees (taken from ``image_size`` crops).
    image_size : int, default=64
        Side of the crops in the flat DeepLoc layout ``(n, C * 64 * 64)``.
    stretch : tuple of float or None, default=(0.1, 99.9)
        Percentiles of the per-cell, per-channel stretch to [0, 1]; None feeds raw pixels.
    stretch_variant : {"clip", "reference"}, default="clip"
        See :func:`~sklearn_deeploc.preprocessing.percentile_stretch`.
    augment : bool, default=True
        Random crops, flips and 90-degree rotations while training.
    tta : bool, default=True
        Predict with the mean of five crops rather than the centre crop.
    freeze : {None, "conv"}, default=None
        ``"conv"`` trains the FC layers only; conv layers and their batch-norm statistics stay.
    dropout : float or None, default=None
        Dropout before the output layer; None: 0.5 when fine-tuning, 0 from scratch.
    lr : float or None, default=None
        Adam's initial learning rate; None: 0.003 when fine-tuning (the paper), 0.001 from scratch.
    batch_size : int, default=128
        Cells per optimizer step.
    max_iter : int or None, default=None
        Optimizer steps (not epochs); None: 500 when fine-tuning, 10,000 from scratch (the paper).
    validation_fraction : float, default=0.1
        Cells held out to pick the best model (stratified where possible; see ``validation_``).
    validation_interval : int, default=500
        Steps between validations (one skorch epoch).
    sampling : {"balanced", "uniform"}, default="balanced"
        Training batches with every class equally likely (with replacement), or cells uniformly.
    channel_names : list of str or None, default=None
        Names stored with the model; default ``["protein", "marker"]``.
    device : str, default="auto"
        Torch device; "auto" takes CUDA when present (``precision="int8"`` predicts on the CPU).
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        Arithmetic of training (autocast, fp32 master weights) and prediction. ``"fp16"`` needs
        a GPU (training scales the loss); ``"int8"`` is for prediction, training runs in fp32.
    checkpoint_dir : str, path-like or None, default=None
        Folder of training checkpoints: a later ``fit`` with the same data and parameters
        resumes from the newest one; other data or parameters are refused (so leave it None
        in cross-validation and searches, whose clones fit other data).
    checkpoint_interval : int or None, default=None
        Steps between checkpoints; None means every ``validation_interval``.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, sampling, augmentation and the validation split; an int makes CPU
        training reproducible.
    verbose : int, default=0
        1 shows a progress bar and a line per validation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in ``predict_proba`` column order.
    n_features_in_ : int
        Values per cell (``C * H * W``).
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame.
    model_ : DeepLocModel
        The trained network, classes, channel names and preprocessing.
    net_ : skorch.NeuralNetClassifier
        The trained net (after :meth:`fit` only); ``net_.module_`` is ``model_``'s network
        (for int8 trained on a GPU, ``model_`` holds a CPU copy).
    history_ : skorch.History or None
        Losses and accuracies per validation interval (None for loaded models).
    n_iter_ : int
        Optimizer steps taken.
    validation_ : str
        How the validation cells were chosen ("stratified", "random", "none").

    See Also
    --------
    DeepLocFeaturizer : pretrained DeepLoc features for other classifiers.
    load_pretrained : load a saved model folder.
    DeepLocModel : the trained network with its preprocessing.

    Examples
    --------
    >>> from sklearn_deeploc import DeepLocClassifier
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> X, y = make_yeast_cells(10, ["NUCLEI", "VACUOLE", "CELLPERIPHERY"], random_state=0)
    >>> clf = DeepLocClassifier(conv_channels=(8,) * 8, fc_units=(16, 16), max_iter=20,
    ...                         batch_size=16, random_state=0)
    >>> clf.fit(X, y).predict(X[:3]).shape
    (3,)
    >>> clf.predict_proba(X[:3]).sum(axis=1).round(5)
    array([1., 1., 1.], dtype=float32)
    """

    _parameter_constraints = {
        **SHARED_CONSTRAINTS,
        "conv_channels": [PositiveInts()],
        "fc_units": [PositiveInts()],
        "crop_size": [PositiveInt()],
        "image_size": [PositiveInt()],
        "stretch": [None, PercentilePair()],
        "stretch_variant": [StrOptions(set(STRETCH_VARIANTS))],
        "augment": ["boolean"],
        "freeze": [None, StrOptions({"conv"})],
        "dropout": [None, Interval(Real, 0, 1, closed="left")],
        "lr": [None, Interval(Real, 0, None, closed="left")],
        "max_iter": [None, PositiveInt()],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "validation_interval": [PositiveInt()],
        "sampling": [StrOptions({"balanced", "uniform"})],
        "channel_names": [None, list, tuple],
        "checkpoint_dir": [None, str, os.PathLike],
        "checkpoint_interval": [None, PositiveInt()],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        pretrained=None,
        conv_channels=PAPER_CONV_CHANNELS,
        fc_units=PAPER_FC_UNITS,
        crop_size=60,
        image_size=IMAGE_SIZE,
        stretch=(0.1, 99.9),
        stretch_variant="clip",
        augment=True,
        tta=True,
        freeze=None,
        dropout=None,
        lr=None,
        batch_size=128,
        max_iter=None,
        validation_fraction=0.1,
        validation_interval=500,
        sampling="balanced",
        channel_names=None,
        device="auto",
        precision="fp32",
        checkpoint_dir=None,
        checkpoint_interval=None,
        random_state=None,
        verbose=0,
    ):
        self.pretrained = pretrained
        self.conv_channels = conv_channels
        self.fc_units = fc_units
        self.crop_size = crop_size
        self.image_size = image_size
        self.stretch = stretch
        self.stretch_variant = stretch_variant
        self.augment = augment
        self.tta = tta
        self.freeze = freeze
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.validation_interval = validation_interval
        self.sampling = sampling
        self.channel_names = channel_names
        self.device = device
        self.precision = precision
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_interval = checkpoint_interval
        self.random_state = random_state
        self.verbose = verbose

    def _spec(self, source):
        """Architecture and preprocessing: the pretrained model's, else the parameters'."""
        if source is not None:
            return source.architecture, dict(source.preprocessing, tta=self.tta)
        architecture = {
            "conv_channels": list(self.conv_channels),
            "fc_units": list(self.fc_units),
            "crop_size": self.crop_size,
        }
        preprocessing = {
            "image_size": self.image_size,
            "stretch": None if self.stretch is None else list(self.stretch),
            "stretch_variant": self.stretch_variant,
            "tta": self.tta,
        }
        return architecture, preprocessing

    def _recipe(self, fine_tuning):
        """The training recipe and dropout: the parameters, the mode's defaults where None."""
        params = self.get_params(deep=False)
        defaults = FINE_TUNE if fine_tuning else SCRATCH
        params.update({name: value for name, value in defaults.items() if params[name] is None})
        recipe = Recipe(
            **{field.name: params[field.name] for field in fields(Recipe) if field.name in params},
            balanced=self.sampling == "balanced",
            freeze_conv=self.freeze == "conv",
        )
        return recipe, params["dropout"]

    def _check_y(self, X, y):
        if y is None:
            raise ValueError("DeepLocClassifier requires y to be passed, but the target y is None.")
        classes, codes = check_labels(y)  # a list keeps its types; names None, NaN, mixed types
        y = classes[codes]
        check_consistent_length(X, y)
        check_classification_targets(y)
        if classes.dtype == bool:
            raise ValueError(
                "y holds booleans; model folders store class names as strings or numbers. "
                "Expected labels such as y.astype(int) or names (e.g. 'positive')."
            )
        if len(classes) < 2:
            raise ValueError(
                "DeepLocClassifier needs cells of at least 2 classes; "
                f"got 1 class ({classes[0]!r})."
            )
        return classes, codes

    def _check_training(self):
        """``fit``'s checks of its parameters alone (jobs run them before reading data); return
        the pretrained model."""
        if self.batch_size < 2:  # batch normalization compares the cells of a batch
            raise ValueError(f"batch_size must be at least 2 to train; got {self.batch_size}.")
        return resolve_model(self.pretrained)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train (or fine-tune) on raw crops ``X`` with labels ``y`` of any type."""
        if is_lazy_array(X) and not hasattr(X, "dtype"):
            raise TypeError(
                f"fit needs the crops in memory; got a {type(X).__name__}. Read a DeepLoc HDF5 "
                "file with load_deeploc_hdf5 first."
            )
        source = self._check_training()
        architecture, preprocessing = self._spec(source)
        X = validate_crops(
            self,
            X,
            reset=True,
            n_channels=None if source is None else source.n_channels,
            image_size=preprocessing["image_size"],
            crop_size=architecture["crop_size"],
        )
        classes, codes = self._check_y(X, y)
        channel_names = self.channel_names
        if channel_names is None and source is not None:
            channel_names = source.channel_names
        channel_names = check_channel_names(channel_names, X.shape[1])
        if channel_names is None:
            channel_names = default_channel_names(X.shape[1])
        recipe, dropout = self._recipe(source is not None)
        architecture.update(n_channels=X.shape[1], n_classes=len(classes), dropout=dropout)
        # The model's config, checked before training rather than after it.
        config = model_config(architecture, classes, channel_names, preprocessing)
        config = check_config(config, type(self).__name__)
        self.net_, self.validation_, self.n_iter_ = train_network(
            X,
            codes,
            architecture=architecture,
            preprocessing=preprocessing,
            recipe=recipe,
            random_state=self.random_state,
            initial_state=None if source is None else source.transfer_state(),
        )
        self.history_ = self.net_.history
        self.model_ = DeepLocModel._from_config(self.net_.module_, {**config, "classes": classes})
        self.classes_ = self.model_.classes
        if self.precision == "int8":  # predicts on the CPU, calibrated on a sample of these cells
            self.model_ = self.model_.to("cpu").calibrate(X, random_state=0)
        return self

    @classmethod
    def from_model(cls, model):
        """A fitted classifier around a :class:`DeepLocModel` (parameters from the model).

        Examples
        --------
        >>> from sklearn_deeploc import DeepLocClassifier, DeepLocModel, DeepLocNet
        >>> model = DeepLocModel(DeepLocNet(n_classes=2, conv_channels=(4,) * 8,
        ...                                 fc_units=(8, 8)), ["a", "b"])
        >>> DeepLocClassifier.from_model(model).classes_.tolist()
        ['a', 'b']
        """
        architecture, preprocessing = model.architecture, model.preprocessing
        clf = cls(
            conv_channels=tuple(architecture["conv_channels"]),
            fc_units=tuple(architecture["fc_units"]),
            crop_size=architecture["crop_size"],
            image_size=preprocessing["image_size"],
            stretch=None if preprocessing["stretch"] is None else tuple(preprocessing["stretch"]),
            stretch_variant=preprocessing["stretch_variant"],
            tta=preprocessing["tta"],
            channel_names=list(model.channel_names),
        )
        clf.model_, clf.classes_ = model, model.classes
        clf.n_features_in_ = model.n_features_in
        clf.n_iter_ = 0
        clf.history_ = None
        clf.validation_ = "none"
        return clf

    def _predict_proba_in_memory(self, X, options):
        X = validate_for(self, X, self.model_, reset=False)
        return self.model_.predict_proba(X, verbose=self.verbose, **options)

    def predict_proba(self, X):
        """Class probabilities: the mean softmax of five crops (or the centre crop).

        Parameters
        ----------
        X : array-like of shape (n, C, H, W) or (n, C * 64 * 64), or DataFrame
            Also a :class:`~sklearn_deeploc.datasets.DeepLocHDF5Dataset`, ``h5py`` or ``zarr``
            array (read in blocks), or a ``dask.array`` (computed lazily, block by block).

        Returns
        -------
        ndarray of shape (n, n_classes), float32, or a dask array
            Columns follow ``classes_``; rows sum to 1.
        """
        predict = partial(self._predict_proba_in_memory, options=inference_options(self, X))
        return apply_blockwise(predict, X, len(self.classes_))

    def predict(self, X):
        """Most probable class of each cell, as labels of ``classes_`` (lazy for dask input)."""
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        if is_dask_array(proba):
            return proba.argmax(axis=1).map_blocks(self.classes_.take, dtype=self.classes_.dtype)
        return self.classes_[np.argmax(proba, axis=1)]

    def save_pretrained(self, path):
        """Write the fitted model folder; return its path, for :func:`load_pretrained`."""
        check_is_fitted(self, "model_")
        model = self.model_
        if model.preprocessing["tta"] != self.tta:  # set after fit: predictions follow it
            model = DeepLocModel(
                model.network,
                model.classes,
                channel_names=model.channel_names,
                preprocessing={**model.preprocessing, "tta": self.tta},
            )
        return model.save(path)


def load_pretrained(path):
    """Load a model folder (or a registered name) as a fitted :class:`DeepLocClassifier`.

    Parameters
    ----------
    path : str or path-like
        A folder written by :meth:`DeepLocClassifier.save_pretrained`, or ``"deeploc-chong"``
        (the published DeepLoc, fetched once; a path that exists always wins over a name).

    Returns
    -------
    DeepLocClassifier
        Fitted: for ``predict``, ``pretrained=`` or a :class:`DeepLocFeaturizer`.

    Examples
    --------
    >>> from sklearn_deeploc import DeepLocClassifier, load_pretrained
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> X, y = make_yeast_cells(4, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> clf = DeepLocClassifier(conv_channels=(4,) * 8, fc_units=(8, 8), max_iter=2,
    ...                         batch_size=8, random_state=0, device="cpu").fit(X, y)
    >>> import tempfile
    >>> folder = clf.save_pretrained(tempfile.mkdtemp() + "/model")
    >>> np.allclose(load_pretrained(folder).predict_proba(X), clf.predict_proba(X), atol=1e-6)
    True
    """
    return DeepLocClassifier.from_model(resolve_model(path))
