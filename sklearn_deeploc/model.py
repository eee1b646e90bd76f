"""``DeepLocModel``: a trained DeepLoc network with its classes, channels and preprocessing.

A model folder (``config.json`` + ``weights.safetensors``) is checked before anything is
allocated: the config against the schema tables, then the safetensors header against a
``meta``-device network. Loading never unpickles.
"""

import copy
import json
import numbers
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ._files import replace_folder, save_safetensors, tensor_digest
from ._version import __version__
from .inference import (
    check_precision,
    inference_copy,
    precision_agreement,
    predict_batches,
    quantized_copy,
    resolve_device,
)
from .network import DeepLocNet
from .preprocessing import STRETCH_VARIANTS
from .validation import (
    IMAGE_SIZE,
    PercentilePair,
    check_batch_fits,
    check_crops,
    check_positive_int,
    is_number,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
MODEL_FILES = (CONFIG_FILE, WEIGHTS_FILE)
FORMAT = "sklearn-deeploc model"
FORMAT_VERSION = 2
DEFAULT_PREPROCESSING = {
    "image_size": IMAGE_SIZE,
    "stretch": [0.1, 99.9],
    "stretch_variant": "clip",
    "tta": True,
}
CALIBRATION_CELLS = 128  # enough for int8 ranges; about 10 s to calibrate the paper network
# Bounds of a sane DeepLoc (the paper's: 8 conv layers, 256 channels at most, 64-pixel crops).
MAX_LAYERS = 64
MAX_WIDTH = 65536  # input channels, conv channels, FC units and classes
MAX_IMAGE_SIZE = 4096  # crop_size and image_size, in pixels


class ModelFolderError(ValueError):
    """A model folder (or config) that does not describe a usable DeepLoc model."""


def _require(condition, where, expected, got):
    if not condition:
        raise ModelFolderError(f"{where}: expected {expected}; got {got!r}.")


def _is_integer(value, high):
    return isinstance(value, numbers.Integral) and is_number(value, 1, high)


def _is_layers(value):
    return (
        isinstance(value, list)
        and 0 < len(value) <= MAX_LAYERS
        and all(_is_integer(units, MAX_WIDTH) for units in value)
    )


def _is_labels(value):
    return (
        isinstance(value, list)
        and (all(isinstance(c, str) for c in value) or all(map(is_number, value)))
        and len(set(value)) == len(value)
    )


def _is_names(value):
    return isinstance(value, list) and all(isinstance(name, str) for name in value)


def _integer(high):
    return partial(_is_integer, high=high), f"an integer in [1, {high}]"


def _number(low, high, *, open_low=False):
    bounds = f"{'(' if open_low else '['}{low}, {high}]"
    return partial(is_number, low=low, high=high, open_low=open_low), f"a number in {bounds}"


_VERSION = (
    lambda value: type(value) is int and value == FORMAT_VERSION,
    f"{FORMAT_VERSION}, the version this sklearn-deeploc reads",
)
_BOOL = (lambda value: isinstance(value, bool), "true or false")
_SECTION = (lambda value: isinstance(value, dict), "a JSON object")
_LAYERS = (_is_layers, f"a list of 1 to {MAX_LAYERS} integers in [1, {MAX_WIDTH}]")
_PERCENTILES = (
    lambda value: value is None or PercentilePair().is_satisfied_by(value),
    "null or two percentiles [low, high] with 0 <= low < high <= 100",
)
_VARIANT = (lambda value: value in STRETCH_VARIANTS, f"one of {STRETCH_VARIANTS}")
_LABELS = (
    _is_labels,
    "a list of distinct labels, all strings or all numbers (integers within int64)",
)

# Each table: key -> (required, test, expected). check_config adds the rules across keys.
CONFIG_SCHEMA = {
    "format": (True, lambda value: value == FORMAT, repr(FORMAT)),
    "format_version": (True, *_VERSION),
    "architecture": (True, *_SECTION),
    "classes": (True, *_LABELS),
    "channel_names": (True, _is_names, "a list of channel names"),
    "preprocessing": (True, *_SECTION),
    "package_version": (False, lambda value: isinstance(value, str), "a version string"),
}
ARCHITECTURE_SCHEMA = {  # the keys are DeepLocNet's arguments (a test checks it)
    "n_channels": (True, *_integer(MAX_WIDTH)),
    "n_classes": (True, *_integer(MAX_WIDTH)),
    "conv_channels": (True, *_LAYERS),
    "fc_units": (True, *_LAYERS),
    "crop_size": (True, *_integer(MAX_IMAGE_SIZE)),
    "bias": (False, *_BOOL),
    "normalize_logits": (False, *_BOOL),
    "dropout": (False, *_number(0, 1)),
    "bn_momentum": (False, *_number(0, 1)),
    "bn_eps": (False, *_number(0, 1, open_low=True)),  # 0: a zero variance makes NaN outputs
    "init_std": (False, *_number(0, 10)),
}
PREPROCESSING_SCHEMA = {
    "image_size": (True, *_integer(MAX_IMAGE_SIZE)),
    "stretch": (True, *_PERCENTILES),
    "stretch_variant": (True, *_VARIANT),
    "tta": (True, *_BOOL),
}


def _check_section(section, schema, where, *, what="the keys"):
    """``section`` checked against ``schema``, key by key."""
    _require(isinstance(section, dict), where, "a JSON object", type(section).__name__)
    for key, (required, test, expected) in schema.items():
        if key in section:
            _require(test(section[key]), f"{where}.{key}", expected, section[key])
        else:
            _require(not required, where, f"the key {key!r}", sorted(section))
    # Unknown keys last: a folder of a newer format is named by its format_version first.
    unknown = sorted(set(section) - set(schema))
    _require(not unknown, where, f"only {what} {sorted(schema)}", unknown)
    return section


def check_preprocessing(prep, where="preprocessing"):
    """Validate a preprocessing dict (stretch, variant, image size, tta); return it."""
    prep = _check_section(prep, PREPROCESSING_SCHEMA, where)
    stretch = prep["stretch"]
    return {**prep, "stretch": None if stretch is None else [float(q) for q in stretch]}


def check_config(config, where=CONFIG_FILE):
    """Validate a model config, raising :class:`ModelFolderError` at the first bad key."""
    _check_section(config, CONFIG_SCHEMA, where)
    arch = _check_section(
        config["architecture"],
        ARCHITECTURE_SCHEMA,
        f"{where}.architecture",
        what="DeepLocNet arguments",
    )
    prep = check_preprocessing(config["preprocessing"], f"{where}.preprocessing")
    for key, n, expected in (
        ("classes", arch["n_classes"], "distinct labels, one per output of the network"),
        ("channel_names", arch["n_channels"], "channel names"),
    ):
        _require(len(config[key]) == n, f"{where}.{key}", f"a list of {n} {expected}", config[key])
    _require(
        arch["crop_size"] <= prep["image_size"],
        f"{where}.architecture.crop_size",
        f"at most preprocessing.image_size ({prep['image_size']})",
        arch["crop_size"],
    )
    return {**config, "preprocessing": prep}


def default_channel_names(n_channels):
    """``["protein", "marker"]`` for two channels, else ``channel0``, ``channel1``...

    Examples
    --------
    >>> from sklearn_deeploc.model import default_channel_names
    >>> default_channel_names(2), default_channel_names(3)
    (['protein', 'marker'], ['channel0', 'channel1', 'channel2'])
    """
    if n_channels == 2:
        return ["protein", "marker"]
    return [f"channel{i}" for i in range(n_channels)]


def _json_list(values):
    """A sequence as a list of plain values; a string or scalar stays, for the schema to refuse."""
    scalar = getattr(values, "ndim", 1) == 0 or not hasattr(values, "__iter__")
    if scalar or isinstance(values, (str, bytes)):
        return values
    return [value.item() if isinstance(value, np.generic) else value for value in values]


def model_config(architecture, classes, channel_names, preprocessing):
    """The ``config.json`` of a model, in plain JSON types, for :func:`check_config`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.model import model_config
    >>> model_config({}, np.array([1, 2]), ("GFP", "RFP"), {})["classes"]
    [1, 2]
    """
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "architecture": dict(architecture),
        "classes": _json_list(classes),
        "channel_names": _json_list(channel_names),
        "preprocessing": dict(preprocessing),
    }


def _model_folder(path):
    """``path`` as a Path, once it is known to be a folder holding the two model files."""
    if not os.fspath(path):
        raise ModelFolderError("Expected the path of a model folder; got an empty path.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No model folder at {path}: the path does not exist.")
    if not path.is_dir():
        hint = f" ({path.parent})" if path.name in MODEL_FILES else ""
        raise ModelFolderError(
            f"{path} is a file, not a model folder: give the folder that holds {CONFIG_FILE} "
            f"and {WEIGHTS_FILE}{hint}."
        )
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ModelFolderError(
            f"{path} is not a model folder: expected a directory with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (as written by save_pretrained); missing {missing}."
        )
    return path


def _read_weights(path, network):
    """The tensors of ``path``, read once its header fits the tensors of ``network``."""
    expected = network.state_dict()
    try:
        weights = safe_open(str(path), framework="pt", device="cpu")
        found = {name: weights.get_slice(name) for name in weights.keys()}
        shapes = {name: tuple(s.get_shape()) for name, s in found.items()}
        dtypes = {name: s.get_dtype() for name, s in found.items()}
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFolderError(f"{path} is not a readable safetensors file: {error}") from error
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ModelFolderError(
            f"{path} does not fit the architecture in {CONFIG_FILE}: missing tensors "
            f"{missing[:5]}, unexpected tensors {unexpected[:5]}."
        )
    for name, tensor in expected.items():
        if shapes[name] != tuple(tensor.shape):
            raise ModelFolderError(
                f"{path}: tensor {name} has shape {list(shapes[name])}; the architecture in "
                f"{CONFIG_FILE} expects {list(tensor.shape)}."
            )
        dtype, kind = ("F32", "float32") if tensor.dtype.is_floating_point else ("I64", "int64")
        if dtypes[name] != dtype:
            raise ModelFolderError(
                f"{path}: tensor {name} is {dtypes[name]}; expected {dtype} ({kind})."
            )
    state = {name: weights.get_tensor(name) for name in expected}
    if found := state_problem(state):
        raise ModelFolderError(f"{path}: tensor {found[0]} {found[1]}.")
    return state


def weight_problem(name, tensor):
    """Why a trained network cannot hold ``tensor`` as ``name`` (outputs would be NaN), or None."""
    if not torch.isfinite(tensor).all():
        return "holds NaN or infinite values"
    if name.endswith("running_var") and (tensor < 0).any():
        return "holds negative variances (a batch-norm running variance is >= 0)"
    return None


def state_problem(state):
    """``(name, problem)`` of the first tensor of ``state`` that :func:`weight_problem` refuses,
    or None.

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc.model import state_problem
    >>> state_problem({"fc.weight": torch.ones(2), "bn.running_var": torch.tensor([-1.0])})
    ('bn.running_var', 'holds negative variances (a batch-norm running variance is >= 0)')
    """
    for name, tensor in state.items():
        if problem := weight_problem(name, tensor):
            return name, problem
    return None


class DeepLocModel:
    """A trained DeepLoc network with its classes, channels and preprocessing.

    Crops go in raw; the model stretches them as it was trained, runs a fast inference copy of
    the network and averages five crops with ``tta``.

    Parameters
    ----------
    network : DeepLocNet
        The trained network (kept as it is; inference uses copies).
    classes : array-like of shape (n_classes,)
        Labels of the network's outputs, in order.
    channel_names : list of str, optional
        Default ``["protein", "marker"]`` for two channels.
    preprocessing : dict, optional
        ``image_size`` (side of the stored crops), ``stretch`` (two percentiles or None),
        ``stretch_variant`` and ``tta``; missing keys take :data:`DEFAULT_PREPROCESSING`.

    Attributes
    ----------
    architecture : dict
        The :class:`DeepLocNet` arguments.
    device : torch.device

    See Also
    --------
    DeepLocClassifier : trains models; ``model_`` is one.
    DeepLocFeaturizer : features of a model for other classifiers.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from sklearn_deeploc import DeepLocModel, DeepLocNet
    >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8)).eval()
    >>> model = DeepLocModel(net, ["ER", "NUCLEI", "VACUOLE"])
    >>> X = np.random.default_rng(0).random((5, 2, 64, 64))
    >>> model.predict_proba(X).shape, model.features(X, "conv8").shape
    ((5, 3), (5, 4))
    >>> folder = model.save(tempfile.mkdtemp() + "/model")
    >>> bool(np.allclose(DeepLocModel.load(folder).predict_proba(X), model.predict_proba(X)))
    True
    """

    def __init__(self, network, classes, *, channel_names=None, preprocessing=None):
        if not isinstance(network, DeepLocNet):
            raise TypeError(f"network must be a DeepLocNet; got {type(network).__name__}.")
        if channel_names is None:
            channel_names = default_channel_names(network.architecture["n_channels"])
        preprocessing = {**DEFAULT_PREPROCESSING, **(preprocessing or {})}
        config = model_config(network.architecture, classes, channel_names, preprocessing)
        config = check_config(config, "DeepLocModel")
        self._fill(network, classes, config["channel_names"], config["preprocessing"])

    @classmethod
    def _from_config(cls, network, config):
        """A model from a config that :func:`check_config` returned; nothing is checked."""
        model = cls.__new__(cls)
        model._fill(network, config["classes"], config["channel_names"], config["preprocessing"])
        return model

    def _fill(self, network, classes, channel_names, preprocessing):
        self.network = network.eval()
        self.classes = np.asarray(classes, dtype=object if isinstance(classes[0], str) else None)
        self.channel_names = list(channel_names)
        self.preprocessing = preprocessing
        self.calibration = None
        self._inference = {}

    architecture = property(lambda self: dict(self.network.architecture))
    n_channels = property(lambda self: self.network.architecture["n_channels"])
    crop_size = property(lambda self: self.network.architecture["crop_size"])
    image_size = property(lambda self: self.preprocessing["image_size"])
    device = property(lambda self: network_device(self.network))
    feature_layers = property(lambda self: self.network.feature_layers)

    @property
    def n_features_in(self):
        """Values per cell in the flat layout (``C * image_size**2``)."""
        return self.n_channels * self.image_size**2

    def feature_width(self, layer):
        """Length of the feature vector of ``layer`` ("conv8", "fc1", "fc2", ...)."""
        if layer not in self.feature_layers:
            raise ValueError(f"layer must be one of {self.feature_layers}; got {layer!r}.")
        if layer == "conv8":
            return self.network.architecture["conv_channels"][-1]
        return self.network.architecture["fc_units"][int(layer[2:]) - 1]

    def config(self):
        """The ``config.json`` content (plain JSON types)."""
        return model_config(self.architecture, self.classes, self.channel_names, self.preprocessing)

    def digest(self):
        """SHA-256 (hex) of the config less its package version, and of the weights.

        Jobs record it in their manifests so that outputs of two models never mix.
        """
        if getattr(self, "_digest", None) is None:
            config = {k: v for k, v in self.config().items() if k != "package_version"}
            prefix = json.dumps(config, sort_keys=True).encode()
            self._digest = tensor_digest(self.network.state_dict(), prefix=prefix)
        return self._digest

    def __repr__(self):
        arch = self.network.architecture
        return (
            f"DeepLocModel({len(self.classes)} classes, channels {self.channel_names}, "
            f"conv {arch['conv_channels']}, fc {arch['fc_units']})"
        )

    def save(self, path):
        """Write the model folder ``path`` (``config.json`` + ``weights.safetensors``); return it.

        Built whole beside ``path`` and swapped in, other files there kept: an interrupted save
        leaves the old model or the new one (and maybe a ``.<name>.saving-<pid>`` folder to delete).
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"Cannot write a model folder at {path}: a file is there.")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}

        def write(folder):
            config = folder / CONFIG_FILE
            config.write_text(json.dumps(self.config(), indent=2) + "\n")
            weights = folder / WEIGHTS_FILE
            save_safetensors(tensors, weights, like=config, metadata={"format": FORMAT})

        return replace_folder(path, write, keep_others=True)

    @classmethod
    def load(cls, path, *, device="cpu"):
        """Read a model folder: schema, then tensor header, then the weights.

        Parameters
        ----------
        path : str or path-like
        device : str, default="cpu"
            Where the network goes ("auto": CUDA when present); GPU-saved weights load anywhere.

        Raises
        ------
        ModelFolderError
            A ``ValueError``: not a model folder, a bad config, or weights that do not fit it.
        """
        file = _model_folder(path) / CONFIG_FILE
        try:
            config = json.loads(file.read_text())
        except (ValueError, RecursionError) as error:  # also bad UTF-8, integers of 5000 digits
            raise ModelFolderError(f"{file} is not readable JSON: {error}") from error
        config = check_config(config, str(file))
        with torch.device("meta"):  # the network the config describes: shapes, no memory
            network = DeepLocNet(**config["architecture"])
        # assign=True adopts the loaded tensors: the weights are allocated once.
        network.load_state_dict(_read_weights(file.parent / WEIGHTS_FILE, network), assign=True)
        return cls._from_config(network.to(resolve_device(device)), config)

    def to(self, device):
        """A new model on ``device`` ("auto": CUDA when present), sharing what it can."""
        device = torch.device(resolve_device(device))
        network = self.network
        if network_device(network) != device:
            network = copy.deepcopy(network).to(device)
        moved = self._from_config(network, self.config())
        moved.calibration = self.calibration
        return moved

    def transfer_state(self):
        """Copies of the weights and batch-norm statistics less the output layer (fine-tuning)."""
        return {
            name: tensor.detach().clone()
            for name, tensor in self.network.state_dict().items()
            if not name.startswith("head")
        }

    def inference_network(self, precision="fp32"):
        """The fast inference copy for ``precision``, built once per model and device.

        fp32, bf16 and fp16 share a copy with batch norm folded; int8 is calibrated on
        :attr:`calibration`.
        """
        kind = "int8" if precision == "int8" else "float"
        key = (kind, str(self.device))
        if key not in self._inference:
            if kind == "int8":
                if self.calibration is None:
                    raise ValueError(
                        "precision='int8' needs calibration cells: call model.calibrate(X) with "
                        "cells like the ones to predict (DeepLocFeaturizer.fit and "
                        "DeepLocClassifier.fit do it when precision='int8')."
                    )
                self._inference[key] = quantized_copy(
                    self.network,
                    self.calibration,
                    crop_size=self.crop_size,
                    preprocessing=self.preprocessing,
                    tta=self.preprocessing["tta"],
                )
            else:
                self._inference[key] = inference_copy(self.network, self.device)
        return self._inference[key]

    def calibrate(self, X, *, n_cells=CALIBRATION_CELLS, random_state=0):
        """Keep up to ``n_cells`` raw cells ``X``, like the ones to predict, to calibrate int8 on.

        The sample pickles with the model, so the int8 copy is rebuilt identically after loading.
        """
        n_cells = check_positive_int(n_cells, "n_cells")
        X = self.check_crops(X)
        if len(X) > n_cells:
            pick = np.random.default_rng(random_state).choice(len(X), n_cells, replace=False)
            X = X[np.sort(pick)]
        self.calibration = np.array(X)
        self._inference.pop(("int8", str(self.device)), None)
        return self

    def check_crops(self, X):
        """Validate raw crops for this model: float32 ``(n, C, H, W)``."""
        return check_crops(
            X, n_channels=self.n_channels, image_size=self.image_size, min_size=self.crop_size
        )

    def bytes_per_cell(self):
        """Memory one cell of a batch needs in inference: its crops and two activations."""
        activation = max(self.network.architecture["conv_channels"]) * self.crop_size**2
        return 4 * (self.n_features_in + 2 * activation)

    def check_inference_options(self, tta, batch_size, precision, *, n_items=None):
        """The options of a prediction, checked once: ``(tta, batch_size, precision)``.

        ``tta=None`` becomes the model's stored choice, ``batch_size`` must fit in memory (a batch
        never holds more than ``n_items`` cells), and ``precision`` must run on the model's device.

        Examples
        --------
        >>> from sklearn_deeploc import DeepLocModel, DeepLocNet
        >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8))
        >>> DeepLocModel(net, ["a", "b", "c"]).check_inference_options(None, 64, "int8")
        (True, 64, 'int8')
        """
        if tta is None:
            tta = self.preprocessing["tta"]
        elif not isinstance(tta, (bool, np.bool_)):
            raise ValueError(f"tta must be True, False or None (the model's choice); got {tta!r}.")
        batch_size = check_batch_fits(batch_size, self.bytes_per_cell(), n_items=n_items)
        return bool(tta), batch_size, check_precision(precision, self.device)

    def _checked(self, X, tta, batch_size, precision):
        X = self.check_crops(X)
        return X, self.check_inference_options(tta, batch_size, precision, n_items=len(X))

    def _run(self, X, output, tta, batch_size, precision, verbose=0, check_input=False):
        """Predict ``output``; trusts X and the options unless ``check_input``."""
        if check_input:
            X, (tta, batch_size, precision) = self._checked(X, tta, batch_size, precision)
        return predict_batches(
            self.inference_network(precision),
            X,
            output=output,
            crop_size=self.crop_size,
            preprocessing=self.preprocessing,
            tta=tta,
            batch_size=batch_size,
            precision=precision,
            verbose=verbose,
            check_input=False,
        ).astype(np.float32, copy=False)

    def predict_proba(
        self, X, *, tta=None, batch_size=128, precision="fp32", verbose=0, check_input=True
    ):
        """Class probabilities of raw crops, columns in :attr:`classes` order.

        Parameters
        ----------
        X : array-like of shape (n, C, H, W) or (n, C * H * W)
        tta : bool, optional
            Five-crop mean; None uses the model's stored choice.
        batch_size : int, default=128
        precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
            Arithmetic of inference; check a reduced one with :meth:`agreement` first.
        verbose : int, default=0
        check_input : bool, default=True
            False trusts ``X`` from :meth:`check_crops` and options from
            :meth:`check_inference_options`.

        Returns
        -------
        ndarray of shape (n, n_classes), float32
        """
        return self._run(X, "proba", tta, batch_size, precision, verbose, check_input)

    def features(
        self,
        X,
        layer="fc2",
        *,
        tta=None,
        batch_size=128,
        precision="fp32",
        verbose=0,
        check_input=True,
    ):
        """Activations of ``layer`` for raw crops (``check_input`` as in :meth:`predict_proba`).

        Returns
        -------
        ndarray of shape (n, feature_width(layer)), float32
        """
        self.feature_width(layer)
        return self._run(X, layer, tta, batch_size, precision, verbose, check_input)

    def agreement(self, X, precision, *, tta=None, batch_size=128):
        """How a reduced precision agrees with fp32 on cells ``X``: check before a large run.

        Returns
        -------
        dict
            ``top1_agreement`` (fraction of cells with the same predicted class),
            ``<layer>_max_relative_error`` per feature layer (see
            :func:`~sklearn_deeploc.inference.precision_agreement`) and ``precision``, the
            arithmetic that ran (``"fp32"``, with a warning, where bf16 is not native).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn_deeploc import DeepLocModel, DeepLocNet
        >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8))
        >>> X = np.random.default_rng(0).random((8, 2, 64, 64))
        >>> model = DeepLocModel(net, ["a", "b", "c"]).calibrate(X)
        >>> report = model.agreement(X, "int8")
        >>> 0 <= report["top1_agreement"] <= 1, "fc2_max_relative_error" in report
        (True, True)
        """
        X, (tta, batch_size, used) = self._checked(X, tta, batch_size, precision)
        outputs = ("proba", *self.feature_layers)
        reference = {o: self._run(X, o, tta, batch_size, "fp32") for o in outputs}
        reduced = {o: self._run(X, o, tta, batch_size, used) for o in outputs}
        return {**precision_agreement(reference, reduced), "precision": used}

    def __getstate__(self):
        # One rule: pickles load on a CPU-only machine; inference copies are rebuilt.
        state = self.__dict__.copy()
        state["_inference"] = {}
        if network_device(self.network).type != "cpu":
            state["network"] = copy.deepcopy(self.network).cpu()
        return state


def network_device(network):
    """The device of a network's parameters."""
    return next(network.parameters()).device
