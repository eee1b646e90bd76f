import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sklearn_deeploc.screen import (
    abundance_changes,
    aggregate,
    crop_cells,
    find_cells,
    localization_changes,
    outlier_posterior,
    welch_t,
)


@pytest.fixture
def field():
    return np.arange(2 * 100 * 120, dtype=np.float32).reshape(2, 100, 120)


@pytest.mark.parametrize(("centre", "start"), [(40.5, 37), (41.5, 38), (40.4, 36), (40.6, 37)])
def test_a_crop_is_centred_on_its_centre_halves_rounding_up(field, centre, start):
    result = crop_cells(field, [[centre, centre]], size=8)  # 40.5 and 41.5 alike: in the middle
    np.testing.assert_array_equal(result.crops[0], field[:, start : start + 8, start : start + 8])


def test_crop_inside_is_exact(field):
    result = crop_cells(field, [[50, 60]], size=64)
    np.testing.assert_array_equal(result.crops[0], field[:, 18:82, 28:92])
    assert result.index.tolist() == [0] and result.padded.tolist() == [False]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
@pytest.mark.parametrize("shape", [(2, 41, 50), (1, 40, 41)])  # an odd and an even count
def test_padding_is_each_channels_exact_median(dtype, shape):
    field = np.random.default_rng(3).integers(0, 200, shape).astype(dtype)
    crops = crop_cells(field, [[0, 0]], size=16, border="pad").crops
    expected = np.median(field.reshape(shape[0], -1), axis=1)
    np.testing.assert_array_equal(crops[0, :, 0, 0], expected.astype(np.float32))


def test_corner_and_half_outside_cells(field):
    centres = [[0, 0], [50, 119], [50, 60]]
    padded = crop_cells(field, centres, size=64, border="pad")
    assert padded.crops.shape == (3, 2, 64, 64)
    assert padded.padded.tolist() == [True, True, False]
    median = np.median(field[0])
    # The corner cell: the field's pixel (0, 0) at the crop centre, background elsewhere.
    assert padded.crops[0, 0, 32, 32] == field[0, 0, 0]
    assert padded.crops[0, 0, 0, 0] == median
    np.testing.assert_array_equal(padded.crops[1, :, :, : 32 + 1], field[:, 18:82, 87:120])
    dropped = crop_cells(field, centres, size=64, border="drop")
    assert dropped.index.tolist() == [2] and len(dropped.crops) == 1


def test_crop_larger_than_the_field(field):
    assert len(crop_cells(field, [[50, 60]], size=128, border="drop").crops) == 0
    result = crop_cells(field, [[50, 60]], size=128, border="pad")
    assert result.crops.shape == (1, 2, 128, 128) and result.padded.all()
    np.testing.assert_array_equal(result.crops[0, :, 14:114, 4:124], field)


def test_dataframe_centres_need_named_columns(field):
    frame = pd.DataFrame({"Center_X": [60.0], "Center_Y": [50.0]})
    result = crop_cells(field, frame, x_column="Center_X", y_column="Center_Y")
    np.testing.assert_array_equal(result.crops[0], field[:, 18:82, 28:92])
    with pytest.raises(ValueError, match="x_column= and y_column="):
        crop_cells(field, frame)
    with pytest.raises(ValueError, match="border must be one of"):
        crop_cells(field, frame, border="wrap", x_column="Center_X", y_column="Center_Y")


def test_find_cells_on_synthetic_discs():
    yy, xx = np.mgrid[:120, :120]
    truth = np.array([[30, 30], [30, 80], [85, 40], [90, 95]])
    marker = sum(((yy - r) ** 2 + (xx - c) ** 2 < 144) for r, c in truth).astype(float)
    image = np.stack(
        [np.zeros_like(marker), marker + 0.05 * np.random.default_rng(0).random(marker.shape)]
    )
    found = find_cells(image, channel=1)
    distances = np.linalg.norm(truth[:, None] - found[None], axis=2).min(axis=1)
    assert len(found) == 4 and (distances < 2).all()


def test_aggregate_on_known_groups():
    proba = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
    table = aggregate(proba, ["w1", "w1", "w2"], ["NUCLEI", "ER"])
    assert table.loc["w1", "n_cells"] == 2
    np.testing.assert_allclose(table.loc["w1", ["NUCLEI", "ER"]], [0.8, 0.2])
    np.testing.assert_allclose(table.loc["w2", ["NUCLEI", "ER"]], [0.2, 0.8])
    with pytest.raises(
        ValueError, match=r"groups has 1 labels for the 3 rows of proba; expected one per cell"
    ):
        aggregate(proba, ["w1"])
    with pytest.raises(ValueError, match="class is named 'n_cells', the column of the cell"):
        aggregate(proba, ["w1", "w1", "w2"], ["n_cells", "ER"])


def test_welch_t_equals_scipy(rng):
    a, b = rng.normal(0, 1, (30, 3)), rng.normal(0.5, 2, (45, 3))
    expected = stats.ttest_ind(b, a, equal_var=False).statistic
    np.testing.assert_allclose(welch_t(a, b), expected)


def test_mixture_flags_planted_outliers(rng):
    background = rng.normal(0, 1, 2000)
    planted = np.r_[np.full(10, 8.0), np.full(10, -8.0)]
    posterior = outlier_posterior(np.r_[background, planted])
    assert (posterior[2000:] > 0.5).sum() >= 19
    assert (posterior[:2000] > 0.5).sum() <= 20


def test_localization_changes_finds_the_moved_protein(rng):
    proteins = np.repeat([f"p{i}" for i in range(60)], 20)
    proba_a = rng.dirichlet([5, 5], len(proteins))
    proba_b = rng.dirichlet([5, 5], len(proteins))
    moved = proteins == "p7"
    proba_b[moved] = rng.dirichlet([1, 30], moved.sum())
    table = localization_changes(proba_a, proteins, proba_b, proteins, ["NUCLEI", "ER"])
    assert len(table) == 60 * 2
    hits = table[table["significant"]]
    assert set(hits["protein"]) == {"p7"}
    assert set(hits["class"]) == {"NUCLEI", "ER"}
    t_er = table[(table["protein"] == "p7") & (table["class"] == "ER")]["t"].item()
    assert t_er > 0


def test_abundance_changes_on_constructed_intensities():
    table = abundance_changes(
        [100, 100, 50, 80], ["a", "a", "b", "c"], [400, 45, 30], ["a", "b", "c"]
    )
    assert table["protein"].tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(table["log2_ratio"], [2.0, np.log2(0.9), np.log2(30 / 80)])
    assert table["significant"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="positive"):
        abundance_changes([0.0], ["a"], [1.0], ["a"])


def _real_field(shared_data):
    skimage_io = pytest.importorskip("skimage.io")
    folder = shared_data / "field_r01c01f01"
    image = np.stack(
        [skimage_io.imread(folder / f"r01c01f01p01-ch{k}sk1fk1fl1.tiff") for k in (1, 2, 3)]
    )
    return image, pd.read_csv(folder / "cells.csv")


def test_real_field_crops_and_cell_finding(shared_data):
    from scipy.spatial import cKDTree

    image, cells = _real_field(shared_data)
    result = crop_cells(image, cells, x_column="Center_X", y_column="Center_Y", border="drop")
    padded = crop_cells(image, cells, x_column="Center_X", y_column="Center_Y", border="pad")
    n_border = int(padded.padded.sum())
    print(
        f"{len(cells)} listed cells: {n_border} touch the border "
        f"(padded with border='pad', dropped with border='drop')"
    )
    assert len(result.crops) == len(cells) - n_border
    assert padded.crops.shape == (len(cells), 3, 64, 64)
    # The marker channels are brightest at the listed centres (the README's check).
    assert padded.crops[:, 2, 32, 32].mean() > 3 * image[2].mean()

    truth = cells[["Center_Y", "Center_X"]].to_numpy(float)
    found = find_cells(image, channel=1)
    recall = (cKDTree(found).query(truth)[0] <= 8).mean()
    extra = (cKDTree(truth).query(found)[0] > 8).sum()
    print(
        f"find_cells: {len(found)} detections, recall {recall:.3f} of the {len(truth)} "
        f"listed centres within 8 px, {extra} detections far from any listed centre"
    )
    assert recall >= 0.8


def test_constant_groups_with_different_means_are_a_maximal_change():
    assert welch_t([0.1, 0.1, 0.1], [0.7, 0.7, 0.7]) == np.inf
    assert welch_t([0.7, 0.7, 0.7], [0.1, 0.1, 0.1]) == -np.inf
    assert welch_t([0.3, 0.3], [0.3, 0.3, 0.3]) == 0


def test_localization_changes_flags_a_change_without_spread(rng):
    proteins = np.repeat([f"p{i}" for i in range(30)], 5)
    proba_a, proba_b = rng.dirichlet([5, 5], 150), rng.dirichlet([5, 5], 150)
    moved = proteins == "p4"
    proba_a[moved], proba_b[moved] = [0.9, 0.1], [0.1, 0.9]  # every cell alike: no variance
    table = localization_changes(proba_a, proteins, proba_b, proteins, ["NUCLEI", "ER"])
    hits = table[table["significant"]]
    assert set(hits["protein"]) == {"p4"}
    assert hits.set_index("class")["t"].to_dict() == {"NUCLEI": -np.inf, "ER": np.inf}


def test_unscorable_proteins_get_no_score_and_a_reason(rng):
    groups_a = ["lonely"] + ["p"] * 5 + ["q"] * 5
    groups_b = ["lonely"] * 4 + ["p"] * 5 + ["q"] * 5 + ["new"] * 3
    proba_a, proba_b = rng.dirichlet([5, 5], 11), rng.dirichlet([5, 5], 17)
    table = localization_changes(proba_a, groups_a, proba_b, groups_b)
    row = table[table["class"] == 0].set_index("protein")
    assert row.loc["lonely", "status"] == "too few cells"
    assert row.loc["new", "status"] == "only in screen B"
    assert row.loc[["p", "q"], "status"].tolist() == ["scored", "scored"]
    assert row.loc[["lonely", "new"], "t"].isna().all()
    assert row.loc[["lonely", "new"], "significant"].isna().all()
    assert row.loc["lonely", ["n_cells_a", "n_cells_b"]].tolist() == [1, 4]


def test_nan_probabilities_are_refused(rng):
    proba, groups = rng.dirichlet([5, 5], 6), ["p"] * 3 + ["q"] * 3
    proba[4, 1] = np.nan
    with pytest.raises(ValueError, match="proba_b has NaN or infinite values for 1 cell.*cell 4"):
        localization_changes(np.full((6, 2), 0.5), groups, proba, groups)
    with pytest.raises(ValueError, match="proba has NaN or infinite values"):
        aggregate(proba, groups)
    with pytest.raises(ValueError, match="intensity_a has NaN"):
        abundance_changes([1.0, np.nan], ["p", "p"], [1.0], ["p"])


@pytest.mark.parametrize(
    "mistake",
    [
        lambda proba: np.log(proba),  # logits-like: negative values
        lambda proba: 100 * proba,  # percentages
        lambda proba: proba[:, :1],  # one column of two
    ],
    ids=["logits", "percent", "subset"],
)
def test_values_that_are_not_probabilities_are_refused(rng, mistake):
    proba, groups = rng.dirichlet([5, 5], 6), ["p"] * 3 + ["q"] * 3
    wrong = mistake(proba)
    with pytest.raises(ValueError, match="proba_b must hold probabilities .* 6 row\\(s\\)"):
        localization_changes(rng.dirichlet([5] * wrong.shape[1], 6), groups, wrong, groups)
    with pytest.raises(ValueError, match="proba must hold probabilities .* first is cell 0"):
        aggregate(wrong, groups)


@pytest.mark.parametrize("missing", [None, np.nan])
def test_missing_group_labels_are_refused(rng, missing):
    proba, groups = rng.dirichlet([5, 5], 4), ["p", "p", missing, "p"]
    with pytest.raises(ValueError, match="groups_a contains missing values.*position 2"):
        localization_changes(proba, groups, proba, ["p"] * 4)
    with pytest.raises(ValueError, match="groups contains missing values"):
        aggregate(proba, groups)
    with pytest.raises(ValueError, match="groups_b contains missing values"):
        abundance_changes([1.0], ["p"], [1.0] * 4, groups)


def test_groups_given_as_none_are_refused(rng):
    proba = rng.dirichlet([5, 5], 4)
    with pytest.raises(ValueError, match="groups is None; expected one label per cell"):
        aggregate(proba, None)
    with pytest.raises(ValueError, match="groups_a is None"):
        localization_changes(proba, None, proba, list("ppqq"))
    with pytest.raises(ValueError, match=r"shape \(n_cells, n_classes\); got shape \(4, 0\)"):
        aggregate(np.zeros((4, 0)), list("ppqq"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"scores": None}, "scores is None"),
        ({"n_iter": 2.5}, "n_iter must be a positive integer; got 2.5"),
        ({"n_iter": -1}, "n_iter must be a positive integer; got -1"),
        ({"tol": "a"}, "tol must be a number >= 0; got 'a'"),
    ],
)
def test_outlier_posterior_arguments_are_checked(options, match):
    with pytest.raises(ValueError, match=match):
        outlier_posterior(**{"scores": [0.0, 1.0, 2.0], **options})


@pytest.mark.parametrize(("a", "b"), [(1.0, 2.0), (np.zeros((3, 2)), np.zeros((3, 4)))])
def test_welch_t_refuses_values_that_cannot_be_compared(a, b):
    with pytest.raises(ValueError, match="welch_t compares values per cell of the same shape"):
        welch_t(a, b)


def test_class_names_must_match_the_probability_columns(rng):
    proba = rng.dirichlet([5, 5], 4)
    with pytest.raises(
        ValueError, match=r"3 class names, shape \(n_cells, 3\); got shape \(4, 2\)"
    ):
        localization_changes(proba, list("ppqq"), proba, list("ppqq"), ["A", "B", "C"])


def test_outlier_posterior_excludes_infinite_and_nan_scores_from_the_fit(rng):
    scores = np.r_[rng.normal(size=300), 8.0]
    posterior = outlier_posterior(np.r_[scores, np.inf, -np.inf, np.nan])
    np.testing.assert_allclose(posterior[:301], outlier_posterior(scores))
    assert posterior[301:303].tolist() == [1.0, 1.0] and np.isnan(posterior[303])
    assert np.isnan(outlier_posterior([np.nan, 1.0])).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_centres_are_refused(field, bad):
    with pytest.raises(ValueError, match=r"1 centre\(s\) are NaN or infinite.*centre 1"):
        crop_cells(field, [[50, 60], [bad, 60]])
    frame = pd.DataFrame({"Center_X": [60.0, 60.0], "Center_Y": [50.0, bad]})
    with pytest.raises(ValueError, match="NaN or infinite"):
        crop_cells(field, frame, x_column="Center_X", y_column="Center_Y")


@pytest.mark.parametrize("border", ["pad", "drop"])
def test_centres_outside_the_field_are_reported_and_never_cropped(field, border):
    centres = [[50, 60], [-5, 60], [50, 120], [1e30, 0], [99, 119]]
    with pytest.warns(UserWarning, match=r"3 of 5 centre\(s\) lie outside the 100x120 field"):
        result = crop_cells(field, centres, size=64, border=border)
    assert result.outside.tolist() == [1, 2, 3]
    assert set(result.index.tolist()) <= {0, 4}
    assert len(result.crops) == len(result.index) == len(result.padded)


def test_crop_size_must_be_positive(field):
    with pytest.raises(ValueError, match="size must be a positive integer; got 0"):
        crop_cells(field, [[50, 60]], size=0)


def test_channels_last_images_are_refused():
    channels_last = np.zeros((120, 100, 2))
    with pytest.raises(ValueError, match=r"\(120, 100, 2\).*\(H, W, C\).*expected \(C, H, W\)"):
        find_cells(channels_last, channel=1)
    with pytest.raises(ValueError, match=r"expected \(C, H, W\)"):
        crop_cells(channels_last, [[50, 50]])


def test_find_cells_names_a_missing_channel():
    with pytest.raises(ValueError, match="channel=2, but the image has 2 channel"):
        find_cells(np.zeros((2, 50, 50)), channel=2)


@pytest.mark.parametrize(
    ("groups_a", "groups_b", "shown"),
    [
        ([1, 1, 2, 2], ["1", "1", "2", "2"], r"groups_a has 1, 2 and groups_b has '1', '2'"),
        ([b"p", b"p", b"q", b"q"], ["p", "p", "q", "q"], r"groups_a has b'p', b'q'"),
    ],
    ids=["int-vs-str", "bytes-vs-str"],
)
def test_groups_of_different_types_are_refused(rng, groups_a, groups_b, shown):
    proba = rng.dirichlet([5, 5], 4)
    with pytest.raises(ValueError, match=f"No protein .* both screens: {shown}"):
        localization_changes(proba, groups_a, proba, groups_b)
    with pytest.raises(ValueError, match=f"No protein .* both screens: {shown}"):
        abundance_changes(np.ones(4), groups_a, np.ones(4), groups_b)


def test_numbers_of_different_dtypes_still_match(rng):
    proba = rng.dirichlet([5, 5], 6)
    table = localization_changes(proba, [1, 1, 1, 2, 2, 2], proba, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0])
    assert (table["status"] == "scored").all()


def test_ties_at_zero_do_not_make_every_other_score_an_outlier():
    assert (outlier_posterior(np.r_[np.zeros(50), 1e-20]) < 0.5).all()
    assert (outlier_posterior(np.r_[np.zeros(50), 1e-300]) < 0.5).all()
    assert (outlier_posterior(np.r_[np.zeros(50), 0.9, -1.3, 2.0]) < 0.5).all()
    assert outlier_posterior(np.r_[np.zeros(50), 0.9, 12.0])[-1] > 0.5


def test_clear_changes_among_exact_ties_are_found():
    # Most proteins unchanged with saturated probabilities: their t is exactly 0
    # (MAD 0); the spread of all scores, movers included, must not be the start.
    movers = [24.0, 23.2]
    tied = outlier_posterior(np.r_[np.zeros(10), movers])
    assert (tied[-2:] > 0.5).all() and (tied[:-2] < 0.5).all()
    near = outlier_posterior(np.r_[np.random.default_rng(0).normal(0, 1e-8, 10), movers])
    np.testing.assert_allclose(tied, near, atol=1e-6)


def test_stepped_probabilities_without_change_are_not_significant():
    # A kNN head (5 neighbours) gives probabilities in steps of 0.2: most
    # proteins have identical cells in both screens, so t is exactly 0.
    rng = np.random.default_rng(0)
    proteins = np.repeat(np.arange(100), 10)

    def knn_screen():
        er_votes = np.where(proteins < 10, rng.binomial(1, 0.3, len(proteins)), 0)
        return np.column_stack([5 - er_votes, er_votes]) / 5

    table = localization_changes(knn_screen(), proteins, knn_screen(), proteins)
    assert (table["t"] == 0).mean() > 0.8
    assert not table["significant"].any()


@pytest.mark.parametrize("prior", [0, 1, 2, -1, np.nan, True, "0.01"])
def test_prior_must_be_a_probability(rng, prior):
    proba = rng.dirichlet([5, 5], 6)
    with pytest.raises(ValueError, match="prior must be a probability strictly between 0 and 1"):
        localization_changes(proba, list("ppqqrr"), proba, list("ppqqrr"), prior=prior)
    with pytest.raises(ValueError, match="prior must be a probability"):
        outlier_posterior([0.0, 1.0, 2.0], prior=prior)


def test_dataframe_columns_are_matched_by_name(rng):
    proba = rng.dirichlet([2, 3, 4], 8)
    groups = list("ppppqqqq")
    frame_a = pd.DataFrame(proba, columns=["x", "y", "z"])
    frame_b = pd.DataFrame(proba[:, ::-1], columns=["z", "y", "x"])  # same cells, reordered
    table = localization_changes(frame_a, groups, frame_b, groups)
    assert (table["t"] == 0).all()
    assert list(table["class"].unique()) == ["x", "y", "z"]
    with pytest.raises(ValueError, match=r"proba_b has the columns \['x', 'y', 'w'\]"):
        localization_changes(frame_a, groups, frame_a.set_axis(["x", "y", "w"], axis=1), groups)
    means = aggregate(frame_b, groups)
    assert list(means.columns) == ["n_cells", "z", "y", "x"]
    np.testing.assert_allclose(means.loc["p", "x"], proba[:4, 0].mean())
    reordered = aggregate(frame_b, groups, classes=["x", "y", "z"])
    np.testing.assert_allclose(reordered.loc["p", "x"], proba[:4, 0].mean())


def test_duplicate_class_names_are_refused(rng):
    proba = rng.dirichlet([5, 5, 5], 4)
    with pytest.raises(ValueError, match="distinct; 'x' appears more than once"):
        aggregate(proba, list("ppqq"), ["x", "x", "y"])
    with pytest.raises(ValueError, match="distinct; 'x' appears more than once"):
        localization_changes(proba, list("ppqq"), proba, list("ppqq"), ["x", "y", "x"])
    with pytest.raises(ValueError, match="sequence of class names; got 'xyz'"):
        aggregate(proba, list("ppqq"), "xyz")


def test_abundance_changes_refuses_screens_without_shared_proteins():
    with pytest.raises(ValueError, match="No protein .* both screens: groups_a has 'p'"):
        abundance_changes([10.0], ["p"], [40.0], ["q"])


@pytest.mark.parametrize("threshold", [-1, np.nan, np.inf, "1", True])
def test_abundance_threshold_must_be_a_finite_non_negative_number(threshold):
    with pytest.raises(ValueError, match="threshold must be"):
        abundance_changes([10.0, 5.0], ["p", "q"], [40.0, 5.0], ["p", "q"], threshold=threshold)


def test_non_positive_mean_names_the_screen_and_protein():
    with pytest.raises(ValueError, match=r"in screen B, 1 protein\(s\) are not, the first is 'q'"):
        abundance_changes([10.0, 5.0], ["p", "q"], [40.0, -2.0], ["p", "q"])


def test_huge_crops_are_not_padded_field_copies(field):
    dropped = crop_cells(field, [[50, 60]], size=10**6, border="drop")
    assert dropped.crops.shape == (0, 2, 10**6, 10**6) and dropped.index.size == 0
    with pytest.raises(ValueError, match="1 crop.* needs .* GB.* expected a smaller size"):
        crop_cells(field, [[50, 60]], size=10**6, border="pad")


def test_dataframe_centres_name_the_missing_column(field):
    frame = pd.DataFrame({"x": [60.0], "y": [50.0]})
    with pytest.raises(ValueError, match=r"no column 'X'; .* among \['x', 'y'\]"):
        crop_cells(field, frame, x_column="X", y_column="y")


@pytest.mark.parametrize("shape", [(0, 100, 100), (2, 0, 0)])
def test_crop_cells_refuses_empty_fields(shape):
    with pytest.raises(ValueError, match="at least one channel and one pixel"):
        crop_cells(np.zeros(shape), [[1, 1]])


def test_an_empty_list_of_centres_gives_no_crops(field):
    for centres in ([], np.zeros((0, 2))):
        result = crop_cells(field, centres, size=32)
        assert result.crops.shape == (0, 2, 32, 32) and result.index.size == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channel": 1.5}, "channel must be an integer index or None; got 1.5"),
        ({"channel": True}, "channel must be an integer index or None; got True"),
        ({"channel": "1"}, "channel must be an integer index or None; got '1'"),
        ({"min_distance": 0}, "min_distance must be a positive integer; got 0"),
        ({"sigma": -1.0}, r"sigma must be a finite number >= 0 \(pixels\); got -1.0"),
    ],
)
def test_find_cells_refuses_bad_arguments(options, message):
    with pytest.raises(ValueError, match=message):
        find_cells(np.zeros((2, 50, 50)), **options)


def test_find_cells_refuses_an_image_without_pixels():
    with pytest.raises(ValueError, match=r"no pixels \(shape \(2, 0, 0\)\)"):
        find_cells(np.zeros((2, 0, 0)), channel=1)


def test_a_float32_rounding_difference_without_spread_is_no_change():
    assert welch_t([1.0, 1.0], [0.99999994, 0.99999994]) == 0
    assert welch_t([1.0, 1.0], [0.9999, 0.9999]) == -np.inf
