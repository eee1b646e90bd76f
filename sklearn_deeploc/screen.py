"""Screen statistics: well aggregation, localization and abundance changes."""

import numbers

import numpy as np
import pandas as pd
from scipy import stats

from .fields import CropResult, crop_cells, find_cells  # noqa: F401 (public here too)
from .validation import check_positive_int, check_proba_table


def aggregate(proba, groups, classes=None):
    """Mean class probabilities per well (or strain, or protein), with cell counts.

    Parameters
    ----------
    proba : array-like or DataFrame of shape (n_cells, n_classes)
        Per-cell probabilities (``predict_proba``): in [0, 1], rows summing to 1.
    groups : array-like of shape (n_cells,)
        Well or strain of each cell; no missing values.
    classes : sequence, optional
        Distinct column names (``clf.classes_``), by which a DataFrame's columns are taken;
        default a DataFrame's column names, else ``0 .. n_classes - 1``.

    Returns
    -------
    pandas.DataFrame
        Indexed by group: ``n_cells``, then one column of mean probability per class.

    Examples
    --------
    >>> from sklearn_deeploc.screen import aggregate
    >>> aggregate([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], ["A1", "A1", "B2"], ["ER", "NUCLEI"])
           n_cells   ER  NUCLEI
    group
    A1           2  0.5     0.5
    B2           1  1.0     0.0
    """
    proba, classes, groups = check_proba_table(proba, classes, groups=groups)
    if "n_cells" in classes:
        raise ValueError("A class is named 'n_cells', the column of the cell counts; rename it.")
    grouped = pd.DataFrame(proba, columns=classes).groupby(pd.Series(groups, name="group"))
    means = grouped.mean()
    means.insert(0, "n_cells", grouped.size())
    return means


ROUNDING = 1e-6  # float32 probabilities of one cell differ by this much between code paths


def _welch(mean_a, var_a, n_a, mean_b, var_b, n_b):
    """Welch's t from group moments; NaN where a group has fewer than two cells."""
    difference = mean_b - mean_a
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sqrt(var_b / n_b + var_a / n_a)
        # No spread on either side: means equal to float32 rounding are no change (0), others
        # the largest (+-inf)
        t = np.where((scale == 0) & (np.abs(difference) <= ROUNDING), 0.0, difference / scale)
    return np.where((n_a < 2) | (n_b < 2), np.nan, t)


def _exact_variance(variance, spread):
    """0 where there is no spread: rounding (about 1e-33) would give a huge finite t."""
    return np.where(spread == 0, 0.0, variance)


def welch_t(a, b):
    """Welch's t statistic of ``b`` against ``a`` along axis 0 (unequal variances).

    Groups without spread give t = +-inf where their means differ by more than 1e-6 (float32
    rounding), else 0; a group of fewer than two cells gives NaN.

    Examples
    --------
    >>> from sklearn_deeploc.screen import welch_t
    >>> float(welch_t([0.1, 0.2, 0.3], [0.5, 0.7, 0.9]).round(3))
    3.873
    >>> float(welch_t([0.1, 0.1], [0.9, 0.9])), float(welch_t([0.1], [0.9, 0.9]))
    (inf, nan)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.ndim == 0 or b.ndim == 0 or a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"welch_t compares values per cell of the same shape; got shapes {a.shape} and "
            f"{b.shape}."
        )
    if min(len(a), len(b)) < 2:
        return np.full(a.shape[1:], np.nan)
    moments = [
        (x.mean(axis=0), _exact_variance(x.var(axis=0, ddof=1), np.ptp(x, axis=0)), len(x))
        for x in (a, b)
    ]
    return _welch(*moments[0], *moments[1])


def _mixture_posterior(scores, prior, min_std, n_iter, tol):
    """EM fit of :func:`outlier_posterior`'s mixture to finite scores; the outlier posterior."""
    # The uniform spans at least +-3 min_std: a narrower one would call the background's
    # own bulk outliers, its density growing without bound as the range shrinks.
    uniform = prior / max(np.ptp(scores), 6 * min_std)
    # A robust start: the spread of all scores would hold the outliers, and EM could stay there
    mean = np.median(scores)
    std = max(1.4826 * stats.median_abs_deviation(scores), min_std)
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


def _is_number(value):
    """Whether ``value`` is a real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def outlier_posterior(scores, prior=0.01, n_iter=200, tol=1e-8, *, min_std=1.0):
    """Posterior of each score under the uniform (outlier) part of a Gaussian + uniform mixture.

    The Gaussian (background: no change) is fitted by EM; the uniform spans the observed range (at
    least +-3 ``min_std``) with fixed weight ``prior``. Only finite scores are fitted: an infinite
    score has posterior 1, a NaN score NaN, and so do all scores when fewer than two are finite.

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
        Floor of the background's standard deviation (1, that of Student's t, keeps ties of
        many t = 0 from making every small nonzero t an outlier).

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
    if not _is_number(prior) or not 0 < prior < 1:
        raise ValueError(
            f"prior must be a probability strictly between 0 and 1 (the paper uses 0.01); "
            f"got {prior!r}."
        )
    if not _is_number(min_std) or not min_std > 0:
        raise ValueError(f"min_std must be a number > 0; got {min_std!r}.")
    if not _is_number(tol) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0; got {tol!r}.")
    check_positive_int(n_iter, "n_iter")
    if scores is None:
        raise ValueError("scores is None; expected an array of scores.")
    scores = np.asarray(scores, dtype=float)
    posterior = np.where(np.isinf(scores), 1.0, np.nan)
    finite = np.isfinite(scores)
    if finite.sum() >= 2:
        posterior[finite] = _mixture_posterior(scores[finite], prior, min_std, n_iter, tol)
    return posterior


def _examples(labels):
    """The first three labels, for an error message."""
    shown = ", ".join(repr(label) for label in labels[:3].tolist())
    return shown + (", ..." if len(labels) > 3 else "")


def _check_shared_proteins(groups_a, groups_b):
    """The proteins of both screens, refusing none."""
    # pandas' equality, as in the per-protein groupby: numpy's intersect1d would
    # promote 1 and '1' (or b'p' and 'p') to one type and find a false overlap.
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
    return mean, _exact_variance(variance, spread), counts


def _status(n_a, n_b, posterior):
    """Why each protein has a score, or has none: "scored" or the reason."""
    conditions = [n_a == 0, n_b == 0, (n_a < 2) | (n_b < 2), np.isnan(posterior)]
    reasons = ["only in screen B", "only in screen A", "too few cells", "too few proteins"]
    return np.select(conditions, reasons, default="scored")


def localization_changes(proba_a, groups_a, proba_b, groups_b, classes=None, *, prior=0.01):
    """Per protein and class, the change in localization between two screens.

    Welch's t compares each protein's probabilities of a class in screen B (treated)
    against screen A (untreated); a t more likely under the outlier part of
    :func:`outlier_posterior`'s mixture (per class) is a significant change. A protein that
    cannot be scored gets t = NaN, ``significant`` ``pd.NA`` and a ``status`` saying why.

    Parameters
    ----------
    proba_a, proba_b : array-like or DataFrame of shape (n_cells, n_classes)
        Per-cell probabilities of the two screens (``predict_proba``); DataFrame columns
        are matched by name.
    groups_a, groups_b : array-like of shape (n_cells,)
        Protein (or strain) of each cell; no missing values, one type in both screens.
    classes : sequence, optional
        Distinct class names; default a DataFrame's column names, else ``0 .. n_classes - 1``.
    prior : float, default=0.01
        Weight of the outliers in each class's mixture (see :func:`outlier_posterior`).

    Returns
    -------
    pandas.DataFrame
        Columns ``protein``, ``class``, ``t``, ``posterior`` (of the outlier part), ``significant``
        (nullable boolean), ``n_cells_a``, ``n_cells_b`` and ``status`` (``"scored"``, ``"too few
        cells"``, ``"only in screen A"``, ``"only in screen B"``, or ``"too few proteins"`` when a
        class has fewer than two finite scores to fit).

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
    proba_a, classes, groups_a = check_proba_table(
        proba_a, classes, name="proba_a", groups=groups_a, groups_name="groups_a"
    )
    proba_b, classes, groups_b = check_proba_table(
        proba_b, classes, name="proba_b", groups=groups_b, groups_name="groups_b"
    )
    _check_shared_proteins(groups_a, groups_b)
    proteins = np.union1d(groups_a, groups_b)  # one type now: no promotion
    mean_a, var_a, n_a = _per_protein(proba_a, groups_a, proteins)
    mean_b, var_b, n_b = _per_protein(proba_b, groups_b, proteins)
    t = _welch(mean_a, var_a, n_a[:, None], mean_b, var_b, n_b[:, None])
    frames = []
    for k, name in enumerate(classes):
        posterior = outlier_posterior(t[:, k], prior)
        significant = pd.array(posterior > 0.5, dtype="boolean")
        significant[np.isnan(posterior)] = pd.NA
        scores = {"t": t[:, k], "posterior": posterior, "significant": significant}
        counts = {"n_cells_a": n_a, "n_cells_b": n_b, "status": _status(n_a, n_b, posterior)}
        frames.append(pd.DataFrame({"protein": proteins, "class": name, **scores, **counts}))
    return pd.concat(frames, ignore_index=True)


def abundance_changes(intensity_a, groups_a, intensity_b, groups_b, *, threshold=1.0):
    """Log2 fold change of mean intensity per protein: treated (B) over untreated (A).

    Parameters
    ----------
    intensity_a, intensity_b : array-like of shape (n_cells,)
        A finite per-cell intensity (e.g. the mean protein-channel intensity above background).
    groups_a, groups_b : array-like of shape (n_cells,)
        Protein of each cell; no missing values.
    threshold : float, default=1.0
        ``|log2 ratio| > threshold`` is significant (default: a two-fold change).

    Returns
    -------
    pandas.DataFrame
        Columns ``protein``, ``mean_a``, ``mean_b``, ``log2_ratio``,
        ``significant``; one row per protein present in both screens.

    Examples
    --------
    >>> from sklearn_deeploc.screen import abundance_changes
    >>> abundance_changes([10, 10, 5], ["p", "p", "q"], [40, 6], ["p", "q"])
      protein  mean_a  mean_b  log2_ratio  significant
    0       p    10.0    40.0    2.000000         True
    1       q     5.0     6.0    0.263034        False
    """
    if not _is_number(threshold) or not 0 <= threshold < np.inf:
        raise ValueError(f"threshold must be finite and >= 0 (log2 units); got {threshold!r}.")
    means = {}
    for side, intensity, groups in (("a", intensity_a, groups_a), ("b", intensity_b, groups_b)):
        if np.ndim(intensity) != 1:
            raise ValueError(
                f"intensity_{side} must have shape (n_cells,); got {np.shape(intensity)}."
            )
        intensity, _, groups = check_proba_table(
            np.asarray(intensity, dtype=float)[:, None],
            name=f"intensity_{side}",
            groups=groups,
            groups_name=f"groups_{side}",
            probabilities=False,
        )
        means[side] = pd.Series(intensity[:, 0]).groupby(groups).mean()
    shared = _check_shared_proteins(means["a"].index, means["b"].index)
    both = pd.DataFrame({f"mean_{side}": mean.reindex(shared) for side, mean in means.items()})
    for side in "ab":
        mean = both[f"mean_{side}"]
        bad = ~((mean > 0) & np.isfinite(mean))
        if bad.any():
            protein = mean.index[bad.to_numpy()].tolist()[0]
            raise ValueError(
                f"Mean intensities must be positive and finite for a log ratio; in screen "
                f"{side.upper()}, {int(bad.sum())} protein(s) are not, the first is "
                f"{protein!r} (mean {mean.loc[protein]:.3g}). Subtract a background that "
                "keeps every protein above zero."
            )
    both["log2_ratio"] = np.log2(both["mean_b"] / both["mean_a"])
    both["significant"] = both["log2_ratio"].abs() > threshold
    return both.rename_axis("protein").reset_index()
