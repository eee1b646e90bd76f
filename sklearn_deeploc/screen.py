"""Screen analysis: cells from micrographs, well aggregation, localization and abundance changes."""

from collections import namedtuple

import numpy as np
import pandas as pd
from scipy import ndimage, stats

CropResult = namedtuple("CropResult", ["crops", "index", "padded"])
BORDER_POLICIES = ("pad", "drop")


def _centers_array(centers, x_column, y_column):
    if hasattr(centers, "columns"):
        if x_column is None or y_column is None:
            raise ValueError(
                "Centres given as a DataFrame need x_column= and y_column= (for example "
                f"'Center_X', 'Center_Y'); columns are {list(centers.columns)}."
            )
        return centers[[y_column, x_column]].to_numpy(dtype=float)
    centers = np.asarray(centers, dtype=float)
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise ValueError(f"centers must have shape (n, 2) as (row, col); got {centers.shape}.")
    return centers


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
        camera with an offset), or dropped.
    x_column, y_column : str, optional
        DataFrame column names of the centres.

    Returns
    -------
    CropResult
        ``crops`` (k, C, size, size) float32; ``index``, the positions in
        ``centers`` of the k crops; ``padded``, a bool per crop telling
        whether it was padded.

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
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must have shape (C, H, W); got {image.shape}.")
    centers = np.rint(_centers_array(centers, x_column, y_column)).astype(np.int64)
    _, height, width = image.shape
    tops, lefts = centers[:, 0] - size // 2, centers[:, 1] - size // 2
    inside = (tops >= 0) & (lefts >= 0) & (tops + size <= height) & (lefts + size <= width)
    index = np.arange(len(centers)) if border == "pad" else np.flatnonzero(inside)
    background = np.median(image.reshape(len(image), -1), axis=1).astype(np.float32)
    padded_image = np.empty((len(image), height + 2 * size, width + 2 * size), np.float32)
    padded_image[:] = background[:, None, None]
    padded_image[:, size : size + height, size : size + width] = image
    window = np.arange(size)
    rows = np.clip(tops[index, None] + size + window, 0, height + 2 * size - 1)
    cols = np.clip(lefts[index, None] + size + window, 0, width + 2 * size - 1)
    crops = padded_image[:, rows[:, :, None], cols[:, None, :]].transpose(1, 0, 2, 3)
    return CropResult(np.ascontiguousarray(crops), index, ~inside[index])


def find_cells(image, *, channel=1, sigma=2.0, min_distance=7, min_area=30):
    """Cell centres from a marker channel by seeded watershed (scikit-image).

    The marker channel is smoothed, split into cells and background with
    Otsu's threshold, and touching cells are separated by a watershed of the
    distance transform seeded at its local maxima.

    Parameters
    ----------
    image : ndarray of shape (C, H, W) or (H, W)
    channel : int, default=1
        Channel with the cytosolic (or other whole-cell) marker.
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

    image = np.asarray(image, dtype=np.float32)
    marker = image if channel is None else image[channel]
    if marker.ndim != 2:
        raise ValueError(f"Expected a (C, H, W) image with channel=, or (H, W); got {image.shape}.")
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


def aggregate(proba, groups, classes=None):
    """Mean class probabilities per well (or strain, or protein), with cell counts.

    Parameters
    ----------
    proba : array-like of shape (n_cells, n_classes)
        Per-cell probabilities (``predict_proba``).
    groups : array-like of shape (n_cells,)
        Well or strain of each cell.
    classes : sequence, optional
        Column names (``clf.classes_``); default ``0 .. n_classes - 1``.

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
    proba = np.asarray(proba, dtype=float)
    groups = np.asarray(groups)
    if proba.ndim != 2 or len(proba) != len(groups):
        raise ValueError(
            f"proba must be (n_cells, n_classes) with one group per cell; got proba "
            f"{proba.shape} and {len(groups)} groups."
        )
    classes = list(range(proba.shape[1])) if classes is None else list(classes)
    frame = pd.DataFrame(proba, columns=classes)
    frame.insert(0, "group", groups)
    means = frame.groupby("group", sort=True)[classes].mean()
    means.insert(0, "n_cells", frame.groupby("group", sort=True).size())
    return means


def welch_t(a, b):
    """Welch's t statistic of ``b`` against ``a`` along axis 0 (unequal variances).

    Examples
    --------
    >>> from sklearn_deeploc.screen import welch_t
    >>> float(welch_t([0.1, 0.2, 0.3], [0.5, 0.7, 0.9]).round(3))
    3.873
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    difference = b.mean(axis=0) - a.mean(axis=0)
    scale = np.sqrt(b.var(axis=0, ddof=1) / len(b) + a.var(axis=0, ddof=1) / len(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, difference / scale, 0.0)


def outlier_posterior(scores, prior=0.01, n_iter=200, tol=1e-8):
    """Posterior of each score under the uniform (outlier) part of a Gaussian + uniform mixture.

    The Gaussian (background: no change) has its mean and standard deviation
    fitted by EM; the uniform spans the observed range with fixed prior
    weight ``prior``, as in the paper (1%).

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
    """
    scores = np.asarray(scores, dtype=float)
    span = np.ptp(scores)
    if span == 0:
        return np.zeros_like(scores)
    uniform = prior / span
    mean, std = np.median(scores), 1.4826 * stats.median_abs_deviation(scores) or scores.std()
    for _ in range(n_iter):
        gaussian = (1 - prior) * stats.norm.pdf(scores, mean, std)
        background = gaussian / (gaussian + uniform)
        new_mean = np.average(scores, weights=background)
        new_std = np.sqrt(np.average((scores - new_mean) ** 2, weights=background))
        converged = abs(new_mean - mean) < tol and abs(new_std - std) < tol
        mean, std = new_mean, max(new_std, 1e-12)
        if converged:
            break
    gaussian = (1 - prior) * stats.norm.pdf(scores, mean, std)
    return uniform / (gaussian + uniform)


def localization_changes(proba_a, groups_a, proba_b, groups_b, classes=None, *, prior=0.01):
    """Per protein and class, the change in localization between two screens.

    For each protein (group) present in both screens and each class, Welch's
    t statistic compares the cells' probabilities in screen B (treated)
    against screen A (untreated). Per class, a mixture of a Gaussian
    (background) and a uniform (outliers, prior ``prior``) is fitted to the
    proteins' t statistics; a protein whose score is more likely under the
    uniform has a significant change.

    Parameters
    ----------
    proba_a, proba_b : array-like of shape (n_cells, n_classes)
        Per-cell probabilities of the two screens.
    groups_a, groups_b : array-like of shape (n_cells,)
        Protein (or strain) of each cell.
    classes : sequence, optional
        Class names.
    prior : float, default=0.01

    Returns
    -------
    pandas.DataFrame
        Columns ``protein``, ``class``, ``t``, ``posterior`` (of the outlier
        part) and ``significant``.

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
    proba_a, proba_b = np.asarray(proba_a, float), np.asarray(proba_b, float)
    groups_a, groups_b = np.asarray(groups_a), np.asarray(groups_b)
    classes = list(range(proba_a.shape[1])) if classes is None else list(classes)
    proteins = np.intersect1d(groups_a, groups_b)
    if len(proteins) == 0:
        raise ValueError("No protein (group) is present in both screens.")
    t = np.stack([welch_t(proba_a[groups_a == p], proba_b[groups_b == p]) for p in proteins])
    frames = []
    for k, name in enumerate(classes):
        posterior = outlier_posterior(t[:, k], prior)
        frames.append(
            pd.DataFrame(
                {
                    "protein": proteins,
                    "class": name,
                    "t": t[:, k],
                    "posterior": posterior,
                    "significant": posterior > 0.5,
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
        above background).
    groups_a, groups_b : array-like of shape (n_cells,)
        Protein of each cell.
    threshold : float, default=1.0
        ``|log2 ratio| > threshold`` is significant (a two-fold change).

    Returns
    -------
    pandas.DataFrame
        Columns ``protein``, ``mean_a``, ``mean_b``, ``log2_ratio``, ``significant``.

    Examples
    --------
    >>> from sklearn_deeploc.screen import abundance_changes
    >>> abundance_changes([10, 10, 5], ["p", "p", "q"], [40, 6], ["p", "q"])
      protein  mean_a  mean_b  log2_ratio  significant
    0       p    10.0    40.0    2.000000         True
    1       q     5.0     6.0    0.263034        False
    """
    a = pd.Series(np.asarray(intensity_a, float)).groupby(np.asarray(groups_a)).mean()
    b = pd.Series(np.asarray(intensity_b, float)).groupby(np.asarray(groups_b)).mean()
    both = pd.DataFrame({"mean_a": a, "mean_b": b}).dropna()
    if (both.to_numpy() <= 0).any():
        raise ValueError(
            "Mean intensities must be positive for a log ratio; subtract the "
            "background so that it stays above zero."
        )
    both["log2_ratio"] = np.log2(both["mean_b"] / both["mean_a"])
    both["significant"] = both["log2_ratio"].abs() > threshold
    return both.rename_axis("protein").reset_index()
