"""Screen analysis: cells from micrographs, well aggregation, localization and abundance changes."""

import numbers
import warnings
from collections import namedtuple

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from .validation import available_memory, check_labels, check_positive_int

CropResult = namedtuple("CropResult", ["crops", "index", "padded", "outside"])
BORDER_POLICIES = ("pad", "drop")
MAX_CHANNELS = 8  # more than this on the last axis of a field is not a channel axis
_AXES = ("channel", "row", "column")


def _check_channels_first(image):
    if image.ndim == 3 and image.shape[2] <= MAX_CHANNELS < min(image.shape[:2]):
        raise ValueError(
            f"image has shape {image.shape}, which looks like (H, W, C) with the channels "
            "last; expected (C, H, W), channels first. Use np.moveaxis(image, -1, 0)."
        )


def _check_float32_range(image):
    """Refuse finite pixels that float32, the dtype of crops, would turn into infinities."""
    if image.dtype.kind != "f" or image.dtype.itemsize <= 4:
        return
    limit = np.finfo(np.float32).max
    with np.errstate(invalid="ignore"):  # NaN pixels compare False: they are not too large
        beyond = np.isfinite(image) & (np.abs(image) > limit)
    if beyond.any():
        position = np.unravel_index(np.argmax(beyond), image.shape)
        if image.ndim <= len(_AXES):
            where = ", ".join(f"{axis} {int(i)}" for axis, i in zip(_AXES[-image.ndim :], position))
        else:
            where = f"index {tuple(int(i) for i in position)}"
        raise ValueError(
            f"image has {int(beyond.sum())} pixel(s) beyond the range of float32 (+-{limit:.3g}), "
            f"which crops and cell finding compute in; the first is {image[position]:.3g} at "
            f"{where}. Expected values float32 holds (rescale the field first)."
        )


def _centers_array(centers, x_column, y_column):
    if hasattr(centers, "columns"):
        centers = _centre_columns(centers, x_column, y_column)
    centers = np.asarray(centers, dtype=float)
    if centers.shape == (0,):  # an empty list: no cells, like np.zeros((0, 2))
        centers = centers.reshape(0, 2)
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise ValueError(f"centers must have shape (n, 2) as (row, col); got {centers.shape}.")
    missing = ~np.isfinite(centers).all(axis=1)
    if missing.any():
        first = int(np.argmax(missing))
        raise ValueError(
            f"centers must be finite; {int(missing.sum())} centre(s) are NaN or infinite, "
            f"the first is centre {first} at {centers[first].tolist()}. Drop the cells "
            "without a position first."
        )
    return centers


def _centre_columns(frame, x_column, y_column):
    if x_column is None or y_column is None:
        raise ValueError(
            "Centres given as a DataFrame need x_column= and y_column= (for example "
            f"'Center_X', 'Center_Y'); columns are {list(frame.columns)}."
        )
    absent = [column for column in (x_column, y_column) if column not in frame.columns]
    if absent:
        raise ValueError(
            f"The centres have no column {', '.join(map(repr, absent))}; expected "
            f"x_column and y_column among {list(frame.columns)}."
        )
    return frame[[y_column, x_column]].to_numpy(dtype=float)


def _warn_outside(outside, n_centers, height, width):
    shown = ", ".join(map(str, outside[:10])) + (", ..." if len(outside) > 10 else "")
    warnings.warn(
        f"{len(outside)} of {n_centers} centre(s) lie outside the {height}x{width} field "
        f"and were not cropped (positions {shown}; see CropResult.outside).",
        UserWarning,
        stacklevel=3,
    )


def crop_cells(image, centers, size=64, *, border="pad", x_column=None, y_column=None):
    """Square crops centred on cells of a multi-channel field of view.

    Parameters
    ----------
    image : ndarray of shape (C, H, W)
        The field, any numeric dtype.
    centers : array-like of shape (n, 2) or DataFrame
        Cell centres as (row, col); or a DataFrame with the columns named by
        ``x_column`` (column coordinate) and ``y_column`` (row coordinate).
    size : int, default=64
        Side of the crops.
    border : {"pad", "drop"}, default="pad"
        Cells whose box crosses the field's edge are padded with each
        channel's median (the background: zeros would add a false edge for a
        camera with an offset), or dropped. A centre outside the field is
        never a cell: it is skipped either way, with a warning.
    x_column, y_column : str, optional
        DataFrame column names of the centres.

    Returns
    -------
    CropResult
        ``crops`` (k, C, size, size) float32; ``index``, the positions in
        ``centers`` of the k crops; ``padded``, a bool per crop telling
        whether it was padded; ``outside``, the positions in ``centers`` of
        centres outside the field (not cropped).

    Raises
    ------
    ValueError
        An image that is not (C, H, W) (channels last included) or is empty,
        centres that are not (n, 2) or not finite, DataFrame columns that do
        not exist, a ``size`` below 1 or whose crops do not fit in memory, an
        unknown ``border``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.screen import crop_cells
    >>> field = np.random.default_rng(0).random((2, 100, 100))
    >>> result = crop_cells(field, [[50, 50], [5, 5]], size=64, border="drop")
    >>> result.crops.shape, result.index.tolist()
    ((1, 2, 64, 64), [0])
    """
    if border not in BORDER_POLICIES:
        raise ValueError(f"border must be one of {BORDER_POLICIES}; got {border!r}.")
    size = check_positive_int(size, "size")
    image = _check_field(image)
    centers = np.rint(_centers_array(centers, x_column, y_column))
    _, height, width = image.shape
    in_field = ((centers >= 0) & (centers < [height, width])).all(axis=1)
    outside = np.flatnonzero(~in_field)
    if len(outside):
        _warn_outside(outside, len(centers), height, width)
    candidates = np.flatnonzero(in_field)
    tops, lefts = (centers[candidates].astype(np.int64) - size // 2).T
    box_inside = (tops >= 0) & (lefts >= 0) & (tops + size <= height) & (lefts + size <= width)
    keep = np.ones_like(box_inside) if border == "pad" else box_inside
    _check_crops_fit(int(keep.sum()), image.shape, size)
    crops = _gather_crops(image, tops[keep], lefts[keep], size)
    return CropResult(crops, candidates[keep], ~box_inside[keep], outside)


def _check_field(image):
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W); got {image.shape}.")
    if image.size == 0:
        raise ValueError(
            f"image must have at least one channel and one pixel; got shape {image.shape}."
        )
    _check_channels_first(image)
    _check_float32_range(image)
    return image


def _check_crops_fit(n_crops, shape, size):
    channels, height, width = shape
    needed, available = n_crops * channels * size * size * 4, available_memory()
    if available is not None and needed > available:
        raise ValueError(
            f"{n_crops} crop(s) of {channels}x{size}x{size} float32 need {needed / 1e9:.3g} GB, "
            f"but {available / 1e9:.3g} GB of memory is available; expected a smaller size "
            f"(the field is {height}x{width})."
        )


def _gather_crops(image, tops, lefts, size):
    """Crops at the given corners, with each channel's median beyond the field's edge.

    Each crop is padded on its own: a padded copy of the whole field would
    cost memory growing with ``size`` even when no crop crosses the edge.
    """
    channels, height, width = image.shape
    window = np.arange(size)
    rows, cols = tops[:, None] + window, lefts[:, None] + window
    crops = image.astype(np.float32, copy=False)[
        np.arange(channels)[None, :, None, None],
        np.clip(rows, 0, height - 1)[:, None, :, None],
        np.clip(cols, 0, width - 1)[:, None, None, :],
    ]
    rows_out, cols_out = (rows < 0) | (rows >= height), (cols < 0) | (cols >= width)
    if rows_out.any() or cols_out.any():
        background = np.median(image.reshape(channels, -1), axis=1).astype(np.float32)
        background = background[None, :, None, None]
        # Two broadcast masks: no (k, C, size, size) temporary.
        np.copyto(crops, background, where=rows_out[:, None, :, None])
        np.copyto(crops, background, where=cols_out[:, None, None, :])
    return crops


def find_cells(image, *, channel=1, sigma=2.0, min_distance=7, min_area=30):
    """Cell centres from a marker channel by seeded watershed (scikit-image).

    The marker channel is smoothed, split into cells and background with
    Otsu's threshold, and touching cells are separated by a watershed of the
    distance transform seeded at its local maxima.

    Parameters
    ----------
    image : ndarray of shape (C, H, W) or (H, W)
        Channels first; an image that looks like (H, W, C) is refused.
    channel : int or None, default=1
        Channel with the cytosolic (or other whole-cell) marker; None for an
        (H, W) image.
    sigma : float, default=2.0
        Gaussian smoothing before thresholding, in pixels.
    min_distance : int, default=7
        Smallest distance between two seeds (about a cell radius).
    min_area : int, default=30
        Regions smaller than this (pixels) are dropped as debris.

    Returns
    -------
    ndarray of shape (n, 2)
        Centres as (row, col), float.

    Raises
    ------
    ValueError
        An image without pixels, an (H, W, C) image, a ``channel`` that is
        not an integer index of an existing channel, a negative or infinite
        ``sigma``, a ``min_distance`` below 1, a marker with NaN or infinite
        pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.screen import find_cells
    >>> yy, xx = np.mgrid[:80, :80]
    >>> field = ((yy - 20) ** 2 + (xx - 25) ** 2 < 100) + ((yy - 55) ** 2 + (xx - 50) ** 2 < 100)
    >>> np.round(find_cells(field.astype(float), channel=None)).tolist()
    [[20.0, 25.0], [55.0, 50.0]]
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.measure import regionprops
    from skimage.segmentation import watershed

    if not isinstance(sigma, numbers.Real) or not 0 <= sigma < np.inf:
        raise ValueError(f"sigma must be a finite number >= 0 (pixels); got {sigma!r}.")
    min_distance = check_positive_int(min_distance, "min_distance")
    image = np.asarray(image)
    _check_float32_range(image)
    image = image.astype(np.float32, copy=False)
    marker = _marker_channel(image, channel)
    smooth = ndimage.gaussian_filter(marker, sigma)
    foreground = smooth > threshold_otsu(smooth)
    distance = ndimage.distance_transform_edt(foreground)
    peaks = peak_local_max(
        distance,
        min_distance=min_distance,
        labels=ndimage.label(foreground)[0],
        exclude_border=False,
    )
    seeds = np.zeros(marker.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = watershed(-distance, seeds, mask=foreground)
    centres = [r.centroid for r in regionprops(regions) if r.area >= min_area]
    return np.asarray(centres, dtype=float).reshape(-1, 2)


def _marker_channel(image, channel):
    if channel is None:
        if image.ndim != 2:
            raise ValueError(f"With channel=None, expected an (H, W) image; got {image.shape}.")
        marker = image
    else:
        if not isinstance(channel, numbers.Integral) or isinstance(channel, bool):
            raise ValueError(f"channel must be an integer index or None; got {channel!r}.")
        if image.ndim != 3:
            raise ValueError(f"Expected a (C, H, W) image with channel=; got {image.shape}.")
        _check_channels_first(image)
        if not -len(image) <= channel < len(image):
            raise ValueError(f"channel={channel}, but the image has {len(image)} channel(s).")
        marker = image[channel]
    if marker.size == 0:
        raise ValueError(f"The image has no pixels (shape {image.shape}); expected a field.")
    if not np.isfinite(marker).all():
        raise ValueError("The marker channel has NaN or infinite pixels; expected finite ones.")
    return marker


def _check_cells(values, groups, name, groups_name, ndim=2):
    """Per-cell values (probabilities or intensities) and their groups, both checked."""
    values = np.asarray(values, dtype=float)
    classes, codes = check_labels(groups, name=groups_name)
    groups = classes[codes]
    if values.ndim != ndim or len(values) != len(groups):
        shape = "(n_cells, n_classes)" if ndim == 2 else "(n_cells,)"
        raise ValueError(
            f"{name} must be {shape} with one group per cell; got {name} of shape "
            f"{values.shape} and {len(groups)} groups."
        )
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{name} has NaN or infinite values for {int(bad.sum())} cell(s), the first "
            f"is cell {int(np.argmax(bad))}; expected finite values for every cell "
            "(drop those cells or predict them again)."
        )
    return values, groups


def _check_probabilities(proba, name):
    """Refuse rows that are not probabilities (logits or percentages passed by mistake)."""
    sums = proba.sum(axis=1)
    bad = (proba < 0).any(axis=1) | (proba > 1).any(axis=1) | ~np.isclose(sums, 1, atol=1e-3)
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"{name} must hold probabilities (values in [0, 1], each row summing to 1), as "
            f"from predict_proba; {int(bad.sum())} row(s) do not, the first is cell {first} "
            f"(values from {proba[first].min():.3g} to {proba[first].max():.3g}, sum "
            f"{sums[first]:.3g}). Logits or decision_function scores are not probabilities."
        )
    return proba


def _named_columns(proba, classes, name):
    """A DataFrame's columns put in the order of ``classes`` (its own order when None).

    Columns are matched by name, never by position: two tables of the same
    classes in different orders describe the same cells.
    """
    if not hasattr(proba, "columns"):
        return proba, classes
    columns = list(proba.columns)
    if len(set(columns)) < len(columns):
        raise ValueError(f"{name} has duplicated column names {columns}; expected one per class.")
    if classes is None:
        return proba, columns
    if set(columns) != set(classes):
        raise ValueError(
            f"{name} has the columns {columns}; expected the classes {list(classes)} "
            "(in any order)."
        )
    return proba[list(classes)], classes


def _class_names(classes, n_classes):
    if classes is None:
        return list(range(n_classes))
    if np.ndim(classes) != 1:
        raise ValueError(f"classes must be a sequence of class names; got {classes!r}.")
    classes = list(classes)
    if len(classes) != n_classes:
        raise ValueError(f"Got {len(classes)} class names for {n_classes} probability columns.")
    repeated = pd.Index(classes).duplicated()
    if repeated.any():
        raise ValueError(
            f"Class names must be distinct; {classes[int(np.argmax(repeated))]!r} appears "
            f"more than once in {classes}."
        )
    return classes


def aggregate(proba, groups, classes=None):
    """Mean class probabilities per well (or strain, or protein), with cell counts.

    Parameters
    ----------
    proba : array-like or DataFrame of shape (n_cells, n_classes)
        Per-cell probabilities (``predict_proba``): in [0, 1], rows summing
        to 1.
    groups : array-like of shape (n_cells,)
        Well or strain of each cell; no missing values.
    classes : sequence, optional
        Distinct column names (``clf.classes_``); default a DataFrame's
        column names, else ``0 .. n_classes - 1``. A DataFrame's columns are
        taken by name in this order.

    Returns
    -------
    pandas.DataFrame
        Indexed by group: ``n_cells``, then one column of mean probability
        per class.

    Examples
    --------
    >>> from sklearn_deeploc.screen import aggregate
    >>> aggregate([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], ["A1", "A1", "B2"], ["ER", "NUCLEI"])
           n_cells   ER  NUCLEI
    group
    A1           2  0.5     0.5
    B2           1  1.0     0.0
    """
    proba, classes = _named_columns(proba, classes, "proba")
    proba, groups = _check_cells(proba, groups, "proba", "groups")
    _check_probabilities(proba, "proba")
    classes = _class_names(classes, proba.shape[1])
    frame = pd.DataFrame(proba, columns=classes)
    frame.insert(0, "group", groups)
    means = frame.groupby("group", sort=True)[classes].mean()
    means.insert(0, "n_cells", frame.groupby("group", sort=True).size())
    return means


def _welch(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """Welch's t from group moments; NaN where a group has fewer than two cells."""
    difference = mean_b - mean_a
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(var_b / n_b + var_a / n_a)
        # No spread on either side: equal means are no change (0), different
        # means are the largest change there is (+-inf), not 0.
        t = np.where(difference == 0, 0.0, difference / scale)
    return np.where((n_a < 2) | (n_b < 2), np.nan, t)


def _exact_variance(variance, spread):
    # The variance of identical values can come out a rounding error above 0
    # (about 1e-33), which would turn "no spread" into a huge finite t.
    return np.where(spread == 0, 0.0, variance)


def welch_t(a, b):
    """Welch's t statistic of ``b`` against ``a`` along axis 0 (unequal variances).

    Groups without spread but with different means differ as much as groups
    can: t is +inf or -inf. Identical constant groups give 0. A group of
    fewer than two cells has no variance to compare with: t is NaN.

    Examples
    --------
    >>> from sklearn_deeploc.screen import welch_t
    >>> float(welch_t([0.1, 0.2, 0.3], [0.5, 0.7, 0.9]).round(3))
    3.873
    >>> float(welch_t([0.1, 0.1], [0.9, 0.9])), float(welch_t([0.1], [0.9, 0.9]))
    (inf, nan)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if min(len(a), len(b)) < 2:
        return np.full(a.shape[1:], np.nan)
    moments = [
        (x.mean(axis=0), _exact_variance(x.var(axis=0, ddof=1), np.ptp(x, axis=0)), len(x))
        for x in (a, b)
    ]
    return _welch(*moments[0], *moments[1])


def _mixture_posterior(scores, prior, min_std, n_iter, tol):
    # The uniform spans at least +-3 min_std: a narrower one would call the
    # background's own bulk outliers, its density growing without bound as
    # the range shrinks (a range of 1e-20 made every score an outlier).
    uniform = prior / max(np.ptp(scores), 6 * min_std)
    mean = np.median(scores)
    std = max(1.4826 * stats.median_abs_deviation(scores) or scores.std(), min_std)
    for _ in range(n_iter):
        gaussian = (1 - prior) * stats.norm.pdf(scores, mean, std)
        background = gaussian / (gaussian + uniform)
        new_mean = np.average(scores, weights=background)
        new_std = max(np.sqrt(np.average((scores - new_mean) ** 2, weights=background)), min_std)
        converged = abs(new_mean - mean) < tol and abs(new_std - std) < tol
        mean, std = new_mean, new_std
        if converged:
            break
    gaussian = (1 - prior) * stats.norm.pdf(scores, mean, std)
    return uniform / (gaussian + uniform)


def _check_prior(prior):
    if isinstance(prior, bool) or not isinstance(prior, numbers.Real) or not 0 < prior < 1:
        raise ValueError(
            f"prior must be a probability strictly between 0 and 1 (the paper uses 0.01); "
            f"got {prior!r}."
        )


def outlier_posterior(scores, prior=0.01, n_iter=200, tol=1e-8, *, min_std=1.0):
    """Posterior of each score under the uniform (outlier) part of a Gaussian + uniform mixture.

    The Gaussian (background: no change) has its mean and standard deviation
    fitted by EM; the uniform spans the observed range (at least the
    background's +-3 ``min_std``) with fixed prior weight ``prior``, as in
    the paper (1%). Only finite scores are fitted: an infinite score is a
    certain outlier (posterior 1), a NaN score (not scored) gets a NaN
    posterior, and so do all scores when fewer than two are finite (no
    mixture to fit).

    Parameters
    ----------
    scores : array-like
        Welch t statistics (or other scores in units of their null spread).
    prior : float, default=0.01
        Weight of the outliers, strictly between 0 and 1.
    n_iter : int, default=200
        Most EM iterations.
    tol : float, default=1e-8
        EM stops when the mean and standard deviation move less than this.
    min_std : float, default=1.0
        Floor of the background's standard deviation. Under no change a
        Welch t statistic follows Student's t, whose standard deviation
        sqrt(df / (df - 2)) is at least 1; a narrower fit comes from ties
        (probabilities in steps of 1/k from a kNN or forest head, or
        saturated at 0 and 1, give many t of exactly 0) and would make every
        small nonzero t an outlier. Use another floor for scores in other
        units.

    Returns
    -------
    ndarray of the scores' shape
        A value above 0.5 means the score is more likely an outlier.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.screen import outlier_posterior
    >>> scores = np.r_[np.random.default_rng(0).normal(size=500), 9.0]
    >>> bool(outlier_posterior(scores)[-1] > 0.5), bool(outlier_posterior(scores)[0] < 0.5)
    (True, True)
    >>> outlier_posterior(np.r_[scores, np.inf, np.nan])[-2:].tolist()
    [1.0, nan]

    Ties do not shrink the background below the spread of a t statistic:

    >>> bool(outlier_posterior(np.r_[np.zeros(50), 0.8, -1.2])[-1] < 0.5)
    True
    """
    _check_prior(prior)
    if isinstance(min_std, bool) or not isinstance(min_std, numbers.Real) or not min_std > 0:
        raise ValueError(f"min_std must be a number > 0; got {min_std!r}.")
    scores = np.asarray(scores, dtype=float)
    posterior = np.where(np.isinf(scores), 1.0, np.nan)
    finite = np.isfinite(scores)
    if finite.sum() >= 2:
        posterior[finite] = _mixture_posterior(scores[finite], prior, min_std, n_iter, tol)
    return posterior


def _examples(labels):
    shown = ", ".join(repr(label) for label in labels[:3].tolist())
    return shown + (", ..." if len(labels) > 3 else "")


def _check_shared_proteins(groups_a, groups_b):
    """The proteins present in both screens; refused when there are none.

    Matching uses pandas' equality, as the per-protein groupby does: numpy's
    intersect1d would promote 1 and '1' (or b'p' and 'p') to one type and
    find an overlap that the groupby then never matches.
    """
    proteins_a, proteins_b = pd.Index(np.unique(groups_a)), pd.Index(np.unique(groups_b))
    shared = proteins_a.intersection(proteins_b)
    if shared.empty:
        raise ValueError(
            f"No protein (group) is present in both screens: groups_a has "
            f"{_examples(proteins_a.to_numpy())} and groups_b has "
            f"{_examples(proteins_b.to_numpy())}. Expected the same names, of the same "
            "type, in both screens (numbers never match strings, nor bytes match str)."
        )
    return shared


def _per_protein(proba, groups, proteins):
    """Mean, variance and cell count of each protein's probabilities (NaN/0 if absent)."""
    grouped = pd.DataFrame(proba).groupby(groups)
    mean, variance, spread = (
        frame.reindex(proteins).to_numpy()
        for frame in (grouped.mean(), grouped.var(ddof=1), grouped.max() - grouped.min())
    )
    counts = grouped.size().reindex(proteins, fill_value=0).to_numpy()
    return mean, _exact_variance(variance, spread), counts[:, None]


def _status(n_a, n_b, posterior):
    """Why each protein has a score, or has none: "scored" or the reason."""
    conditions = [n_a == 0, n_b == 0, (n_a < 2) | (n_b < 2), np.isnan(posterior)]
    reasons = ["only in screen B", "only in screen A", "too few cells", "too few proteins"]
    return np.select(conditions, reasons, default="scored")


def localization_changes(proba_a, groups_a, proba_b, groups_b, classes=None, *, prior=0.01):
    """Per protein and class, the change in localization between two screens.

    For each protein (group) and each class, Welch's t statistic compares the
    cells' probabilities in screen B (treated) against screen A (untreated).
    Per class, a mixture of a Gaussian (background) and a uniform (outliers,
    prior ``prior``) is fitted to the proteins' finite t statistics; a
    protein whose score is more likely under the uniform has a significant
    change. A protein whose cells do not vary in either screen but whose
    mean moved has t = +-inf and is significant.

    A protein that cannot be scored (absent from one screen, or fewer than
    two cells in one) gets t = NaN, ``significant`` missing (``pd.NA``), and
    a ``status`` saying why; it is never reported as unchanged.

    Parameters
    ----------
    proba_a, proba_b : array-like or DataFrame of shape (n_cells, n_classes)
        Per-cell probabilities of the two screens (``predict_proba``): in
        [0, 1], rows summing to 1. DataFrame columns are matched by name.
    groups_a, groups_b : array-like of shape (n_cells,)
        Protein (or strain) of each cell; no missing values; labels of the
        same type in both screens.
    classes : sequence, optional
        Distinct class names; default a DataFrame's column names, else
        ``0 .. n_classes - 1``.
    prior : float, default=0.01
        Weight of the outliers in each class's mixture, strictly between 0
        and 1 (the paper's 1%). The background's standard deviation is at
        least 1, that of a t statistic under no change (see
        :func:`outlier_posterior`).

    Returns
    -------
    pandas.DataFrame
        Columns ``protein``, ``class``, ``t``, ``posterior`` (of the outlier
        part), ``significant`` (nullable boolean), ``n_cells_a``,
        ``n_cells_b`` and ``status`` (``"scored"``, ``"too few cells"``,
        ``"only in screen A"``, ``"only in screen B"``, or ``"too few
        proteins"`` when a class has fewer than two finite scores to fit).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.screen import localization_changes
    >>> rng = np.random.default_rng(0)
    >>> proteins = np.repeat([f"p{i}" for i in range(50)], 10)
    >>> untreated, treated = rng.dirichlet([5, 5], 500), rng.dirichlet([5, 5], 500)
    >>> treated[proteins == "p3"] = [0.05, 0.95]  # p3 moves to the ER
    >>> table = localization_changes(untreated, proteins, treated, proteins, ["NUCLEI", "ER"])
    >>> sorted(set(table.loc[table["significant"], "protein"]))
    ['p3']
    """
    _check_prior(prior)
    proba_a, classes = _named_columns(proba_a, classes, "proba_a")
    proba_b, classes = _named_columns(proba_b, classes, "proba_b")
    proba_a, groups_a = _check_cells(proba_a, groups_a, "proba_a", "groups_a")
    proba_b, groups_b = _check_cells(proba_b, groups_b, "proba_b", "groups_b")
    _check_probabilities(proba_a, "proba_a")
    _check_probabilities(proba_b, "proba_b")
    if proba_a.shape[1] != proba_b.shape[1]:
        raise ValueError(
            f"The screens have {proba_a.shape[1]} and {proba_b.shape[1]} probability "
            "columns; expected the same classes in both."
        )
    classes = _class_names(classes, proba_a.shape[1])
    _check_shared_proteins(groups_a, groups_b)
    proteins = np.union1d(groups_a, groups_b)  # one type now: no promotion
    mean_a, var_a, n_a = _per_protein(proba_a, groups_a, proteins)
    mean_b, var_b, n_b = _per_protein(proba_b, groups_b, proteins)
    t = _welch(mean_a, var_a, n_a, mean_b, var_b, n_b)
    frames = []
    for k, name in enumerate(classes):
        posterior = outlier_posterior(t[:, k], prior)
        significant = pd.array(posterior > 0.5, dtype="boolean")
        significant[np.isnan(posterior)] = pd.NA
        frames.append(
            pd.DataFrame(
                {
                    "protein": proteins,
                    "class": name,
                    "t": t[:, k],
                    "posterior": posterior,
                    "significant": significant,
                    "n_cells_a": n_a[:, 0],
                    "n_cells_b": n_b[:, 0],
                    "status": _status(n_a[:, 0], n_b[:, 0], posterior),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def abundance_changes(intensity_a, groups_a, intensity_b, groups_b, *, threshold=1.0):
    """Log2 fold change of mean intensity per protein: treated (B) over untreated (A).

    Parameters
    ----------
    intensity_a, intensity_b : array-like of shape (n_cells,)
        A per-cell intensity (for example the mean protein-channel intensity
        above background); finite.
    groups_a, groups_b : array-like of shape (n_cells,)
        Protein of each cell; no missing values.
    threshold : float, default=1.0
        ``|log2 ratio| > threshold`` is significant (a two-fold change);
        finite and >= 0.

    Returns
    -------
    pandas.DataFrame
        Columns ``protein``, ``mean_a``, ``mean_b``, ``log2_ratio``,
        ``significant``; one row per protein present in both screens.

    Raises
    ------
    ValueError
        Non-finite intensities, missing groups, no protein in both screens
        (group labels of different types never match), a protein's mean
        that is not positive, a negative or non-finite ``threshold``.

    Examples
    --------
    >>> from sklearn_deeploc.screen import abundance_changes
    >>> abundance_changes([10, 10, 5], ["p", "p", "q"], [40, 6], ["p", "q"])
      protein  mean_a  mean_b  log2_ratio  significant
    0       p    10.0    40.0    2.000000         True
    1       q     5.0     6.0    0.263034        False
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(f"threshold must be a number >= 0 (log2 units); got {threshold!r}.")
    if not 0 <= threshold < np.inf:
        raise ValueError(f"threshold must be finite and >= 0 (log2 units); got {threshold!r}.")
    means = {}
    for side, intensity, groups in (("a", intensity_a, groups_a), ("b", intensity_b, groups_b)):
        intensity, groups = _check_cells(
            intensity, groups, f"intensity_{side}", f"groups_{side}", ndim=1
        )
        means[side] = pd.Series(intensity).groupby(groups).mean()
    shared = _check_shared_proteins(means["a"].index, means["b"].index)
    both = pd.DataFrame({f"mean_{side}": mean.reindex(shared) for side, mean in means.items()})
    _check_positive_means(both)
    both["log2_ratio"] = np.log2(both["mean_b"] / both["mean_a"])
    both["significant"] = both["log2_ratio"].abs() > threshold
    return both.rename_axis("protein").reset_index()


def _check_positive_means(both):
    for side in "ab":
        means = both[f"mean_{side}"]
        bad = ~((means > 0) & np.isfinite(means))
        if bad.any():
            protein = means.index[bad.to_numpy()].tolist()[0]
            raise ValueError(
                f"Mean intensities must be positive and finite for a log ratio; in screen "
                f"{side.upper()}, {int(bad.sum())} protein(s) are not, the first is "
                f"{protein!r} (mean {means.loc[protein]:.3g}). Subtract a background that "
                "keeps every protein above zero."
            )
