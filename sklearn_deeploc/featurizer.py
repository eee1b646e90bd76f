"""``DeepLocFeaturizer``: a pretrained DeepLoc as a feature extractor, and its feature cache."""

import hashlib
from functools import partial

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils.validation import check_is_fitted

from .classifier import (
    SHARED_CONSTRAINTS,
    BackOnDeviceMixin,
    KeepPretrainedMixin,
    inference_options,
    resolve_model,
    validate_for,
)
from .inference import check_precision, resolve_device
from .streaming import apply_blockwise


class FeatureCache:
    """Features keyed by a digest of each cell's pixels (and the model, layer, tta, precision).

    ``clone`` and ``deepcopy`` share the cache, but each worker process gets its own copy: warm
    it (``transform`` on all cells) before a parallel search. ``n_computed`` counts misses,
    ``n_hits`` cells served from the cache.
    """

    def __init__(self):
        self._features = {}
        self.n_computed = 0
        self.n_hits = 0

    def __len__(self):
        return len(self._features)

    def __deepcopy__(self, memo):
        return self

    @staticmethod
    def digests(X, context):
        """One 16-byte key per cell, from its pixels and ``context`` (model, layer, tta)."""
        return [hashlib.blake2b(cell.tobytes(), digest_size=16, key=context).digest() for cell in X]

    @staticmethod
    def context(model, layer, tta, precision):
        """What a cell's features depend on besides its pixels: model, layer, tta, precision."""
        key = f"{model.digest()}|{layer}|{tta}|{precision}"
        # int8 features also depend on the calibration cells (without them, int8 is refused).
        if precision == "int8" and model.calibration is not None:
            key += hashlib.sha256(model.calibration).hexdigest()
        return hashlib.blake2b(key.encode(), digest_size=32).digest()

    def lookup(self, X, context, compute):
        """Features of every cell of ``X``, calling ``compute`` on the misses only."""
        keys = self.digests(X, context)
        missing = [i for i, key in enumerate(keys) if key not in self._features]
        if missing:
            self._features.update(zip([keys[i] for i in missing], compute(X[missing])))
        self.n_computed += len(missing)
        self.n_hits += len(keys) - len(missing)
        return np.stack([self._features[key] for key in keys])


class DeepLocFeaturizer(BackOnDeviceMixin, KeepPretrainedMixin, TransformerMixin, BaseEstimator):
    """Features of a pretrained DeepLoc network for SVM, kNN or random-forest heads.

    ``fit`` loads and checks the network but never trains: features depend on a cell alone.

    Parameters
    ----------
    pretrained : str, path-like, DeepLocClassifier or DeepLocModel
        A model folder (see :meth:`DeepLocClassifier.save_pretrained`), the registered name
        ``"deeploc-chong"``, a fitted classifier or a model (kept by reference; never changed).
    layer : {"fc2", "fc1", "conv8"}, default="fc2"
        ``"fc2"``: the last hidden layer (512-d) the paper feeds to its heads; ``"conv8"``:
        the last conv layer, max over space (256-d).
    tta : bool, default=True
        Mean of the features of five crops (centre and corners) rather than the centre's.
    batch_size : int, default=128
        Cells per forward pass (bounds memory).
    device : str, default="auto"
        Torch device; "auto" takes CUDA when present (the CPU for ``precision="int8"``).
    precision : {"fp32", "bf16", "fp16", "int8"}, default="fp32"
        Arithmetic of inference; int8 calibrates on the cells of ``fit``. Check with
        ``model_.agreement`` first.
    verbose : int, default=0
        Progress bar when > 0.
    cache : FeatureCache or None, default=None
        Serve cells seen before (shared, not copied, by ``clone``).

    Attributes
    ----------
    model_ : DeepLocModel
        The pretrained model on ``device`` (the source model is left untouched).
    n_features_in_ : int
        Values per cell (``C * H * W``).
    n_features_out_ : int
        Length of a feature vector.

    See Also
    --------
    DeepLocClassifier : trains the networks this class reads.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import SVC
    >>> from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> X, y = make_yeast_cells(6, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> source = DeepLocClassifier(conv_channels=(4,) * 8, fc_units=(8, 8), max_iter=2,
    ...                            batch_size=8, random_state=0).fit(X, y)
    >>> featurizer = DeepLocFeaturizer(source, layer="fc2")
    >>> featurizer.fit_transform(X).shape
    (12, 8)
    >>> featurizer.get_feature_names_out()[:2]
    array(['fc2_0', 'fc2_1'], dtype=object)
    >>> pipe = make_pipeline(DeepLocFeaturizer(source), SVC(kernel="linear")).fit(X, y)
    """

    _parameter_constraints = {**SHARED_CONSTRAINTS, "layer": [str], "cache": [None, FeatureCache]}

    def __init__(
        self,
        pretrained,
        *,
        layer="fc2",
        tta=True,
        batch_size=128,
        device="auto",
        precision="fp32",
        verbose=0,
        cache=None,
    ):
        self.pretrained = pretrained
        self.layer = layer
        self.tta = tta
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.verbose = verbose
        self.cache = cache

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Load and check the pretrained network; ``X`` sets the input checks (and int8 ranges)."""
        model = resolve_model(self.pretrained)
        if model is None:
            raise ValueError("DeepLocFeaturizer needs a pretrained model; got pretrained=None.")
        model.feature_width(self.layer)  # an unknown layer is refused before any work
        X = validate_for(self, X, model, reset=True)
        check_precision(self.precision, self.device)
        self.model_ = model.to(resolve_device(self.device, self.precision))
        if self.precision == "int8":  # int8 ranges are measured on the target cells
            self.model_.calibrate(X)
        return self

    @property
    def n_features_out_(self):
        """Length of a feature vector: the width of ``layer`` (also after ``set_params``)."""
        check_is_fitted(self, "model_")
        return self.model_.feature_width(self.layer)

    def transform(self, X):
        """Features of each cell, float32 ``(n, n_features_out_)``; lazy for ``dask.array`` input.

        ``X`` may also be read in blocks from HDF5 or zarr.
        """
        transform = partial(self._transform_in_memory, options=inference_options(self, X))
        return apply_blockwise(transform, X, self.n_features_out_)

    def _transform_in_memory(self, X, options):
        X = validate_for(self, X, self.model_, reset=False)
        features = partial(self.model_.features, layer=self.layer, verbose=self.verbose, **options)
        if self.cache is not None:
            context = FeatureCache.context(self.model_, self.layer, self.tta, self.precision)
            return self.cache.lookup(X, context, features)
        return features(X)

    def get_feature_names_out(self, input_features=None):
        """Names ``<layer>_0 ... <layer>_<n-1>`` (for ``set_output(transform="pandas")``)."""
        return np.asarray([f"{self.layer}_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are always float32
        return tags
