"""The paper's evaluation: per-class average precision, mean AP, accuracy, confusion matrix."""

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix
from sklearn.preprocessing import label_binarize


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
    proba = np.asarray(proba, dtype=float)
    truth = label_binarize(np.asarray(y_true), classes=list(classes))
    if len(classes) == 2:  # label_binarize gives one column for two classes
        truth = np.column_stack([1 - truth[:, 0], truth[:, 0]])
    ap = [
        average_precision_score(truth[:, k], proba[:, k]) if truth[:, k].any() else np.nan
        for k in range(len(classes))
    ]
    return pd.Series(ap, index=list(classes), name="average_precision")


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
        ``accuracy`` (float), ``mean_average_precision`` (float, over the
        classes present), ``average_precision`` (Series) and ``confusion``
        (DataFrame, rows = true class, each row summing to 1).

    Examples
    --------
    >>> from sklearn_deeploc.metrics import evaluate
    >>> result = evaluate(["a", "b", "b"], [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], ["a", "b"])
    >>> round(result["accuracy"], 3), float(result["confusion"].loc["b", "a"])
    (0.667, 0.5)
    """
    classes = list(classes)
    proba = np.asarray(proba, dtype=float)
    y_true = np.asarray(y_true)
    y_pred = np.asarray(classes)[proba.argmax(axis=1)]
    ap = per_class_average_precision(y_true, proba, classes)
    confusion = confusion_matrix(y_true, y_pred, labels=classes, normalize="true")
    return {
        "accuracy": accuracy_score(y_true, y_pred),
        "mean_average_precision": float(ap.mean(skipna=True)),
        "average_precision": ap,
        "confusion": pd.DataFrame(confusion, index=classes, columns=classes),
    }


def mean_average_precision_scorer(estimator, X, y):
    """Scorer (``scoring=``) of the mean over classes of per-class average precision.

    Uses ``predict_proba`` when the estimator has it, else ``decision_function``
    (a linear SVM without probabilities), and works for string labels and for
    two classes, where sklearn's ``"average_precision"`` scorer does not.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> from sklearn_deeploc.metrics import mean_average_precision_scorer
    >>> X, y = [[0.0], [0.1], [1.0], [1.1]], ["a", "a", "b", "b"]
    >>> mean_average_precision_scorer(SVC(kernel="linear").fit(X, y), X, y)
    1.0
    """
    ap = per_class_average_precision(y, class_scores(estimator, X), estimator.classes_)
    return float(ap.mean(skipna=True))


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
    scores = estimator.decision_function(X)
    if scores.ndim == 1:  # binary: the score of classes_[1]
        scores = np.column_stack([-scores, scores])
    return scores
