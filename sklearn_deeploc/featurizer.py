"""``DeepLocFeaturizer``: a pretrained DeepLoc as a feature extractor for other classifiers."""

import copy
import hashlib

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .classifier import check_and_flatten
from .inference import inference_copy, predict_batches, resolve_device
from .pretrained import KeepPretrainedMixin, resolve_pretrained
from .streaming import apply_blockwise
from .validation import check_positive_int


class DeepLocFeaturizer(KeepPretrainedMixin, TransformerMixin, BaseEstimator):
    """Features of a pretrained DeepLoc network for SVM, kNN or random-forest heads.

    ``fit`` loads and checks the network; it never trains on the data, so the
    same features come out whatever cells it is fitted on. ``transform``
    preprocesses the crops as the network was trained (stored with the model)
    and returns the activations of one layer, averaged over the five
    prediction crops.

    Parameters
    ----------
    pretrained : str, path-like or DeepLocClassifier
        A model folder (see :meth:`DeepLocClassifier.save_pretrained`) or a
        fitted classifier (kept by reference under ``clone``; never changed).
    layer : {"fc2", "fc1", "conv8"}, default="fc2"
        ``"fc2"`` is the second-to-last fully connected layer (512-d) the
        paper feeds to its heads; ``"conv8"`` is the last conv layer, max
        over space (256-d).
    tta : bool, default=True
        Mean of the features of five crops (centre and corners) rather than
        the centre crop's.
    batch_size : int, default=128
        Cells per forward pass (bounds memory).
    device : str, default="auto"
        Torch device; "auto" takes CUDA when present.
    verbose : int, default=0
        Progress bar when > 0.
    cache : FeatureCache or None, default=None
        Serve cells seen before from a
        :class:`~sklearn_deeploc.model_selection.FeatureCache` (shared, not
        copied, by ``clone``), so that a search featurises each cell once.

    Attributes
    ----------
    network_ : DeepLocNet
        An inference copy of the pretrained network (batch norm folded,
        channels-last); the source model is left untouched.
    preprocessing_ : dict
        Stretch and crop settings of the pretrained model.
    crop_size_ : int
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

    def __init__(
        self,
        pretrained,
        *,
        layer="fc2",
        tta=True,
        batch_size=128,
        device="auto",
        verbose=0,
        cache=None,
    ):
        self.pretrained = pretrained
        self.layer = layer
        self.tta = tta
        self.batch_size = batch_size
        self.device = device
        self.verbose = verbose
        self.cache = cache

    def fit(self, X, y=None):
        """Load and check the pretrained network; ``X`` only sets the input checks.

        Parameters
        ----------
        X : array-like of shape (n, C, H, W) or (n, C * 64 * 64), or DataFrame
        y : ignored

        Returns
        -------
        self : DeepLocFeaturizer
        """
        check_positive_int(self.batch_size, "batch_size")
        source = resolve_pretrained(self.pretrained)
        if source is None:
            raise ValueError("DeepLocFeaturizer needs a pretrained model; got pretrained=None.")
        layers = source.net_.module_.feature_layers
        if self.layer not in layers:
            raise ValueError(f"layer must be one of {layers}; got {self.layer!r}.")
        self.preprocessing_ = dict(source.preprocessing_)
        self.crop_size_ = source.architecture_["crop_size"]
        self.n_channels_ = source.architecture_["n_channels"]
        check_and_flatten(
            self,
            X,
            reset=True,
            n_channels=self.n_channels_,
            image_size=self.preprocessing_["image_size"],
            crop_size=self.crop_size_,
        )
        self.network_ = inference_copy(source.net_.module_, resolve_device(self.device))
        self.n_features_out_ = self._layer_width()
        if self.cache is not None:
            self.cache_key_ = self._cache_key(source.net_.module_)
        return self

    def _cache_key(self, module):
        """Digest of the weights, layer and crops: what a cell's features depend on."""
        digest = hashlib.blake2b(digest_size=32)
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        digest.update(f"{self.layer}|{self.tta}|{self.preprocessing_}".encode())
        return digest.digest()

    def _layer_width(self):
        fc = dict(self.network_.fc.named_children())
        if self.layer in fc:
            return fc[self.layer].linear.out_features
        return getattr(self.network_.features, self.network_.last_conv).conv.out_channels

    def transform(self, X):
        """Features of each cell, float32 of shape (n, n_features_out_).

        ``X`` may also be a lazy :class:`~sklearn_deeploc.datasets.DeepLocHDF5Dataset`,
        ``h5py`` or ``zarr`` array (read in blocks, so memory does not grow
        with the number of cells) or a ``dask.array`` (a lazy dask array
        comes back, computed block by block).
        """
        check_is_fitted(self, "network_")
        return apply_blockwise(self._transform_in_memory, X, self.n_features_out_)

    def _transform_in_memory(self, X):
        X = check_and_flatten(
            self,
            X,
            reset=False,
            n_channels=self.n_channels_,
            image_size=self.preprocessing_["image_size"],
            crop_size=self.crop_size_,
        )
        if self.cache is not None:
            return self.cache.lookup(X, self.cache_key_, self._features)
        return self._features(X)

    def _features(self, X):
        features = predict_batches(
            self.network_,
            X,
            output=self.layer,
            crop_size=self.crop_size_,
            preprocessing=self.preprocessing_,
            tta=self.tta,
            batch_size=self.batch_size,
            verbose=self.verbose,
        )
        return features.astype(np.float32, copy=False)

    def get_feature_names_out(self, input_features=None):
        """Names ``<layer>_0 ... <layer>_<n-1>`` (for ``set_output(transform="pandas")``)."""
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"{self.layer}_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __getstate__(self):
        state = self.__dict__.copy()
        if "network_" in state:  # a GPU copy would not load on a CPU-only machine
            state["network_"] = copy.deepcopy(self.network_).cpu()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "network_" in state:
            self.network_ = self.network_.to(resolve_device(self.device))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are always float32
        return tags
