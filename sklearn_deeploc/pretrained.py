"""Model folders (``config.json`` + ``weights.safetensors``) and the ``pretrained`` parameter.

A model folder holds everything needed to rebuild a fitted model and nothing
that runs code when read: JSON and a safetensors file. Loading never unpickles.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from sklearn.base import clone

from . import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = "sklearn-deeploc model"
FORMAT_VERSION = 1


def _json_value(value):
    """Classes and other metadata as plain JSON types (numpy scalars -> Python)."""
    return value.item() if isinstance(value, np.generic) else value


def write_model_folder(path, *, architecture, classes, channel_names, preprocessing, state_dict):
    """Write ``config.json`` and ``weights.safetensors`` into ``path`` (created if needed).

    The weights are written to a temporary name first and renamed, so an
    interrupted save never leaves a half-written model behind.

    Examples
    --------
    >>> import tempfile
    >>> from sklearn_deeploc import DeepLocNet
    >>> from sklearn_deeploc.pretrained import read_model_folder, write_model_folder
    >>> net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    >>> folder = write_model_folder(
    ...     tempfile.mkdtemp(), architecture={"n_classes": 2}, classes=["a", "b"],
    ...     channel_names=["protein", "marker"], preprocessing={}, state_dict=net.state_dict())
    >>> config, state = read_model_folder(folder)
    >>> config["classes"], len(state) == len(net.state_dict())
    (['a', 'b'], True)
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "architecture": architecture,
        "classes": [_json_value(c) for c in classes],
        "channel_names": list(channel_names),
        "preprocessing": preprocessing,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    partial = path / (WEIGHTS_FILE + ".partial")
    save_file(tensors, str(partial), metadata={"format": FORMAT})
    os.replace(partial, path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return path


def read_model_folder(path):
    """Read a model folder: ``(config dict, state_dict of CPU tensors)``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a model folder, or its files are corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No pretrained model at {path}: the path does not exist.")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if not path.is_dir() or missing:
        raise ValueError(
            f"{path} is not a model folder: expected a directory with {CONFIG_FILE} and "
            f"{WEIGHTS_FILE} (as written by save_pretrained); missing {missing or [path.name]}."
        )
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path / CONFIG_FILE} is not valid JSON: {error}") from error
    if config.get("format") != FORMAT:
        raise ValueError(
            f"{path / CONFIG_FILE} is not an {FORMAT} config (format={config.get('format')!r})."
        )
    try:
        state_dict = load_file(str(path / WEIGHTS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path / WEIGHTS_FILE} is not a readable safetensors file: {error}"
        ) from error
    return config, state_dict


def load_pretrained(path):
    """Load a model folder as a fitted :class:`~sklearn_deeploc.DeepLocClassifier`.

    Parameters
    ----------
    path : str or path-like
        A folder written by :meth:`DeepLocClassifier.save_pretrained`.

    Returns
    -------
    DeepLocClassifier
        Fitted: ready for ``predict``, as ``pretrained=`` of another
        estimator, or inside a :class:`DeepLocFeaturizer`.

    Examples
    --------
    >>> from sklearn_deeploc import DeepLocClassifier, load_pretrained
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> X, y = make_yeast_cells(4, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> clf = DeepLocClassifier(conv_channels=(4,) * 8, fc_units=(8, 8), max_iter=2,
    ...                         batch_size=8, random_state=0).fit(X, y)
    >>> import tempfile
    >>> folder = clf.save_pretrained(tempfile.mkdtemp() + "/model")
    >>> (load_pretrained(folder).predict_proba(X) == clf.predict_proba(X)).all()
    np.True_
    """
    from .classifier import DeepLocClassifier  # the classifier module imports this one

    config, state_dict = read_model_folder(path)
    return DeepLocClassifier._from_model_folder(config, state_dict)


def resolve_pretrained(pretrained):
    """The fitted classifier behind a ``pretrained`` parameter (folder or estimator), or None."""
    from .classifier import DeepLocClassifier

    if pretrained is None:
        return None
    if isinstance(pretrained, (str, os.PathLike)):
        return load_pretrained(pretrained)
    if isinstance(pretrained, DeepLocClassifier):
        pretrained._check_fitted()
        return pretrained
    raise TypeError(
        "pretrained must be a model folder path or a fitted DeepLocClassifier; got "
        f"{type(pretrained).__name__}."
    )


class KeepPretrainedMixin:
    """``clone`` keeps the ``pretrained`` parameter by reference.

    A fitted estimator given as ``pretrained`` would come back unfitted from a
    deep clone (``GridSearchCV`` and ``cross_val_score`` clone everything);
    it is only read, never changed, so sharing it is safe.
    """

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        pretrained = params.pop("pretrained")
        params = {name: clone(value, safe=False) for name, value in params.items()}
        return type(self)(pretrained=pretrained, **params)


CHONG_CLASSES = (
    "ACTIN",
    "BUDNECK",
    "BUDTIP",
    "CELLPERIPHERY",
    "CYTOPLASM",
    "ENDOSOME",
    "ER",
    "GOLGI",
    "MITOCHONDRIA",
    "NUCLEARPERIPHERY",
    "NUCLEI",
    "NUCLEOLUS",
    "PEROXISOME",
    "SPINDLE",
    "SPINDLEPOLE",
    "VACUOLARMEMBRANE",
    "VACUOLE",
    "DEAD",
    "GHOST",
)
# The reference preprocessing (clip at 99.9, subtract 0.1, divide by larger ranges).
REFERENCE_PREPROCESSING = {"image_size": 64, "stretch": [0.1, 99.9], "stretch_variant": "reference"}


def _tf_state_dict(tensors, crop_size):
    """Our DeepLocNet state and architecture from a reference checkpoint's tensors."""
    from .network import pooled_size
    from .tf_checkpoint import layer_tensors

    n_conv = 0
    while any(f"conv_{n_conv + 1}" in name.split("/") for name in tensors):
        n_conv += 1
    if n_conv == 0:
        raise ValueError("The checkpoint is not a DeepLoc graph: no layer 'conv_1' in it.")
    layers = [f"conv_{i}" for i in range(1, n_conv + 1)] + ["fc_1", "fc_2", "final_layer"]
    ours = [f"features.conv{i}.conv" for i in range(1, n_conv + 1)]
    ours += ["fc.fc1.linear", "fc.fc2.linear", "head"]
    norms = [name.rsplit(".", 1)[0] + ".bn" for name in ours[:-1]] + ["head_bn"]
    state, mapping = {}, {}
    for tf_layer, weight_key, norm_key in zip(layers, ours, norms):
        found = layer_tensors(tensors, tf_layer)
        weights = found["weights"][1]
        if weights.ndim == 4:  # HWIO -> OIHW
            weights = weights.transpose(3, 2, 0, 1)
        elif tf_layer == "fc_1":  # rows flattened NHWC; our flatten is NCHW
            side = pooled_size(crop_size)
            channels = weights.shape[0] // (side * side)
            if channels * side * side != weights.shape[0]:
                raise ValueError(
                    f"fc_1 takes {weights.shape[0]} inputs, which is not {side}x{side}xC for "
                    f"crop_size={crop_size}: a shape mismatch with the conv layers."
                )
            weights = weights.reshape(side, side, channels, -1).transpose(3, 2, 0, 1)
            weights = weights.reshape(weights.shape[0], -1)
        else:
            weights = weights.T
        values = {
            f"{weight_key}.weight": weights,
            f"{weight_key}.bias": found["biases"][1],
            f"{norm_key}.weight": found["gamma"][1],
            f"{norm_key}.bias": found["beta"][1],
            f"{norm_key}.running_mean": found["moving_mean"][1],
            f"{norm_key}.running_var": found["moving_variance"][1],
        }
        roles = ("weights", "biases", "gamma", "beta", "moving_mean", "moving_variance")
        for (key, value), role in zip(values.items(), roles):
            state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            mapping[key] = found[role][0]
        state[f"{norm_key}.num_batches_tracked"] = torch.tensor(0)
    architecture = {
        "n_channels": int(state["features.conv1.conv.weight"].shape[1]),
        "n_classes": int(state["head.weight"].shape[0]),
        "conv_channels": [int(state[f"{k}.weight"].shape[0]) for k in ours[:n_conv]],
        "fc_units": [
            int(state["fc.fc1.linear.weight"].shape[0]),
            int(state["fc.fc2.linear.weight"].shape[0]),
        ],
        "crop_size": crop_size,
        "dropout": 0.0,
        "bias": True,
        "bn_eps": 1e-3,
        "bn_momentum": 0.5,
        "normalize_logits": True,
    }
    return state, architecture, mapping


def from_tf_checkpoint(
    checkpoint, output=None, *, classes=None, channel_names=("GFP", "RFP"), crop_size=60, verbose=0
):
    """Import the published DeepLoc TensorFlow 1 checkpoint (no TensorFlow needed).

    Reads the checkpoint's tensor bundle directly, maps each reference layer
    (``conv_1`` ... ``conv_8``, ``fc_1``, ``fc_2``, ``final_layer``) by role
    to a :class:`DeepLocNet` with the reference options (bias before batch
    norm, batch-normalised logits, epsilon 1e-3), converts HWIO and NHWC
    layouts to PyTorch's, and stores the reference preprocessing.

    Parameters
    ----------
    checkpoint : str or path-like
        The checkpoint prefix, for example ``pretrained_DeepLoc/model.ckpt-5000``.
    output : str or path-like, optional
        Model folder to write (``config.json`` + ``weights.safetensors``).
    classes : sequence of str, optional
        Output class names; the 19 Chong et al. (2015) classes by default for a
        19-output model, ``class_0 ...`` otherwise.
    channel_names : tuple of str, default=("GFP", "RFP")
    crop_size : int, default=60
    verbose : int, default=0
        Print the variable mapping when > 0.

    Returns
    -------
    DeepLocClassifier
        Fitted, with the attribute ``tf_mapping_`` (our parameter -> checkpoint name).

    Examples
    --------
    >>> from sklearn_deeploc.pretrained import from_tf_checkpoint
    >>> clf = from_tf_checkpoint("pretrained_DeepLoc/model.ckpt-5000",
    ...                          "deeploc-chong/")  # doctest: +SKIP
    """
    from .classifier import DeepLocClassifier
    from .tf_checkpoint import read_checkpoint

    state, architecture, mapping = _tf_state_dict(read_checkpoint(checkpoint), crop_size)
    n_classes = architecture["n_classes"]
    if classes is None:
        classes = CHONG_CLASSES if n_classes == 19 else [f"class_{i}" for i in range(n_classes)]
    if len(classes) != n_classes:
        raise ValueError(f"{len(classes)} class names for a model with {n_classes} outputs.")
    config = {
        "format": FORMAT,
        "architecture": architecture,
        "classes": list(classes),
        "channel_names": list(channel_names),
        "preprocessing": dict(REFERENCE_PREPROCESSING),
    }
    model = DeepLocClassifier._from_model_folder(config, state)
    model.tf_mapping_ = mapping
    if verbose:
        for ours, theirs in mapping.items():
            print(f"{ours:<34} <- {theirs}")
    if output is not None:
        model.save_pretrained(output)
    return model
