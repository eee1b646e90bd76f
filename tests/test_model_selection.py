import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc import DeepLocNet
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.featurizer import FeatureCache
from sklearn_deeploc.model_selection import (
    HEADS,
    compare_heads,
    fit_head,
    per_class_comparison,
    transfer_curve,
)

NETWORK = {"max_iter": 3, "batch_size": 16}


@pytest.fixture(scope="module")
def target():
    return make_yeast_cells(6, ["ER", "MITOCHONDRIA", "GOLGI"], style="target", random_state=3)


@pytest.fixture
def count_featurised_cells(monkeypatch):
    """Counts cells through DeepLocNet.forward_features (five crops = one cell)."""
    seen = {"crops": 0}
    original = DeepLocNet.forward_features

    def counting(self, x, layer="fc2"):
        seen["crops"] += len(x)
        return original(self, x, layer)

    monkeypatch.setattr(DeepLocNet, "forward_features", counting)
    return seen


def test_search_has_one_row_per_head_with_finite_scores(source_model, target):
    X, y = target
    search, table = compare_heads(X, y, source_model, cv=2, network_params=NETWORK)
    assert sorted(table["head"]) == sorted(HEADS)
    scores = table.drop(columns="head").to_numpy(dtype=float)
    assert np.isfinite(scores).all()
    assert ((table["mean_accuracy"] >= 0) & (table["mean_accuracy"] <= 1)).all()
    assert {"mean_average_precision", "std_accuracy", "mean_fit_time"} <= set(table)
    assert search.best_estimator_.predict(X).shape == (len(X),)


def test_each_cell_is_featurised_once(source_model, target, count_featurised_cells):
    X, y = target
    compare_heads(X, y, source_model, heads=["svm", "knn", "forest"], cv=3)
    # Three heads x three folds x (train + test), but every cell only once, five crops each.
    assert count_featurised_cells["crops"] == 5 * len(X)


def test_cache_serves_repeats_and_keys_on_content(source_model, target):
    from sklearn_deeploc import DeepLocFeaturizer

    X, _ = target
    cache = FeatureCache()
    featurizer = DeepLocFeaturizer(source_model, cache=cache).fit(X)
    first = featurizer.transform(X)
    again = featurizer.transform(X[::-1])
    np.testing.assert_array_equal(again, first[::-1])
    assert (cache.n_computed, cache.n_hits) == (len(X), len(X))
    changed = X[:1].copy()
    changed[0, 0, 0, 0] += 1
    featurizer.transform(changed)
    assert cache.n_computed == len(X) + 1
    other_layer = DeepLocFeaturizer(source_model, layer="fc1", cache=cache).fit(X)
    assert other_layer.transform(X[:2]).shape == (2, 16)
    assert cache.n_computed == len(X) + 3


def test_search_is_reproducible(source_model, target):
    X, y = target
    kwargs = {"heads": ["svm", "finetune_all"], "cv": 2, "network_params": NETWORK}
    _, first = compare_heads(X, y, source_model, **kwargs)
    _, again = compare_heads(X, y, source_model, **kwargs)
    pd.testing.assert_frame_equal(
        first.drop(columns="mean_fit_time"), again.drop(columns="mean_fit_time")
    )


def test_unknown_head(source_model, target):
    with pytest.raises(ValueError, match="heads must be a non-empty subset"):
        compare_heads(*target, source_model, heads=["lasso"])


def test_transfer_curve_sizes_draws_and_reproducibility(source_model, target):
    X, y = target
    X_test, y_test = make_yeast_cells(
        3, ["ER", "MITOCHONDRIA", "GOLGI"], style="target", random_state=4
    )
    kwargs = {
        "sizes": (1, 3),
        "n_draws": 2,
        "heads": ("finetune_all", "scratch", "knn"),
        "network_params": NETWORK,
        "random_state": 0,
    }
    curve = transfer_curve(X, y, X_test, y_test, source_model, **kwargs)
    assert len(curve) == 2 * 2 * 3
    assert sorted(curve["cells_per_class"].unique()) == [1, 3]
    assert sorted(curve["draw"].unique()) == [0, 1]
    assert set(curve["n_train"]) == {3, 9}
    assert curve["accuracy"].between(0, 1).all()
    again = transfer_curve(X, y, X_test, y_test, source_model, **kwargs)
    pd.testing.assert_frame_equal(curve.drop(columns="fit_time"), again.drop(columns="fit_time"))


def test_transfer_curve_bad_head(source_model, target):
    with pytest.raises(ValueError, match="heads must be a non-empty subset"):
        transfer_curve(*target, *target, source_model, heads=("magic",))


def test_classical_head_measures_each_cell_once_across_folds(source_model, target, monkeypatch):
    from sklearn_deeploc.handcrafted import HandcraftedFeatures

    X, y = target
    measured = []
    real = HandcraftedFeatures._measure

    def counting(self, crops):
        measured.append(len(crops))
        return real(self, crops)

    monkeypatch.setattr(HandcraftedFeatures, "_measure", counting)
    search, table = compare_heads(X, y, source_model, heads=["classical", "svm"], cv=3)
    assert sum(measured) == len(X)
    assert set(table["head"]) == {"classical", "svm"}
    assert search.head_names_ == ["classical", "svm"]


def test_fit_head_returns_independent_models(source_model, target):
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    X, y = target
    X_other, y_other = make_yeast_cells(4, ["ACTIN", "BUDTIP"], style="target", random_state=5)
    search, _ = compare_heads(X, y, source_model, heads=["svm"], cv=2)
    a = fit_head(search, "svm", X, y)
    b = fit_head(search, "svm", X_other, y_other)
    assert a is not b and a[-1] is not b[-1]
    assert a.classes_.tolist() == ["ER", "GOLGI", "MITOCHONDRIA"]
    assert a[0] is b[0]  # the frozen featurizer is shared, not copied
    with pytest.raises(NotFittedError):
        check_is_fitted(search.cv_results_["params"][0]["head"])


def test_fit_head_keeps_the_pretrained_network_by_reference(source_model, target):
    X, y = target
    search, _ = compare_heads(
        X, y, source_model, heads=["finetune_fc"], cv=2, network_params=NETWORK
    )
    model = fit_head(search, "finetune_fc", X, y)
    assert model[-1].pretrained is search.cv_results_["params"][0]["head"].pretrained
    with pytest.raises(ValueError, match="head must be one of"):
        fit_head(search, "svm", X, y)


def test_compare_heads_checks_labels_and_heads(source_model, target):
    X, y = target
    missing = np.where(y == "ER", None, y)
    with pytest.raises(ValueError, match="y contains missing values"):
        compare_heads(X, missing, source_model, heads=["svm"], cv=2)
    mixed = [1 if label == "ER" else label for label in y]
    with pytest.raises(ValueError, match="y mixes label types"):
        compare_heads(X, mixed, source_model, heads=["svm"], cv=2)
    with pytest.raises(ValueError, match="y has 17 labels but X has 18 cells"):
        compare_heads(X, y[:-1], source_model, heads=["svm"], cv=2)
    with pytest.raises(ValueError, match=r"each head once; \['svm'\] repeats"):
        compare_heads(X, y, source_model, heads=["svm", "knn", "svm"], cv=2)


def test_compare_heads_knn_shrinks_k_to_the_smallest_training_fold(source_model, target):
    X, y = target
    search, table = compare_heads(X[:6], y[:6], source_model, heads=["knn"], cv=2)
    assert search.best_estimator_[-1].n_neighbors == 3
    assert table["mean_accuracy"].between(0, 1).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": (0,)}, r"sizes must be positive integers .*; got \(0,\)"),
        ({"sizes": (-1,)}, r"sizes must be positive integers .*; got \(-1,\)"),
        ({"sizes": (1.5,)}, r"sizes must be positive integers .*; got \(1.5,\)"),
        ({"sizes": ()}, r"sizes must be positive integers .*one or more; got \(\)"),
        ({"n_draws": 0}, "n_draws must be a positive integer; got 0"),
    ],
)
def test_transfer_curve_refuses_bad_sizes_and_draws(source_model, target, kwargs, message):
    with pytest.raises(ValueError, match=message):
        transfer_curve(*target, *target, source_model, heads=("svm",), **kwargs)


def test_transfer_curve_checks_labels_match_cells(source_model, target):
    X, y = target
    with pytest.raises(ValueError, match="y_pool has 18 labels but X_pool has 12 cells"):
        transfer_curve(X[:12], y, X, y, source_model, sizes=(1,), heads=("svm",))
    with pytest.raises(ValueError, match="y_pool has 17 labels but X_pool has 18 cells"):
        transfer_curve(X, y[:-1], X, y, source_model, sizes=(1,), heads=("svm",))
    with pytest.raises(ValueError, match="y_test has 18 labels but X_test has 6 cells"):
        transfer_curve(X, y, X[:6], y, source_model, sizes=(1,), heads=("svm",))


def test_per_class_comparison_needs_one_score_column_per_class():
    from sklearn.svm import SVC

    X, y = make_yeast_cells(3, ["ER", "GOLGI", "MITOCHONDRIA", "NUCLEI"], random_state=0)
    flat = X.reshape(len(X), -1)
    ovr = SVC(kernel="linear").fit(flat, y)
    assert per_class_comparison({"ovr": ovr}, flat, y).shape == (5, 1)
    for n_classes in (3, 4):  # three pairs of three classes: the shape alone cannot tell
        keep = np.isin(y, np.unique(y)[:n_classes])
        ovo = SVC(kernel="linear", decision_function_shape="ovo").fit(flat[keep], y[keep])
        with pytest.raises(ValueError, match="'ovo' scores: one column per pair of classes"):
            per_class_comparison({"ovo": ovo}, flat[keep], y[keep])
    with pytest.raises(ValueError, match="at least one fitted classifier"):
        per_class_comparison({}, flat, y)
