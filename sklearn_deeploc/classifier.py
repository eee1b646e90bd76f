"""``DeepLocClassifier``: train or fine-tune DeepLoc with fit/predict, over skorch."""

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split
from torch import nn

from .inference import inference_copy, predict_batches, resolve_device
from .network import PAPER_CONV_CHANNELS, PAPER_FC_UNITS, DeepLocNet
from .preprocessing import center_crop, stretch_as_stored
from .pretrained import KeepPretrainedMixin, resolve_pretrained, write_model_folder
from .streaming import apply_blockwise, is_dask_array, take_labels
from .training import CellBatches, StepSampler
from .validation import IMAGE_SIZE, check_crops, check_positive_int

# The paper's recipe. Learning rate from scratch: see benchmarks/RESULTS.md for why
# not the paper's 0.1 (Adam at 0.1 does not train this PyTorch network).
SCRATCH = {"lr": 1e-3, "max_iter": 10_000, "dropout": 0.0}
FINE_TUNE = {"lr": 3e-3, "max_iter": 500, "dropout": 0.5}
LR_DECAY = {"step_size": 25, "gamma": 0.96}
FREEZE_OPTIONS = (None, "conv")


def check_and_flatten(estimator, X, *, reset, n_channels, image_size, crop_size):
    """Shared input check of the estimators: sklearn bookkeeping, then :func:`check_crops`.

    ``n_features_in_`` counts values per cell (``C * H * W``, the flat layout's
    width) whichever layout came; feature names are kept for DataFrames.
    """
    if not hasattr(X, "shape"):
        X = np.asarray(X)
    check = {"n_channels": n_channels, "image_size": image_size, "min_size": crop_size}
    if len(X.shape) == 4:  # a channel mismatch is clearer said in channels than in columns
        crops = check_crops(X, **check)
        validate_data(estimator, crops.reshape(len(crops), -1), skip_check_array=True, reset=reset)
        return crops
    if len(X.shape) == 2:
        validate_data(estimator, X, skip_check_array=True, reset=reset)
    return check_crops(X, **check)


def _channel_names(n_channels, names):
    if names is not None:
        if len(names) != n_channels:
            raise ValueError(f"channel_names has {len(names)} names for {n_channels} channels.")
        return list(names)
    return ["protein", "marker"] if n_channels == 2 else [f"channel{i}" for i in range(n_channels)]


class DeepLocClassifier(KeepPretrainedMixin, ClassifierMixin, BaseEstimator):
    """DeepLoc: a deep network that classifies protein localization in single cells.

    Trains the network of Kraus et al. (2017) from scratch, or fine-tunes a
    pretrained one, on crops of single cells. Training follows the paper:
    per-cell percentile stretch, random 60x60 crops with flips and rotations,
    Adam with exponential learning-rate decay (0.96 every 25 steps), a
    validation split with the best model kept. Prediction averages the
    softmax of five crops (centre and corners). A skorch
    ``NeuralNetClassifier`` does the training (``net_``).

    Parameters
    ----------
    pretrained : str, path-like, DeepLocClassifier or None, default=None
        A model folder (see :meth:`save_pretrained`) or a fitted classifier.
        Every layer but the last is copied; a new output layer (with
        ``dropout``) is trained for the classes of ``y``. The architecture,
        crop size and stretch then come from the pretrained model and the
        parameters for them here are ignored. None trains from scratch.
    conv_channels : tuple of int, default=(64, 64, 128, 128, 256, 256, 256, 256)
        Feature maps of the conv layers.
    fc_units : tuple of int, default=(512, 512)
        Units of the hidden fully connected layers.
    crop_size : int, default=60
        Side of the crops the network sees (taken from ``image_size`` crops).
    image_size : int, default=64
        Side of the crops in the flat DeepLoc layout ``(n, C * 64 * 64)``.
    stretch : tuple of float or None, default=(0.1, 99.9)
        Percentiles of the per-cell, per-channel stretch to [0, 1]; None
        feeds the pixels as they are.
    stretch_variant : {"clip", "reference"}, default="clip"
        See :func:`~sklearn_deeploc.preprocessing.percentile_stretch`.
    augment : bool, default=True
        Random crops, flips and 90-degree rotations while training.
    tta : bool, default=True
        Predict with the mean of five crops rather than the centre crop.
    freeze : {None, "conv"}, default=None
        ``"conv"`` trains the fully connected layers only; the conv layers,
        their batch-norm statistics included, stay as they are.
    dropout : float or None, default=None
        Dropout before the output layer; None means 0.5 when fine-tuning and
        0 from scratch.
    lr : float or None, default=None
        Adam's initial learning rate; None means 0.003 when fine-tuning (the
        paper) and 0.001 from scratch.
    batch_size : int, default=128
        Cells per optimizer step.
    max_iter : int or None, default=None
        Optimizer steps (not epochs); None means 500 when fine-tuning and
        10,000 from scratch, as in the paper.
    validation_fraction : float, default=0.1
        Cells held out (stratified) to pick the best model. With too few
        cells per class the split is unstratified or skipped; ``validation_``
        says which.
    validation_interval : int, default=500
        Steps between validations (one skorch epoch).
    sampling : {"balanced", "uniform"}, default="balanced"
        Draw training batches with every class equally likely (with
        replacement), or cells uniformly.
    channel_names : list of str or None, default=None
        Names stored with the model; default ``["protein", "marker"]``.
    device : str, default="auto"
        Torch device; "auto" takes CUDA when present.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, sampling, augmentation and the validation split;
        an int makes CPU training reproducible.
    verbose : int, default=0
        0 is silent; 1 prints a table per validation and progress bars.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in ``predict_proba`` column order.
    n_features_in_ : int
        Values per cell (``C * H * W``).
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame.
    net_ : skorch.NeuralNetClassifier
        The trained net; ``net_.module_`` is the :class:`DeepLocNet`.
    history_ : skorch.History
        Losses and accuracies per validation interval.
    n_iter_ : int
        Optimizer steps taken.
    validation_ : str
        How the validation cells were chosen ("stratified", "random", "none").
    architecture_ : dict
        Keyword arguments of the :class:`DeepLocNet`.
    preprocessing_ : dict
        Stretch and crop settings used for training and prediction.
    channel_names_ : list of str

    See Also
    --------
    DeepLocFeaturizer : pretrained DeepLoc features for other classifiers.
    load_pretrained : load a saved model folder.

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
        self.random_state = random_state
        self.verbose = verbose

    # -- fitting -----------------------------------------------------------------

    def _recipe(self, fine_tuning):
        defaults = FINE_TUNE if fine_tuning else SCRATCH
        lr = defaults["lr"] if self.lr is None else self.lr
        max_iter = defaults["max_iter"] if self.max_iter is None else self.max_iter
        dropout = defaults["dropout"] if self.dropout is None else self.dropout
        return lr, check_positive_int(max_iter, "max_iter"), dropout

    def _check_params(self):
        if self.freeze not in FREEZE_OPTIONS:
            raise ValueError(f"freeze must be one of {FREEZE_OPTIONS}; got {self.freeze!r}.")
        if self.sampling not in ("balanced", "uniform"):
            raise ValueError(f"sampling must be 'balanced' or 'uniform'; got {self.sampling!r}.")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1); got {self.validation_fraction!r}."
            )
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.validation_interval, "validation_interval")

    def _check_y(self, X, y):
        if y is None:
            raise ValueError("DeepLocClassifier requires y to be passed, but the target y is None.")
        y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                "DeepLocClassifier needs cells of at least 2 classes; "
                f"got 1 class ({classes[0]!r})."
            )
        return classes, codes

    def fit(self, X, y):
        """Train (or fine-tune) on crops ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like of shape (n, C, H, W) or (n, C * 64 * 64), or DataFrame
            Raw crops (integer or float).
        y : array-like of shape (n,)
            Labels of any type; ``predict`` gives them back.

        Returns
        -------
        self : DeepLocClassifier
        """
        self._check_params()
        source = resolve_pretrained(self.pretrained)
        if source is None:
            architecture = {
                "conv_channels": list(self.conv_channels),
                "fc_units": list(self.fc_units),
                "crop_size": self.crop_size,
            }
            preprocessing = {
                "image_size": self.image_size,
                "stretch": None if self.stretch is None else list(self.stretch),
                "stretch_variant": self.stretch_variant,
            }
            n_channels = None
        else:
            architecture = dict(source.architecture_)
            preprocessing = dict(source.preprocessing_)
            n_channels = architecture["n_channels"]
        X = check_and_flatten(
            self,
            X,
            reset=True,
            n_channels=n_channels,
            image_size=preprocessing["image_size"],
            crop_size=architecture["crop_size"],
        )
        classes, codes = self._check_y(X, y)
        lr, max_iter, dropout = self._recipe(source is not None)
        architecture.update(n_channels=X.shape[1], n_classes=len(classes), dropout=dropout)

        seeds = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=4)
        train_idx, valid_idx, validation = self._split(codes, seeds[0])
        stretched = stretch_as_stored(torch.from_numpy(X), preprocessing)
        valid = None
        if len(valid_idx):
            crops = center_crop(stretched[valid_idx], architecture["crop_size"]).contiguous()
            valid = SkorchDataset(crops, codes[valid_idx])
        net = self._build_net(architecture, lr, max_iter, codes[train_idx], seeds[1], valid)
        train = CellBatches(
            stretched[train_idx],
            torch.from_numpy(codes[train_idx]),
            architecture["crop_size"],
            self.augment,
            seeds[2],
        )

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seeds[3]))
            net.initialize()
            if source is not None:
                self._copy_all_but_head(source.net_.module_, net.module_)
            if self.freeze == "conv":
                net.module_.freeze_features()
            net.partial_fit(train, y=None)

        # Free the validation cells and the sampler: they would be pickled with the model.
        net.train_split = None
        net.iterator_train__sampler = None
        self.net_ = net
        self.validation_ = validation
        self.history_ = net.history
        self.n_iter_ = sum("train_loss" in b for epoch in net.history for b in epoch["batches"])
        self._finish(classes, architecture, preprocessing)
        return self

    def _finish(self, classes, architecture, preprocessing):
        self.classes_ = classes
        self.architecture_ = architecture
        self.preprocessing_ = preprocessing
        self.channel_names_ = _channel_names(architecture["n_channels"], self.channel_names)
        self._fast = inference_copy(self.net_.module_, self.net_.device)

    def _split(self, codes, seed):
        n_valid = int(round(self.validation_fraction * len(codes)))
        counts = np.bincount(codes)
        if n_valid == 0:
            return np.arange(len(codes)), np.array([], int), "none"
        try:
            if counts.min() >= 2 and n_valid >= len(counts):
                train, valid = train_test_split(
                    np.arange(len(codes)), test_size=n_valid, stratify=codes, random_state=seed
                )
                return train, valid, "stratified"
        except ValueError:
            pass
        # Too few cells per class to stratify: keep every class in training.
        first_of_class = np.unique(codes, return_index=True)[1]
        others = np.setdiff1d(np.arange(len(codes)), first_of_class)
        if len(others) < n_valid:
            return np.arange(len(codes)), np.array([], int), "none"
        valid = np.random.default_rng(seed).choice(others, n_valid, replace=False)
        return np.setdiff1d(np.arange(len(codes)), valid), valid, "random"

    def _build_net(self, architecture, lr, max_iter, train_codes, seed, valid=None):
        """The skorch net; with ``valid`` cells it validates each epoch and keeps the best."""
        steps_per_epoch = min(self.validation_interval, max_iter)
        callbacks = [("lr_decay", LRScheduler("StepLR", step_every="batch", **LR_DECAY))]
        if valid is not None:
            # Never stops early (patience beyond the last epoch): only restores the best.
            best = EarlyStopping(monitor="valid_loss", patience=max_iter + 1, load_best=True)
            callbacks.append(("best", best))
        if self.verbose:
            callbacks.append(("progress", ProgressBar(batches_per_epoch="count")))
        sampler = StepSampler(
            train_codes,
            self.batch_size,
            steps_per_epoch,
            max_iter,
            balanced=self.sampling == "balanced",
            random_state=seed,
        )
        return NeuralNetClassifier(
            module=DeepLocNet,
            **{f"module__{k}": v for k, v in architecture.items()},
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.Adam,
            lr=lr,
            batch_size=self.batch_size,
            max_epochs=-(-max_iter // steps_per_epoch),
            train_split=None if valid is None else predefined_split(valid),
            iterator_train__sampler=sampler,
            iterator_train__batch_size=None,
            callbacks=callbacks,
            classes=np.arange(architecture["n_classes"]),
            device=resolve_device(self.device),
            verbose=self.verbose,
        )

    @staticmethod
    def _copy_all_but_head(source, target):
        state = {k: v for k, v in source.state_dict().items() if not k.startswith("head")}
        missing, unexpected = target.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("head") for k in missing)

    # -- prediction --------------------------------------------------------------

    def _check_fitted(self):
        check_is_fitted(self, ["net_", "classes_"])

    def _validate_for_prediction(self, X):
        self._check_fitted()
        return check_and_flatten(
            self,
            X,
            reset=False,
            n_channels=self.architecture_["n_channels"],
            image_size=self.preprocessing_["image_size"],
            crop_size=self.architecture_["crop_size"],
        )

    def _predict_outputs(self, X, output):
        X = self._validate_for_prediction(X)
        return predict_batches(
            self._fast,
            X,
            output=output,
            crop_size=self.architecture_["crop_size"],
            preprocessing=self.preprocessing_,
            tta=self.tta,
            batch_size=self.batch_size,
            verbose=self.verbose,
        )

    def predict_proba(self, X):
        """Class probabilities: the mean softmax of five crops (or the centre crop).

        Parameters
        ----------
        X : array-like of shape (n, C, H, W) or (n, C * 64 * 64), or DataFrame
            Also a lazy :class:`~sklearn_deeploc.datasets.DeepLocHDF5Dataset`,
            ``h5py`` or ``zarr`` array (read in blocks), or a ``dask.array``
            (computed lazily, block by block).

        Returns
        -------
        ndarray of shape (n, n_classes), float32, or a dask array
            Columns follow ``classes_``; rows sum to 1.
        """
        self._check_fitted()
        return apply_blockwise(self._predict_proba_in_memory, X, len(self.classes_))

    def _predict_proba_in_memory(self, X):
        return self._predict_outputs(X, "proba")

    def predict(self, X):
        """Most probable class of each cell, as labels of ``classes_`` (lazy for dask input)."""
        proba = self.predict_proba(X)  # checks fitted before classes_ is read
        if is_dask_array(proba):
            return proba.argmax(axis=1).map_blocks(
                take_labels, self.classes_, dtype=self.classes_.dtype
            )
        return self.classes_[np.argmax(proba, axis=1)]

    # -- persistence -------------------------------------------------------------

    def save_pretrained(self, path):
        """Write the fitted model as a folder: ``config.json`` + ``weights.safetensors``.

        Parameters
        ----------
        path : str or path-like
            Folder to write (created if needed).

        Returns
        -------
        pathlib.Path
            The folder, for :func:`load_pretrained` or ``pretrained=``.
        """
        self._check_fitted()
        return write_model_folder(
            path,
            architecture=self.architecture_,
            classes=self.classes_,
            channel_names=self.channel_names_,
            preprocessing=self.preprocessing_,
            state_dict=self.net_.module_.state_dict(),
        )

    @classmethod
    def _from_model_folder(cls, config, state_dict):
        """A fitted classifier from a model folder's config and weights."""
        architecture = config["architecture"]
        preprocessing = config["preprocessing"]
        clf = cls(
            conv_channels=tuple(architecture["conv_channels"]),
            fc_units=tuple(architecture["fc_units"]),
            crop_size=architecture["crop_size"],
            image_size=preprocessing["image_size"],
            stretch=None if preprocessing["stretch"] is None else tuple(preprocessing["stretch"]),
            stretch_variant=preprocessing["stretch_variant"],
            channel_names=config["channel_names"],
        )
        classes = np.asarray(
            config["classes"], dtype=object if isinstance(config["classes"][0], str) else None
        )
        net = clf._build_net(architecture, FINE_TUNE["lr"], 1, np.arange(len(classes)), 0)
        net.initialize()
        try:
            net.module_.load_state_dict(state_dict)
        except RuntimeError as error:
            raise ValueError(
                f"The weights do not fit the architecture in config.json: {error}"
            ) from error
        net.iterator_train__sampler = None
        clf.net_ = net
        clf.history_ = net.history
        clf.n_iter_ = 0
        clf.validation_ = "none"
        clf.n_features_in_ = architecture["n_channels"] * preprocessing["image_size"] ** 2
        clf._finish(classes, dict(architecture), dict(preprocessing))
        return clf

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_fast", None)  # rebuilt from net_ on load, on the loading machine's device
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "net_" in state:
            self._fast = inference_copy(self.net_.module_, self.net_.device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
