"""Model folders (``config.json`` + ``weights.safetensors``) and the ``pretrained`` parameter.

A model folder holds everything needed to rebuild a fitted model and nothing
that runs code when read: JSON and a safetensors file. Loading never unpickles.
"""

import json
import os
from pathlib import Path

import numpy as np
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
