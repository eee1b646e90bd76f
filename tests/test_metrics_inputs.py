import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LinearRegression
from sklearn.metrics import average_precision_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sklearn_deeploc.metrics import (
    class_scores,
    evaluate,
    mean_average_precision_scorer,
    per_class_average_precision,
)

PROBA = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])


@pytest.mark.parametrize("metric", [per_class_average_precision, evaluate])
@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c", "d"]])
def test_one_score_column_per_class(metric, classes):
    with pytest.raises(ValueError, match=rf"shape \(n_cells, {len(classes)}\); got shape \(4, 3\)"):
        metric(["a", "b", "a", "c"], PROBA, classes)


@pytest.mark.parametrize("metric", [per_class_average_precision, evaluate])
@pytest.mark.parametrize(
    ("y_true", "classes", "shown"),
    [
        ([0, 1, 0, 2], ["0", "1", "2"], r"\[0, 1, 2\]"),
        (["0", "1", "0", "2"], [0, 1, 2], r"\['0', '1', '2'\]"),
    ],
    ids=["int-labels-str-classes", "str-labels-int-classes"],
)
def test_labels_of_another_type_than_the_classes_are_refused(metric, y_true, classes, shown):
    with pytest.raises(ValueError, match=rf"4 cell\(s\) labelled {shown}.*0 and '0' differ"):
        metric(y_true, PROBA, classes)


@pytest.mark.parametrize("metric", [per_class_average_precision, evaluate])
def test_a_label_outside_the_classes_is_named(metric):
    with pytest.raises(ValueError, match=r"1 cell\(s\) labelled \['z'\], which are not among"):
        metric(["a", "b", "z", "c"], PROBA, ["a", "b", "c"])


def test_duplicate_classes_are_refused():
    with pytest.raises(
        ValueError,
        match=r"classes must be distinct; 'a' appears more than once in \['a', 'a', 'b'\]",
    ):
        evaluate(["a", "b", "a", "b"], PROBA, ["a", "a", "b"])


def test_the_scorer_warns_about_unseen_labels_and_counts_them_as_negatives():
    X, y = [[0.0], [0.1], [1.0], [1.1]], ["a", "a", "b", "b"]
    model = DummyClassifier(strategy="stratified", random_state=0).fit(X, y)
    X_test, y_test = [[0.0], [1.0], [2.0], [3.0]], ["a", "b", "new", "new"]
    scores = model.predict_proba(X_test)
    truth = np.array(y_test)[:, None] == np.array(["a", "b"])
    expected = np.mean([average_precision_score(truth[:, k], scores[:, k]) for k in range(2)])
    with pytest.warns(UserWarning, match=r"2 cell\(s\) are labelled \['new'\]"):
        assert mean_average_precision_scorer(model, X_test, y_test) == pytest.approx(expected)


def test_one_vs_one_decision_functions_are_refused():
    X = np.arange(6.0)[:, None]
    y = ["a", "a", "b", "b", "c", "c"]
    ovo = make_pipeline(StandardScaler(), SVC(kernel="linear", decision_function_shape="ovo"))
    with pytest.raises(ValueError, match="decision_function_shape='ovo' gives one score per pair"):
        class_scores(ovo.fit(X, y), X)
    binary = SVC(kernel="linear", decision_function_shape="ovo").fit(X[:4], y[:4])
    assert class_scores(binary, X[:4]).shape == (4, 2)


def test_an_estimator_without_scores_is_refused():
    with pytest.raises(ValueError, match="LinearRegression has neither predict_proba nor"):
        class_scores(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), [[0.0]])


@pytest.mark.parametrize("metric", [per_class_average_precision, evaluate])
def test_labels_given_as_none_are_refused(metric):
    with pytest.raises(ValueError, match="y_true is None; expected one label per cell"):
        metric(None, PROBA, ["a", "b", "c"])
