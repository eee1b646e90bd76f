"""The paper's evaluation: per-class average precision, mean AP, accuracy, confusion matrix."""

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix

from .validation import check_proba_table


def _shown(labels, limit=5):
    """Labels as their reprs, so that 0 and '0' (or b'ER' and 'ER') look different."""
    labels = np.asarray(labels).tolist()
    return repr(labels[:limit])[:-1] + (", ...]" if len(labels) > limit else "]")


def _check_scores(y_true, proba, classes, *, refuse_unknown=True):
    """Validated ``y_true, proba, classes``; labels outside the classes refused or warned about."""
    proba, classes, y_true = check_proba_table(
        proba, classes, groups=y_true, groups_name="y_true", probabilities=False
    )
    classes = np.asarray(classes)
    unknown = ~np.isin(y_true, classes)
    n_cells, labels = int(unknown.sum()), _shown(np.unique(y_true[unknown]))
    if n_cells and refuse_unknown:
        raise ValueError(
            f"y_true has {n_cells} cell(s) labelled {labels}, which are not among "
            f"the classes {_shown(classes)}. Expected labels of the classes, of the same "
            "type (0 and '0' differ); drop those cells or pass the classes they belong to."
        )
    if n_cells:
        warnings.warn(
            f"{n_cells} cell(s) are labelled {labels}, which the estimator was not "
            f"trained on (its classes are {_shown(classes)}); they count as negatives of "
            "every class. In cross-validation, use fewer folds or more cells of that class.",
            UserWarning,
            stacklevel=3,
        )
    return y_true, proba, classes


def _average_precisions(y_true, proba, classes):
    """AP per class, one-vs-rest; cells of other labels are negatives of every class."""
    truth = y_true[:, None] == classes[None, :]
    ap = [
        average_precision_score(truth[:, k], proba[:, k]) if truth[:, k].any() else np.nan
        for k in range(len(classes))
    ]
    return pd.Series(ap, index=classes.tolist(), name="average_precision")


def per_class_average_precision(y_true, proba, classes):
    """Area under the precision-recall curve of each class (one-vs-rest).

    Parameters
    ----------
    y_true : array-like of shape (n,)
    proba : array-like of shape (n, n_classes)
        Scores, columns in the order of ``classes``.
    classes : sequence
        Class labels (``clf.classes_``).

    Returns
    -------
    pandas.Series
        AP per class; NaN for a class with no cell in ``y_true``.

    Examples
    --------
    >>> from sklearn_deeploc.metrics import per_class_average_precision
    >>> per_class_average_precision(["a", "b"], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"]).tolist()
    [1.0, 1.0]
    """
    return _average_precisions(*_check_scores(y_true, proba, classes))


def evaluate(y_true, proba, classes):
    """Accuracy, mean AP, per-class AP and the row-normalised confusion matrix.

    Parameters
    ----------
    y_true : array-like of shape (n,)
    proba : array-like of shape (n, n_classes)
        ``predict_proba`` output.
    classes : sequence
        ``clf.classes_``.

    Returns
    -------
    dict
        ``accuracy`` and ``mean_average_precision`` (floats, the mean over classes present),
        ``average_precision`` (Series), ``confusion`` (DataFrame, rows = true class, summing to 1).

    Examples
    --------
    >>> from sklearn_deeploc.metrics import evaluate
    >>> result = evaluate(["a", "b", "b"], [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], ["a", "b"])
    >>> round(result["accuracy"], 3), float(result["confusion"].loc["b", "a"])
    (0.667, 0.5)
    """
    y_true, proba, classes = _check_scores(y_true, proba, classes)
    y_pred = classes[proba.argmax(axis=1)]
    ap = _average_precisions(y_true, proba, classes)
    confusion = confusion_matrix(y_true, y_pred, labels=classes, normalize="true")
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "mean_average_precision": float(ap.mean(skipna=True)),
        "average_precision": ap,
        "confusion": pd.DataFrame(confusion, index=ap.index, columns=ap.index),
    }


def mean_average_precision_scorer(estimator, X, y):
    """Scorer (``scoring=``) of the mean over classes of per-class average precision.

    Ranks cells by :func:`class_scores`; unlike sklearn's ``"average_precision"`` it takes string
    labels and two classes. Cells of a label the estimator was not trained on (a fold lacking a
    class) count as negatives of every class, with a warning naming the label.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> from sklearn_deeploc.metrics import mean_average_precision_scorer
    >>> X, y = [[0.0], [0.1], [1.0], [1.1]], ["a", "a", "b", "b"]
    >>> mean_average_precision_scorer(SVC(kernel="linear").fit(X, y), X, y)
    1.0
    """
    checked = _check_scores(y, class_scores(estimator, X), estimator.classes_, refuse_unknown=False)
    return float(_average_precisions(*checked).mean(skipna=True))


def class_scores(estimator, X):
    """Per-class scores to rank cells by: ``predict_proba``, else ``decision_function``.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> from sklearn_deeploc.metrics import class_scores
    >>> X, y = [[0.0], [0.1], [1.0], [1.1]], ["a", "a", "b", "b"]
    >>> class_scores(SVC(kernel="linear").fit(X, y), X).shape
    (4, 2)
    """
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)
    if not hasattr(estimator, "decision_function"):
        raise ValueError(
            f"{type(estimator).__name__} has neither predict_proba nor decision_function; "
            "expected a fitted classifier."
        )
    # Refused by setting, not by shape: three classes have three pairs too.
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if getattr(final, "decision_function_shape", None) == "ovo" and len(final.classes_) > 2:
        raise ValueError(
            "decision_function_shape='ovo' gives one score per pair of classes, not one per "
            "class; expected decision_function_shape='ovr' (SVC's default) to rank cells by class."
        )
    scores = estimator.decision_function(X)
    if scores.ndim == 1:  # binary: the score of classes_[1]
        scores = np.column_stack([-scores, scores])
    return scores
