"""``HandcraftedFeatures``: CellProfiler-style measurements per cell, the classical baseline.

The paper compares DeepLoc with ensLOC (Chong et al. 2015): CellProfiler features per cell
(:class:`HandcraftedFeatures`), then an ensemble of linear SVMs (:func:`make_classical_head`).
Libraries: mahotas (Haralick, Zernike), scikit-image, scipy.ndimage; benchmarks/RESULTS.md says why.
"""

import hashlib
from contextlib import suppress
from numbers import Integral, Real

import numpy as np
import torch
from joblib import Parallel, delayed, effective_n_jobs
from mahotas.features import haralick, zernike_moments
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import moments_central, moments_hu, moments_normalized
from skimage.morphology import disk
from skimage.segmentation import watershed
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .preprocessing import percentile_stretch
from .streaming import apply_blockwise
from .validation import IMAGE_SIZE, PercentilePair, PositiveInts, check_labels, validate_crops

# mahotas' order of the 13 Haralick features.
HARALICK_FEATURES = tuple(
    "angular_second_moment contrast correlation variance inverse_difference_moment sum_average "
    "sum_variance sum_entropy entropy difference_variance difference_entropy "
    "info_measure_correlation_1 info_measure_correlation_2".split()
)
INTENSITY_FEATURES = tuple(
    "cell_area protein_mean_in_cell protein_std_in_cell protein_q25_in_cell protein_median_in_cell "
    "protein_q75_in_cell protein_max_in_cell protein_mad_in_cell protein_mean_at_edge "
    "protein_fraction_in_cell protein_mass_displacement".split()
)
CORRELATION_FEATURES = tuple(
    "corr_protein_marker manders_protein_in_marker manders_marker_in_protein "
    "overlap_protein_marker".split()
)
# A cell (or what is left of it) covers at least this fraction of the crop and at most the
# other (a yeast cell covers about a third); beyond them the marker (a brightfield one, say)
# told no cell from the background, and a centred disc stands in.
MIN_CELL_FRACTION, MAX_CELL_FRACTION = 0.02, 0.5
# Declumping seeds: distance peaks 3 pixels deep (a cell's radius is 10 or more),
# at most one within 4 pixels.
MIN_SEED_DISTANCE = 3.0
SEED_FOOTPRINT = disk(4)
FALLBACK_RADIUS_FRACTION = 0.25  # a yeast cell is about 49x37 pixels in a 64x64 crop
HU_FLOOR = 1e-12  # log10 of a Hu moment's magnitude, floored for empty patterns
# The parameters a cell's features do not depend on (left out of the feature cache's context).
NOT_FEATURE_SETTINGS = ("image_size", "n_jobs", "cache")


def _distance_to(centre, shape):
    """Each pixel's distance to ``centre`` (row, column)."""
    rows, cols = np.indices(shape)
    return np.hypot(rows - centre[0], cols - centre[1])


def _declump(foreground):
    """Label touching cells apart as CellProfiler's "shape" declumping: a distance watershed."""
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(foreground), 1.0)
    peaks = distance == ndimage.maximum_filter(distance, footprint=SEED_FOOTPRINT)
    seeds, _ = ndimage.label(peaks & (distance >= MIN_SEED_DISTANCE))
    return watershed(-distance, seeds, mask=foreground)


def cell_mask(marker):
    """The centred cell of a stretched marker: Otsu on the smoothed marker, holes filled, declumped.

    Of the cells found, the one nearest the crop's centre is taken (ties go to the larger). A
    cell smaller than ``MIN_CELL_FRACTION`` of the crop or larger than ``MAX_CELL_FRACTION``,
    or none, gives a centred disc.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.handcrafted import cell_mask
    >>> marker = np.zeros((32, 32))
    >>> marker[10:22, 8:24] = 1.0
    >>> mask = cell_mask(marker)
    >>> bool(mask[10:22, 8:24].all()), bool(mask[:8].any())  # the rectangle, a rim wider
    (True, False)
    >>> int(cell_mask(np.zeros((32, 32))).sum())  # no cell: a centred disc
    208
    """
    distance = _distance_to((np.asarray(marker.shape) - 1) / 2, marker.shape)
    # A centred disc of a typical cell's size (at least the pixels nearest the centre).
    fallback = distance <= max(FALLBACK_RADIUS_FRACTION * max(marker.shape), distance.min())
    smooth = ndimage.gaussian_filter(marker, 1.0)
    labels = _declump(ndimage.binary_fill_holes(smooth > threshold_otsu(smooth)))
    if labels.max() == 0:
        return fallback
    index = np.arange(1, labels.max() + 1)
    nearest = ndimage.minimum(distance, labels, index)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index)
    mask = labels == index[np.lexsort((-areas, nearest))[0]]
    fraction = mask.sum() / marker.size
    return mask if MIN_CELL_FRACTION <= fraction <= MAX_CELL_FRACTION else fallback


def _safe_ratio(numerator, denominator):
    """``numerator / denominator``, 0 when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else 0.0


def _intensity_features(protein, mask, centre, radius):
    """The cell's area and protein statistics, in ``INTENSITY_FEATURES`` order."""
    inside = protein[mask]
    q25, median, q75 = np.percentile(inside, [25, 50, 75])
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    rows, cols = np.nonzero(mask)
    total = inside.sum()
    mass_centre = np.array([rows @ inside, cols @ inside]) / total if total > 0 else centre
    return [
        mask.sum(),
        inside.mean(),
        inside.std(),
        q25,
        median,
        q75,
        inside.max(),
        np.median(np.abs(inside - median)),
        protein[edge].mean(),
        _safe_ratio(total, protein.sum()),
        np.hypot(*(mass_centre - centre)) / radius,
    ]


def _texture_features(protein, mask, distances, gray_levels):
    """Haralick features per distance, the mean over the 4 directions; zeros without pairs."""
    # Levels from 1 inside the cell, 0 outside: mahotas' ignore_zeros then counts inside pairs.
    levels = 1 + np.minimum(protein * gray_levels, gray_levels - 1).astype(np.uint8)
    quantised = np.where(mask, levels, 0).astype(np.uint8)
    features = np.zeros((len(distances), len(HARALICK_FEATURES)))
    for row, distance in zip(features, distances):
        with suppress(ValueError):  # no pair of inside pixels at this distance: zeros
            row[:] = haralick(quantised, distance=distance, ignore_zeros=True, return_mean=True)
    return np.nan_to_num(features.ravel(), nan=0.0, posinf=0.0, neginf=0.0)


def _moment_features(protein, mask, centre, radius, zernike_degree):
    """Hu moments (log10 magnitudes) and Zernike magnitudes on the circle holding the cell."""
    pattern = np.where(mask, protein, 0.0)
    if pattern.sum() <= 0:
        zernike = np.zeros(len(_zernike_orders(zernike_degree)))
        return np.concatenate([np.full(7, np.log10(HU_FLOOR)), zernike])
    normalised = moments_normalized(moments_central(pattern, order=3), order=3)
    hu = np.log10(np.abs(moments_hu(normalised)) + HU_FLOOR)
    # (0, 0) is 1/pi for every cell: mahotas divides by the total intensity.
    zernike = zernike_moments(pattern, radius, degree=zernike_degree, cm=centre)[1:]
    return np.concatenate([hu, zernike])


def _radial_features(protein, mask, centre, n_bins):
    """CellProfiler's radial distribution: protein fraction (and per area) per ring to the edge."""
    from_centre = _distance_to(centre, mask.shape)[mask]
    to_edge = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1][mask]
    position = from_centre / (from_centre + to_edge)
    ring = np.minimum((position * n_bins).astype(int), n_bins - 1)
    inside = protein[mask]
    intensity = np.bincount(ring, weights=inside, minlength=n_bins)
    area = np.bincount(ring, minlength=n_bins) / mask.sum()
    fraction = intensity / inside.sum() if inside.sum() > 0 else np.zeros(n_bins)
    mean_fraction = np.divide(fraction, area, out=np.zeros(n_bins), where=area > 0)
    return np.concatenate([fraction, mean_fraction])


def _correlation_features(protein, marker, mask):
    """Pearson correlation, Manders' coefficients (Otsu thresholds) and overlap, in the cell."""
    p, m = protein[mask], marker[mask]
    pearson = float(np.corrcoef(p, m)[0, 1]) if p.std() > 0 and m.std() > 0 else 0.0
    protein_on = p > threshold_otsu(p)
    marker_on = m > threshold_otsu(m)
    return [
        pearson,
        _safe_ratio(p[marker_on].sum(), p.sum()),
        _safe_ratio(m[protein_on].sum(), m.sum()),
        _safe_ratio(p @ m, np.sqrt((p @ p) * (m @ m))),
    ]


def _features_of_cells(pairs, settings):
    """Every feature of each (protein, marker) pair, stretched, in :func:`feature_names` order."""
    distances = settings["haralick_distances"]
    rows = []
    for protein, marker in pairs:
        mask = cell_mask(marker)
        centre = np.argwhere(mask).mean(axis=0)
        radius = _distance_to(centre, mask.shape)[mask].max() + 0.5  # the circle holding the cell
        parts = [
            _intensity_features(protein, mask, centre, radius),
            _texture_features(protein, mask, distances, settings["gray_levels"]),
            _moment_features(protein, mask, centre, radius, settings["zernike_degree"]),
            _radial_features(protein, mask, centre, settings["radial_bins"]),
            _correlation_features(protein, marker, mask),
        ]
        rows.append(np.concatenate(parts))
    return np.stack(rows)


def _zernike_orders(degree):
    """(n, m) of mahotas' Zernike magnitudes, without the constant (0, 0)."""
    return [(n, m) for n in range(1, degree + 1) for m in range(n + 1) if (n - m) % 2 == 0]


def feature_names(distances=(1, 2, 4), zernike_degree=8, radial_bins=4):
    """Names of the features, in the order :class:`HandcraftedFeatures` returns them."""
    texture = [f"haralick_{name}_d{d}" for d in distances for name in HARALICK_FEATURES]
    hu = [f"hu_moment_{k}" for k in range(1, 8)]
    zernike = [f"zernike_{n}_{m}" for n, m in _zernike_orders(zernike_degree)]
    radial = [
        f"radial_{kind}_{k}of{radial_bins}"
        for kind in ("fraction", "mean_fraction")
        for k in range(1, radial_bins + 1)
    ]
    return [*INTENSITY_FEATURES, *texture, *hu, *zernike, *radial, *CORRELATION_FEATURES]


class HandcraftedFeatures(TransformerMixin, BaseEstimator):
    """CellProfiler-style features of single-cell crops: the classical baseline.

    Each crop is stretched per cell, the cell is found in the marker channel
    (:func:`cell_mask`), and the protein pattern inside it is measured:

    - intensity: area, mean, spread, quartiles, maximum, median absolute deviation, mean at the
      edge, fraction of the crop's protein inside the cell, and the mass displacement (protein
      centroid to cell centroid, in cell radii);
    - texture: the 13 Haralick features at each of ``haralick_distances`` (4 directions' mean);
    - moments: the 7 Hu moments (log10 of magnitudes), Zernike magnitudes to ``zernike_degree``;
    - radial distribution: the protein's fraction (and per area) in ``radial_bins`` rings;
    - correlation with the marker: Pearson, Manders' (Otsu thresholds) and overlap coefficients.

    Every feature is finite, also for empty or constant crops, and invariant to 90-degree
    rotations and flips of the crop (up to a pixel or two of a declumped mask).

    Parameters
    ----------
    protein_channel : int, default=0
        Channel of the tagged protein (the package's order: protein, marker).
    marker_channel : int, default=1
        Channel that outlines the cell: a cytosolic marker, as ensLOC's CellProfiler pipeline
        segmented. Brightfield works too, with rougher masks (its halos pass the threshold).
    stretch : tuple of float or None, default=(0.1, 99.9)
        Percentiles of the per-cell stretch to [0, 1], so that cameras with
        other offsets and gains compare; None expects crops in [0, 1].
    image_size : int, default=64
        Side of the square crops in the flat layout ``(n, C * 64 * 64)``.
    haralick_distances : tuple of int, default=(1, 2, 4)
        Pixel distances (texture scales) of the co-occurrence matrices.
    gray_levels : int, default=32
        Grey levels of the texture (at most 255).
    zernike_degree : int, default=8
        Highest Zernike order.
    radial_bins : int, default=4
        Rings of the radial distribution.
    n_jobs : int or None, default=None
        Processes over which the cells are shared (joblib; -1 for all cores).
    cache : FeatureCache or None, default=None
        Serve cells seen before (shared, not copied, by ``clone``).

    Attributes
    ----------
    n_channels_ : int
        Channels of the crops seen in ``fit``.
    n_features_in_ : int
        Values per cell (``C * H * W``).
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame.
    n_features_out_ : int
        Number of features per cell.

    See Also
    --------
    make_classical_head : the ensemble of linear SVMs that ensLOC put on such features.
    sklearn_deeploc.DeepLocFeaturizer : features of a pretrained DeepLoc network.

    Examples
    --------
    >>> from sklearn.model_selection import cross_val_score
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> from sklearn_deeploc.handcrafted import HandcraftedFeatures, make_classical_head
    >>> X, y = make_yeast_cells(10, ["NUCLEI", "VACUOLE", "CELLPERIPHERY"], random_state=0)
    >>> features = HandcraftedFeatures().fit_transform(X)
    >>> features.shape
    (30, 93)
    >>> HandcraftedFeatures().fit(X).get_feature_names_out()[:2]
    array(['cell_area', 'protein_mean_in_cell'], dtype=object)
    >>> pipe = make_pipeline(HandcraftedFeatures(), make_classical_head(random_state=0))
    >>> bool(cross_val_score(pipe, X, y, cv=2).mean() > 0.6)
    True
    """

    _parameter_constraints = {
        "protein_channel": [Interval(Integral, 0, None, closed="left")],
        "marker_channel": [Interval(Integral, 0, None, closed="left")],
        "stretch": [None, PercentilePair()],
        "image_size": [Interval(Integral, 1, None, closed="left")],
        "haralick_distances": [PositiveInts()],
        "gray_levels": [Interval(Integral, 1, 255, closed="both")],
        "zernike_degree": [Interval(Integral, 1, None, closed="left")],
        "radial_bins": [Interval(Integral, 1, None, closed="left")],
        "n_jobs": [None, Integral],
        "cache": [None, HasMethods(["lookup"])],
    }

    def __init__(
        self,
        *,
        protein_channel=0,
        marker_channel=1,
        stretch=(0.1, 99.9),
        image_size=IMAGE_SIZE,
        haralick_distances=(1, 2, 4),
        gray_levels=32,
        zernike_degree=8,
        radial_bins=4,
        n_jobs=None,
        cache=None,
    ):
        self.protein_channel = protein_channel
        self.marker_channel = marker_channel
        self.stretch = stretch
        self.image_size = image_size
        self.haralick_distances = haralick_distances
        self.gray_levels = gray_levels
        self.zernike_degree = zernike_degree
        self.radial_bins = radial_bins
        self.n_jobs = n_jobs
        self.cache = cache

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the crops (as ``transform`` takes them) and the settings; nothing is learnt."""
        self.n_channels_ = self._check_crops(X, reset=True).shape[1]
        self._check_channels()
        self.n_features_out_ = len(self._names())
        return self

    def _check_channels(self):
        """Refuse a protein or marker channel beyond the crops' channels."""
        for name in ("protein_channel", "marker_channel"):
            channel = getattr(self, name)
            if channel >= self.n_channels_:
                raise ValueError(
                    f"{name}={channel} is not a channel of crops with {self.n_channels_} "
                    f"channel(s); expected 0 to {self.n_channels_ - 1}."
                )

    def _check_settings_since_fit(self):
        """The checks of ``fit`` again, for ``set_params`` after it; the width is fixed at fit."""
        check_is_fitted(self, "n_features_out_")
        self._validate_params()
        self._check_channels()
        width = len(self._names())
        if width != self.n_features_out_:
            raise ValueError(
                "haralick_distances, zernike_degree or radial_bins changed since fit: they "
                f"give {width} features per cell, fit gave n_features_out_="
                f"{self.n_features_out_}. Call fit again after changing them."
            )

    def _check_crops(self, X, *, reset):
        """sklearn's bookkeeping (``n_features_in_``, column names), then the crops check."""
        n_channels = None if reset else self.n_channels_
        return validate_crops(
            self, X, reset=reset, n_channels=n_channels, image_size=self.image_size, crop_size=None
        )

    def transform(self, X):
        """Features of each cell, float32 of shape ``(n, n_features_out_)``.

        ``X`` may also be lazy (HDF5, zarr: read in blocks) or a ``dask.array`` (a lazy
        one comes back). Settings that change the number of features need a new ``fit``.
        """
        self._check_settings_since_fit()
        return apply_blockwise(self._transform_in_memory, X, self.n_features_out_)

    def _transform_in_memory(self, X):
        crops = self._check_crops(X, reset=False)
        if self.cache is not None:
            context = f"HandcraftedFeatures|{self._settings()}".encode()
            context = hashlib.blake2b(context, digest_size=32).digest()
            return self.cache.lookup(crops, context, self._measure)
        return self._measure(crops)

    def _settings(self):
        """The parameters a cell's features depend on (the feature cache's context)."""
        params = self.get_params(deep=False)
        return {name: params[name] for name in params if name not in NOT_FEATURE_SETTINGS}

    def _measure(self, crops):
        """Features of in-memory crops, the cells shared among ``n_jobs`` processes."""
        pairs = torch.from_numpy(crops[:, [self.protein_channel, self.marker_channel]])
        if self.stretch is not None:  # per cell, to [0, 1]
            pairs = percentile_stretch(pairs, tuple(self.stretch))
        elif pairs.min() < 0 or pairs.max() > 1:  # grey levels would wrap or saturate
            raise ValueError(
                f"stretch=None expects crops in [0, 1]; got values from {float(pairs.min()):g} to "
                f"{float(pairs.max()):g}. Stretch them first, or keep the default stretch."
            )
        pairs = pairs.numpy().astype(np.float64)
        # A few chunks per worker balance the load; one when serial.
        workers = effective_n_jobs(self.n_jobs)
        n_chunks = 1 if workers == 1 else min(len(crops), 4 * workers)
        settings = self._settings()
        parts = Parallel(n_jobs=self.n_jobs)(
            delayed(_features_of_cells)(pairs[chunk], settings)
            for chunk in np.array_split(np.arange(len(crops)), n_chunks)
        )
        return np.concatenate(parts).astype(np.float32)

    def _names(self):
        """The feature names of the current settings."""
        return feature_names(self.haralick_distances, self.zernike_degree, self.radial_bins)

    def get_feature_names_out(self, input_features=None):
        """Readable feature names, e.g. ``haralick_contrast_d1``, ``zernike_4_2``."""
        self._check_settings_since_fit()
        return np.asarray(self._names(), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # features are always float32
        return tags


def _draw_per_class(y, count, rng):
    """Random indices of ``count(n)`` of each class's ``n`` cells, drawn without replacement."""
    groups = (np.flatnonzero(y == label) for label in np.unique(y))
    return np.concatenate([rng.choice(g, count(len(g)), replace=False) for g in groups])


class SubsetSVMEnsemble(ClassifierMixin, BaseEstimator):
    """Linear SVMs, each fitted on a random stratified subset of the cells, voting.

    Each member standardises its subset and fits a linear SVM (one-vs-one, as the DeepLoc
    ``"svm"`` head). Subsets are drawn per class (at least one cell each), so every member
    sees every class, unlike :class:`~sklearn.ensemble.BaggingClassifier`'s, which libsvm
    refuses when they hold one class. :meth:`predict_proba` is the fraction of votes.

    Parameters
    ----------
    n_estimators : int, default=25
        Members of the ensemble.
    subset_fraction : float in (0, 1], default=0.8
        Fraction of each class's cells in a member's subset (drawn without replacement).
    random_state : int, RandomState instance or None, default=None
        Seeds the subsets.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    estimators_ : list of Pipeline
        The fitted members; they predict positions in ``classes_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names, when fitted on a DataFrame.

    Examples
    --------
    >>> from sklearn_deeploc.handcrafted import SubsetSVMEnsemble
    >>> head = SubsetSVMEnsemble(random_state=0).fit([[0.0], [1.0]], ["a", "b"])
    >>> head.predict([[0.1], [0.9]]).tolist(), head.predict_proba([[0.1]]).tolist()
    (['a', 'b'], [[1.0, 0.0]])
    """

    _parameter_constraints = {
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "subset_fraction": [Interval(Real, 0, 1, closed="right")],
        "random_state": ["random_state"],
    }

    def __init__(self, *, n_estimators=25, subset_fraction=0.8, random_state=None):
        self.n_estimators = n_estimators
        self.subset_fraction = subset_fraction
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit each member on its own subset of the cells (``y``: at least two classes)."""
        X, _ = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, codes = check_labels(y)  # from y as given: refuses mixed label types
        if len(self.classes_) < 2:
            raise ValueError(
                "The SVMs need at least two classes to separate; y holds one class, "
                f"{self.classes_.tolist()}."
            )
        rng = check_random_state(self.random_state)
        fraction = self.subset_fraction
        self.estimators_ = []
        for _ in range(self.n_estimators):
            subset = np.sort(_draw_per_class(codes, lambda n: max(1, round(fraction * n)), rng))
            member = Pipeline([("scale", StandardScaler()), ("svm", SVC(kernel="linear"))])
            self.estimators_.append(member.fit(X[subset], codes[subset]))
        return self

    def predict_proba(self, X):
        """The fraction of members that vote for each class, shape (n_cells, n_classes)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        votes = np.stack([member.predict(X) for member in self.estimators_])
        return (votes[..., None] == np.arange(len(self.classes_))).mean(axis=0)

    def predict(self, X):
        """The class most members vote for (ties go to the first in ``classes_``)."""
        votes = self.predict_proba(X)  # first: it refuses an unfitted ensemble
        return self.classes_[np.argmax(votes, axis=1)]


def make_classical_head(random_state=None):
    """ensLOC's classifier (Chong et al. 2015): 25 linear SVMs, each on a stratified 80% of cells.

    Parameters
    ----------
    random_state : int, RandomState instance or None, default=None
        Seeds the subsets.

    Returns
    -------
    SubsetSVMEnsemble
        Put :class:`HandcraftedFeatures` in front of it.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.handcrafted import make_classical_head
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 5)) + np.repeat([0, 3], 20)[:, None]
    >>> y = np.repeat(["a", "b"], 20)
    >>> head = make_classical_head(random_state=0).fit(X, y)
    >>> head.predict_proba(X[:2]).shape, head.score(X, y)
    ((2, 2), 1.0)
    """
    return SubsetSVMEnsemble(n_estimators=25, subset_fraction=0.8, random_state=random_state)
