"""The ``pretrained`` parameter: a model folder, a registered name, a fitted estimator or a model.

Every estimator that starts from a trained DeepLoc resolves its ``pretrained``
parameter here, to a :class:`~sklearn_deeploc.DeepLocModel`, and keeps the
parameter by reference under ``clone``.
"""

import os
from pathlib import Path

from sklearn.base import clone

from .model import DeepLocModel

# Names that resolve to a published model, fetched and converted on first use.
REGISTERED_MODELS = {"deeploc-chong": "chong"}


def resolve_model(pretrained):
    """The :class:`DeepLocModel` behind a ``pretrained`` parameter, or None.

    Parameters
    ----------
    pretrained : None, str, path-like, DeepLocModel or fitted estimator
        A model folder (a path that exists always wins), a registered name
        (``"deeploc-chong"``: the published DeepLoc, downloaded once by
        :func:`~sklearn_deeploc.datasets.fetch_deeploc_model`), a model, or a
        fitted estimator holding one as ``model_``.

    Examples
    --------
    >>> from sklearn_deeploc.pretrained import resolve_model
    >>> resolve_model(None) is None
    True
    >>> resolve_model("no-such-folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: No model folder at no-such-folder ...
    """
    if pretrained is None or isinstance(pretrained, DeepLocModel):
        return pretrained
    if isinstance(pretrained, (str, os.PathLike)):
        if Path(pretrained).exists() or str(pretrained) not in REGISTERED_MODELS:
            if not Path(pretrained).exists():
                raise FileNotFoundError(
                    f"No model folder at {pretrained} (the path does not exist), and it is "
                    f"not a registered model name ({sorted(REGISTERED_MODELS)})."
                )
            return DeepLocModel.load(pretrained)
        from .datasets import fetch_deeploc_model

        return DeepLocModel.load(fetch_deeploc_model(REGISTERED_MODELS[str(pretrained)]))
    model = getattr(pretrained, "model_", None)
    if isinstance(model, DeepLocModel):
        return model
    if hasattr(pretrained, "get_params"):
        raise ValueError(
            f"pretrained is an unfitted {type(pretrained).__name__}: fit it first, or pass a "
            "model folder."
        )
    raise TypeError(
        "pretrained must be a model folder path, a registered model name, a DeepLocModel or a "
        f"fitted DeepLocClassifier; got {type(pretrained).__name__}."
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
