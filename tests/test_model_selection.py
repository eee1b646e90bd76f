import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc import DeepLocNet
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.featurizer import FeatureCache
from sklearn_deeploc.model_selection import HEADS, compare_heads, transfer_curve

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
