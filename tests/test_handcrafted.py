import warnings

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_config
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.handcrafted import (
    HandcraftedFeatures,
    SubsetSVMEnsemble,
    feature_names,
    make_classical_head,
)
from sklearn_deeploc.metrics import mean_average_precision_scorer
from sklearn_deeploc.model_selection import FeatureCache

CLASSES = [
    "NUCLEI",
    "VACUOLE",
    "CELLPERIPHERY",
    "ER",
    "MITOCHONDRIA",
    "NUCLEARPERIPHERY",
    "PEROXISOME",
    "VACUOLARMEMBRANE",
]


@pytest.fixture(scope="module")
def screen():
    """Source-style cells (cytosolic marker) and target-style cells (rim marker)."""
    source, _ = make_yeast_cells(2, CLASSES, random_state=0)
    target, _ = make_yeast_cells(2, CLASSES, style="target", random_state=1)
    return np.concatenate([source, target])


@pytest.fixture(scope="module")
def features(screen):
    return HandcraftedFeatures().fit(screen).transform(screen)


def _odd_cells():
    """Crops with nothing to measure: blank, constant, one bright pixel, noise."""
    blank = np.zeros((2, 64, 64), np.float32)
    constant = np.full((2, 64, 64), 33000.0, np.float32)
    protein_spot, marker_spot = blank.copy(), blank.copy()
    protein_spot[0, 10, 20] = 5000.0
    marker_spot[1, 32, 32] = 5000.0
    noise = np.random.default_rng(0).normal(100.0, 3.0, (2, 64, 64)).astype(np.float32)
    return np.stack([blank, constant, protein_spot, marker_spot, noise])


def test_features_are_finite_on_empty_and_constant_cells():
    features = HandcraftedFeatures().fit_transform(_odd_cells())
    assert features.dtype == np.float32
    assert np.isfinite(features).all()


@pytest.mark.parametrize(
    "transform",
    [
        lambda X: np.rot90(X, 1, axes=(2, 3)),
        lambda X: np.rot90(X, 2, axes=(2, 3)),
        lambda X: np.rot90(X, 3, axes=(2, 3)),
        lambda X: X[:, :, ::-1],
        lambda X: X[:, :, :, ::-1],
    ],
    ids=["rot90", "rot180", "rot270", "flip_rows", "flip_columns"],
)
def test_every_feature_is_invariant_to_rotations_and_flips(screen, features, transform):
    # Every feature is built to be invariant: intensity statistics, Haralick
    # (mean over the 4 directions), Hu and Zernike magnitudes, radial rings,
    # correlations. The watershed that splits touching cells breaks ties in
    # raster order, so after a 90-degree turn a mask can differ by a pixel:
    # the tolerance is a fraction of each feature's spread over the cells.
    moved = HandcraftedFeatures().fit_transform(np.ascontiguousarray(transform(screen)))
    tolerance = 0.25 * features.std(axis=0) + 1e-5
    assert (np.abs(moved - features) <= tolerance).all()


def test_names_match_the_features(screen, features):
    featurizer = HandcraftedFeatures(haralick_distances=(1, 3), zernike_degree=4, radial_bins=3)
    out = featurizer.fit_transform(screen[:3])
    names = featurizer.get_feature_names_out()
    assert out.shape == (3, len(names)) == (3, featurizer.n_features_out_)
    assert len(set(names)) == len(names)
    for name in ("protein_mean_in_cell", "haralick_contrast_d3", "zernike_4_2"):
        assert name in names
    assert "radial_fraction_3of3" in names and "corr_protein_marker" in names
    assert features.shape[1] == len(feature_names())


def test_set_output_pandas_names_the_columns(screen):
    frame = HandcraftedFeatures().set_output(transform="pandas").fit_transform(screen[:2])
    assert list(frame.columns) == feature_names()


def test_flat_layout_and_dataframe_give_the_same_features(screen, features):
    flat = screen.reshape(len(screen), -1)
    featurizer = HandcraftedFeatures().fit(flat)
    np.testing.assert_array_equal(featurizer.transform(flat), features)
    frame = pd.DataFrame(flat, columns=[f"px{i}" for i in range(flat.shape[1])])
    from_frame = HandcraftedFeatures().fit(frame)
    np.testing.assert_array_equal(from_frame.transform(frame), features)
    assert from_frame.n_features_in_ == 2 * 64 * 64
    assert from_frame.feature_names_in_[0] == "px0"


def test_parallel_features_equal_serial(screen, features):
    # Threads keep the test fast (no worker start-up); the chunking is the same.
    with parallel_config(backend="threading"):
        parallel = HandcraftedFeatures(n_jobs=2).fit_transform(screen)
    np.testing.assert_array_equal(parallel, features)


def test_camera_offset_and_gain_do_not_change_features(screen, features):
    # The per-cell stretch makes features comparable across cameras.
    recorded = 3.0 * screen + 30000.0
    moved = HandcraftedFeatures().fit_transform(recorded)
    np.testing.assert_allclose(moved, features, rtol=1e-3, atol=1e-3)


def test_a_feature_cache_measures_each_cell_once(screen, features):
    cache = FeatureCache()
    featurizer = HandcraftedFeatures(cache=cache).fit(screen)
    np.testing.assert_array_equal(featurizer.transform(screen), features)
    clone(featurizer).fit(screen[:4]).transform(screen[::2])
    assert (cache.n_computed, cache.n_hits) == (len(screen), len(screen) // 2)
    HandcraftedFeatures(cache=cache, radial_bins=2).fit(screen).transform(screen[:3])
    assert cache.n_computed == len(screen) + 3  # other settings, other features


def test_lazy_and_dask_inputs_stream_in_blocks(screen, features, tmp_path):
    h5py = pytest.importorskip("h5py")
    da = pytest.importorskip("dask.array")
    featurizer = HandcraftedFeatures().fit(screen)
    with h5py.File(tmp_path / "cells.h5", "w") as file:
        file["crops"] = screen
    with h5py.File(tmp_path / "cells.h5", "r") as file:
        np.testing.assert_array_equal(featurizer.transform(file["crops"]), features)
    lazy = featurizer.transform(da.from_array(screen, chunks=(5, 2, 64, 64)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), features)


def test_handcrafted_svm_pipeline_is_well_above_chance():
    X, y = make_yeast_cells(15, CLASSES, random_state=0)
    pipe = make_pipeline(HandcraftedFeatures(), SVC(kernel="linear"))
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    accuracy = cross_val_score(pipe, X, y, cv=cv).mean()
    assert accuracy > 3 / len(CLASSES)  # chance is 1/8


def test_classical_head_scores_average_precision():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)) + np.repeat(np.eye(3, 4) * 3, 20, axis=0)
    y = np.repeat(["a", "b", "c"], 20)
    head = make_classical_head(random_state=0).fit(X, y)
    np.testing.assert_allclose(head.predict_proba(X).sum(axis=1), 1.0)
    assert mean_average_precision_scorer(head, X, y) > 0.9
    again = make_classical_head(random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), head.predict_proba(X))


@pytest.mark.parametrize(
    "y", [["a", "b"], ["a", "a", "a", "a", "b"]], ids=["one_cell_each", "one_rare_cell"]
)
def test_classical_head_members_see_every_class(y):
    # Random 80% subsets of all cells could leave a member one class (libsvm
    # refuses); stratified subsets keep every class in every member.
    X = np.arange(len(y), dtype=float)[:, None] ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about small subsets either
        head = make_classical_head(random_state=0).fit(X, y)
    np.testing.assert_array_equal(head.predict(X), y)
    np.testing.assert_array_equal(head.predict_proba(X[-1:]), [[0.0, 1.0]])


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (["a"] * 4, "at least two classes.*\\['a'\\]"),
        (["a", 1, "b", 2], "mixes label types"),
    ],
)
def test_classical_head_refuses_unusable_labels(y, message):
    with pytest.raises(ValueError, match=message):
        make_classical_head(random_state=0).fit(np.eye(4), y)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"marker_channel": 2}, "marker_channel=2 is not a channel"),
        ({"protein_channel": -1}, "'protein_channel' parameter"),
        ({"gray_levels": 300}, "'gray_levels' parameter"),
        ({"haralick_distances": ()}, "'haralick_distances' parameter"),
        ({"haralick_distances": (1, 0)}, "'haralick_distances' parameter"),
        ({"radial_bins": 0}, "'radial_bins' parameter"),
        ({"stretch": (50, 10)}, "'stretch' parameter"),
        ({"stretch": (10, 10)}, "'stretch' parameter"),
        ({"stretch": (-5, 200)}, "'stretch' parameter"),
        ({"stretch": (0, 100, 3)}, "'stretch' parameter"),
        ({"stretch": ("a", "b")}, "'stretch' parameter"),
    ],
)
def test_bad_settings_are_refused_at_fit(screen, params, message):
    with pytest.raises(ValueError, match=message):
        HandcraftedFeatures(**params).fit(screen[:2])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"marker_channel": 3}, "marker_channel=3 is not a channel"),
        ({"gray_levels": 300}, "'gray_levels' parameter"),
        ({"gray_levels": 0}, "'gray_levels' parameter"),
        ({"haralick_distances": ()}, "'haralick_distances' parameter"),
        ({"radial_bins": 0}, "'radial_bins' parameter"),
        ({"stretch": (50, 10)}, "'stretch' parameter"),
    ],
)
def test_settings_set_after_fit_are_checked_again(screen, params, message):
    featurizer = HandcraftedFeatures().fit(screen[:2]).set_params(**params)
    with pytest.raises(ValueError, match=message):
        featurizer.transform(screen[:2])


def test_a_feature_count_changed_after_fit_needs_a_new_fit(screen):
    featurizer = HandcraftedFeatures().fit(screen[:2]).set_params(zernike_degree=2)
    for method in (featurizer.transform, lambda X: featurizer.get_feature_names_out()):
        with pytest.raises(ValueError, match="72 features per cell.*Call fit again"):
            method(screen[:2])
    refitted = featurizer.fit(screen[:2])
    assert refitted.transform(screen[:2]).shape == (2, 72) == (2, refitted.n_features_out_)


def test_settings_that_keep_the_count_apply_after_fit(screen, features):
    featurizer = HandcraftedFeatures().fit(screen[:2])
    featurizer.set_params(gray_levels=16, haralick_distances=(1, 2, 8))
    out = featurizer.transform(screen[:2])
    fresh = HandcraftedFeatures(**featurizer.get_params()).fit(screen[:2])
    np.testing.assert_array_equal(out, fresh.transform(screen[:2]))
    assert "haralick_contrast_d8" in featurizer.get_feature_names_out()
    assert not np.array_equal(out, features[:2])


@pytest.mark.parametrize("side", [1, 2, 3, 4])
def test_crops_of_a_few_pixels_get_finite_features(side):
    crops = np.random.default_rng(0).random((3, 2, side, side))
    crops[0] = 0.0  # no cell: the fallback disc must still hold a pixel
    features = HandcraftedFeatures(image_size=side).fit_transform(crops)
    assert features.shape == (3, len(feature_names()))
    assert np.isfinite(features).all()


def test_transform_refuses_another_channel_count(screen):
    featurizer = HandcraftedFeatures().fit(screen[:2])
    with pytest.raises(ValueError, match="Expected 2 channel"):
        featurizer.transform(np.zeros((1, 3, 64, 64)))


ONE_COLUMN = (
    "a table of one column is one channel of 1x1 pixels: marker_channel=1 does not exist, "
    "and the ValueError says so in channels rather than in features"
)


@parametrize_with_checks(
    [HandcraftedFeatures(image_size=1), SubsetSVMEnsemble(n_estimators=3, random_state=0)],
    expected_failed_checks=lambda estimator: (
        {"check_fit2d_1feature": ONE_COLUMN} if isinstance(estimator, HandcraftedFeatures) else {}
    ),
)
def test_sklearn_compatible(estimator, check):
    # The checks feed small tables: with image_size=1 a table of width C is C
    # channels of 1x1 pixels. The classical head is an ordinary classifier.
    check(estimator)


def test_unstretched_crops_are_refused_without_a_stretch():
    X, _ = make_yeast_cells(2, ["NUCLEI"], random_state=0)  # raw camera counts
    with pytest.raises(ValueError, match="stretch=None expects crops in \\[0, 1\\]; got values"):
        HandcraftedFeatures(stretch=None).fit_transform(X)


def test_a_marker_bright_over_most_of_the_crop_gives_the_centred_disc():
    from sklearn_deeploc.handcrafted import cell_mask

    disc = cell_mask(np.zeros((64, 64)))
    marker = np.ones((64, 64))
    marker[:20, :20] = 0.0  # a brightfield-like marker: "foreground" everywhere but a corner
    np.testing.assert_array_equal(cell_mask(marker), disc)
    marker[:] = 0.0
    marker[20:44, 16:48] = 1.0  # a cell of a fifth of the crop is kept
    assert cell_mask(marker)[20:44, 16:48].all() and not cell_mask(marker)[:10].any()
