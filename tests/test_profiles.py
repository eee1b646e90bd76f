"""Cell and well profiles: pycytominer reads them as features, anndata reads the h5ad."""

import h5py
import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc import profiles as profiles_module
from sklearn_deeploc.profiles import (
    cell_profiles,
    profile_changes,
    well_profiles,
    write_h5ad,
    write_profiles,
)

CLASSES = ["NUCLEI", "ER", "CELL PERIPHERY"]
FEATURES = [f"fc2_{k}" for k in range(4)]


def _cells(n_wells=3, per_well=4, seed=0):
    rng = np.random.default_rng(seed)
    n = n_wells * per_well
    wells = [f"{chr(ord('A') + k)}{k + 1:02d}" for k in range(n_wells)]
    return pd.DataFrame(
        {
            "plate": "P1",
            "well": np.repeat(wells, per_well),
            "site": np.tile(np.arange(per_well) % 2, n_wells),
            "ObjectNumber": np.arange(1, n + 1),
            "center_x": rng.random(n) * 96,
            "center_y": rng.random(n) * 64,
            "area": rng.integers(20, 90, n),
        }
    )


def _profiles(features=True, seed=0):
    cells = _cells(seed=seed)
    rng = np.random.default_rng(seed + 1)
    proba = rng.dirichlet(np.ones(len(CLASSES)), len(cells))
    values = rng.normal(size=(len(cells), len(FEATURES))) if features else None
    return cell_profiles(cells, proba, CLASSES, values, FEATURES if features else None), proba


def test_cell_profiles_columns_and_predicted_class():
    profiles, proba = _profiles()
    metadata = [c for c in profiles.columns if c.startswith("Metadata_")]
    assert metadata == [
        "Metadata_Plate",
        "Metadata_Well",
        "Metadata_Site",
        "Metadata_ObjectNumber",
        "Metadata_Location_Center_X",
        "Metadata_Location_Center_Y",
        "Metadata_Area",
        "Metadata_Predicted_Class",
    ]
    probability = [f"Cells_DeepLoc_Prob_{c}" for c in CLASSES]
    features = [f"Cells_DeepLoc_{f}" for f in FEATURES]
    assert list(profiles.columns[len(metadata) :]) == probability + features
    assert (profiles[probability + features].dtypes == np.float32).all()
    np.testing.assert_allclose(profiles[probability], proba, rtol=1e-6)
    expected = np.array(CLASSES)[proba.argmax(axis=1)]
    assert list(profiles["Metadata_Predicted_Class"]) == list(expected)


def test_cell_profiles_accepts_metadata_names():
    cells = _cells().rename(columns=profiles_module.METADATA)
    proba = np.full((len(cells), 2), 0.5)
    profiles = cell_profiles(cells, proba, ["a", "b"])
    assert "Metadata_ObjectNumber" in profiles and "Metadata_Area" in profiles


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda c, p: (c.drop(columns="site"), p),
            r"lacks the metadata columns \['Metadata_Site'\]",
        ),
        (lambda c, p: (c, p[:, :2]), r"proba has shape \(12, 2\); expected \(12, 3\)"),
        (lambda c, p: (c, p[:5]), r"proba has shape \(5, 3\)"),
    ],
)
def test_cell_profiles_refuses_mismatched_inputs(change, match):
    cells, proba = change(_cells(), np.full((12, 3), 1 / 3))
    with pytest.raises(ValueError, match=match):
        cell_profiles(cells, proba, CLASSES)


def test_cell_profiles_refuses_repeated_names():
    cells, proba = _cells(), np.full((12, 3), 1 / 3)
    with pytest.raises(ValueError, match="name a class twice"):
        cell_profiles(cells, proba, ["ER", "ER", "NUCLEI"])
    with pytest.raises(ValueError, match=r"features has shape \(12, 2\); expected \(12, 3\)"):
        cell_profiles(cells, proba, CLASSES, np.zeros((12, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="repeat a name"):
        cell_profiles(cells, proba, CLASSES, np.zeros((12, 2)), ["a", "a"])


def test_cell_profiles_refuses_non_probabilities_and_metadata_given_twice():
    cells, proba = _cells(), np.full((12, 3), 1 / 3)
    proba[4] = np.nan  # argmax would make it the first class
    with pytest.raises(ValueError, match="NaN, infinite or beyond-float32 values for 1 cell"):
        cell_profiles(cells, proba, CLASSES)
    with pytest.raises(ValueError, match="must hold probabilities"):
        cell_profiles(cells, np.full((12, 3), 2.0), CLASSES)  # logits
    with pytest.raises(ValueError, match=r"metadata columns \['Metadata_Well'\] twice"):
        cell_profiles(cells.assign(Well="B01"), np.full((12, 3), 1 / 3), CLASSES)


def test_well_profiles_mean_count_and_class():
    profiles, proba = _profiles()
    wells = well_profiles(profiles)
    assert list(wells["Metadata_Well"]) == ["A01", "B02", "C03"]
    assert list(wells["Metadata_Object_Count"]) == [4, 4, 4]
    means = proba.reshape(3, 4, len(CLASSES)).mean(axis=1)
    probability = [f"Cells_DeepLoc_Prob_{c}" for c in CLASSES]
    np.testing.assert_allclose(wells[probability], means, rtol=1e-5, atol=1e-6)
    assert list(wells["Metadata_Predicted_Class"]) == list(np.array(CLASSES)[means.argmax(1)])


def test_pycytominer_infers_the_features_and_aggregates_like_wells():
    pycytominer = pytest.importorskip("pycytominer")
    from pycytominer.cyto_utils import infer_cp_features

    profiles, _ = _profiles()
    features = [c for c in profiles.columns if c.startswith("Cells_DeepLoc_")]
    assert infer_cp_features(profiles) == features
    metadata = [c for c in profiles.columns if c.startswith("Metadata_")]
    assert infer_cp_features(profiles, metadata=True) == metadata
    aggregated = pycytominer.aggregate(
        profiles, operation="mean", compute_object_count=True, output_type=None
    )
    wells = well_profiles(profiles)
    assert list(aggregated["Metadata_Object_Count"]) == list(wells["Metadata_Object_Count"])
    np.testing.assert_allclose(aggregated[features], wells[features], rtol=1e-5, atol=1e-6)


def test_pycytominer_normalizes_only_the_features():
    pycytominer = pytest.importorskip("pycytominer")
    profiles, _ = _profiles()
    normalized = pycytominer.normalize(profiles, method="standardize", output_type=None)
    features = [c for c in profiles.columns if c.startswith("Cells_DeepLoc_")]
    np.testing.assert_allclose(normalized[features].mean(), 0, atol=1e-5)
    metadata = [c for c in profiles.columns if c.startswith("Metadata_")]
    pd.testing.assert_frame_equal(normalized[metadata], profiles[metadata])


@pytest.mark.parametrize("features", [True, False])
def test_write_profiles_files(tmp_path, features):
    profiles, _ = _profiles(features)
    written = write_profiles(profiles, tmp_path / "out", uns={"model_digest": "abc"}, csv=True)
    names = ["cells.parquet", "wells.parquet", "cells.csv", "wells.csv", "cells.h5ad"]
    assert sorted(written) == sorted(names)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)  # no leftovers
    pd.testing.assert_frame_equal(pd.read_parquet(written["cells.parquet"]), profiles)
    wells = pd.read_parquet(written["wells.parquet"])
    pd.testing.assert_frame_equal(wells, well_profiles(profiles))


def test_h5ad_layout_follows_the_anndata_spec(tmp_path):
    profiles, _ = _profiles()
    path = write_h5ad(profiles, tmp_path / "cells.h5ad", uns={"precision": "bf16"})
    with h5py.File(path) as file:
        assert file.attrs["encoding-type"] == "anndata"
        assert file["obs"].attrs["encoding-type"] == "dataframe"
        assert file["obs/Metadata_Well"].attrs["encoding-type"] == "categorical"
        assert file["uns/precision"].attrs["encoding-type"] == "string"
        assert file["var/_index"].asstr()[:].tolist() == FEATURES
        np.testing.assert_array_equal(
            file["X"][:], profiles[[f"Cells_DeepLoc_{f}" for f in FEATURES]]
        )


@pytest.mark.parametrize("features", [True, False])
def test_anndata_reads_the_h5ad(tmp_path, features):
    anndata = pytest.importorskip("anndata")
    profiles, proba = _profiles(features)
    uns = {"model_digest": "abc123", "precision": "fp32"}
    adata = anndata.read_h5ad(write_h5ad(profiles, tmp_path / "cells.h5ad", uns=uns))
    names = FEATURES if features else CLASSES
    assert list(adata.var_names) == names
    prefix = "Cells_DeepLoc_" if features else "Cells_DeepLoc_Prob_"
    np.testing.assert_array_equal(adata.X, profiles[[prefix + n for n in names]].to_numpy())
    metadata = [c for c in profiles.columns if c.startswith("Metadata_")]
    assert list(adata.obs.columns) == metadata
    assert list(adata.obs["Metadata_Well"]) == list(profiles["Metadata_Well"])
    np.testing.assert_array_equal(
        adata.obs["Metadata_ObjectNumber"], profiles["Metadata_ObjectNumber"]
    )
    assert list(adata.uns["classes"]) == CLASSES
    assert (adata.uns["model_digest"], adata.uns["precision"]) == ("abc123", "fp32")
    assert "package_version" in adata.uns
    if features:
        np.testing.assert_allclose(adata.obsm["DeepLoc_Prob"], proba, rtol=1e-6)


def test_h5ad_is_replaced_atomically(tmp_path, monkeypatch):
    profiles, _ = _profiles()
    path = write_h5ad(profiles, tmp_path / "cells.h5ad")
    before = path.read_bytes()

    def interrupted(file, profiles, uns):
        raise KeyboardInterrupt

    monkeypatch.setattr(profiles_module, "_write_anndata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_h5ad(profiles, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["cells.h5ad"]


def _screen(moving_well=None, seed=0, n_wells=30, per_well=12):
    cells = _cells(n_wells=n_wells, per_well=per_well, seed=seed)
    cells["well"] = np.repeat([f"W{k:02d}" for k in range(n_wells)], per_well)
    proba = np.random.default_rng(seed).dirichlet([5, 5, 5], len(cells))
    if moving_well is not None:
        proba[cells["well"] == moving_well] = [0.05, 0.9, 0.05]
    return cell_profiles(cells, proba, CLASSES)


def test_profile_changes_finds_the_moving_well():
    table = profile_changes(_screen(seed=1), _screen("W07", seed=2))
    assert {"Metadata_Well", "class", "t", "significant", "status"} <= set(table.columns)
    assert sorted(set(table.loc[table["significant"].fillna(False), "Metadata_Well"])) == ["W07"]


def test_profile_changes_add_abundance_where_both_screens_measured_intensity():
    a, b = _screen(seed=1), _screen("W07", seed=2)
    a["Metadata_MeanIntensity_GFP"] = 100.0
    b["Metadata_MeanIntensity_GFP"] = np.where(b["Metadata_Well"] == "W07", 400.0, 110.0)
    table = profile_changes(a, b)
    abundance = table.groupby("Metadata_Well")["abundance_significant"].first()
    assert abundance[abundance].index.tolist() == ["W07"]
    np.testing.assert_allclose(table.loc[table["Metadata_Well"] == "W07", "log2_abundance"], 2)
    with pytest.warns(UserWarning, match="Only screen A measured its cells' intensity"):
        assert "log2_abundance" not in profile_changes(a, _screen(seed=2))
    dark = a.assign(Metadata_MeanIntensity_GFP=0.0)  # no ratio: localization changes only
    with pytest.warns(UserWarning, match="30 of 30 group.* no positive mean"):
        assert "log2_abundance" not in profile_changes(dark, b)
    a.loc[a["Metadata_Well"] == "W03", "Metadata_MeanIntensity_GFP"] = np.nan  # none measured
    with pytest.warns(UserWarning, match="1 of 30 group"):
        table = profile_changes(a, b)
    by_well = table.groupby("Metadata_Well")["log2_abundance"].first()
    assert np.isnan(by_well["W03"]) and by_well.drop("W03").notna().all()


def test_profile_changes_by_another_column_and_refusals():
    a, b = _screen(seed=1), _screen("W07", seed=2)
    for screen in (a, b):
        screen["Metadata_Protein"] = screen["Metadata_Well"].str.replace("W", "P")
    table = profile_changes(a, b, by="Metadata_Protein")
    assert "P07" in set(table.loc[table["significant"].fillna(False), "Metadata_Protein"])
    with pytest.raises(ValueError, match="Screen A has no column 'Metadata_Strain'"):
        profile_changes(a, b, by="Metadata_Strain")
    with pytest.raises(ValueError, match="The screens' classes differ"):
        profile_changes(a, b.drop(columns="Cells_DeepLoc_Prob_ER"))
    with pytest.raises(TypeError, match="Screen A is a ndarray; expected a pandas DataFrame"):
        profile_changes(a.to_numpy(), b)


def test_imaged_wells_without_cells_and_missing_acquisitions_are_one_row_each():
    cells = pd.DataFrame(
        {
            "plate": "P1",
            "well": ["A01", "A01", "B01"],
            "site": 0,
            "ObjectNumber": [1, 2, 1],
            "center_x": 5.0,
            "center_y": 5.0,
            "acquisition": pd.array([pd.NA, pd.NA, 1], dtype="Int64"),
        }
    )
    profiles = cell_profiles(cells, [[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]], ["NUCLEI", "ER"])
    imaged = cells[["plate", "well", "acquisition"]].drop_duplicates()
    imaged.loc[9] = ["P1", "C01", pd.NA]  # every cell of C01 died
    wells = well_profiles(profiles, imaged=imaged)
    assert wells[["Metadata_Well", "Metadata_Object_Count"]].values.tolist() == [
        ["A01", 2],
        ["B01", 1],
        ["C01", 0],
    ]


def test_write_changes_reads_two_outputs(tmp_path):
    from sklearn_deeploc.jobs import write_changes

    write_profiles(_screen(seed=1), tmp_path / "a")
    write_profiles(_screen("W07", seed=2), tmp_path / "b")
    table = write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "changes.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "changes.parquet"), table)
    with pytest.raises(FileNotFoundError, match="nowhere.*cells.parquet"):
        write_changes(tmp_path / "a", tmp_path / "nowhere", tmp_path / "changes.parquet")


def test_write_changes_refuses_screens_recorded_apart_in_their_h5ad(tmp_path):
    from sklearn_deeploc.jobs import write_changes

    for name, tta in (("a", False), ("b", True)):  # no manifest: the .h5ad records how
        uns = {"model": "digest", "precision": "fp32", "tta": tta}
        write_profiles(_screen(seed=1), tmp_path / name, uns=uns)
    with pytest.raises(ValueError, match="predicted differently .*'tta': False.*'tta': True"):
        write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "changes.parquet")
    with h5py.File(tmp_path / "b" / "cells.h5ad", "r+") as file:  # another writer's record
        del file["uns/model"]
        file["uns"].create_group("model")
    with pytest.raises(ValueError, match="predicted differently"):  # tta is still compared
        write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "changes.parquet")
    with h5py.File(tmp_path / "b" / "cells.h5ad", "r+") as file:
        del file["uns/precision"]  # one record absent: the others are compared
        file["uns/tta"][()] = False
    write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "changes.parquet")
    with h5py.File(tmp_path / "b" / "cells.h5ad", "r+") as file:
        file["uns/tta"][()] = True
    with pytest.raises(ValueError, match="predicted differently"):
        write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "changes.parquet")
    cells_a = tmp_path / "a" / "cells.parquet"
    for written in (cells_a, cells_a.with_name("wells.parquet"), cells_a.with_name("cells.csv")):
        with pytest.raises(ValueError, match="is a file of a screen compared"):
            write_changes(tmp_path / "a", tmp_path / "a", written)
    exported = tmp_path / "exported.parquet"  # a table from elsewhere, named as no screen file
    cells_a.rename(exported)
    with pytest.raises(ValueError, match="is a file of a screen compared"):
        write_changes(exported, exported, exported)
    exported.rename(cells_a)
    with pytest.raises(ValueError, match=r"cells.h5ad is not a cell table"):
        write_changes(tmp_path / "a" / "cells.h5ad", tmp_path / "a", tmp_path / "c.csv")


def test_write_changes_warns_that_tables_recording_no_model_cannot_be_checked(tmp_path):
    from sklearn_deeploc.jobs import write_changes

    for name, seed in (("a", 1), ("b", 2)):  # profiles of elsewhere, written without records
        _screen(seed=seed).to_csv(tmp_path / f"{name}.csv", index=False)
    with pytest.warns(
        UserWarning, match=r"No record of the model that predicted .*a.csv and .*b.csv"
    ):
        write_changes(tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv")


def test_write_changes_reads_the_csv_copies(tmp_path):
    from sklearn_deeploc.jobs import write_changes

    for name, seed in (("a", 1), ("b", 2)):
        write_profiles(_screen(seed=seed), tmp_path / name, uns={"precision": "fp32"}, csv=True)
    from_csv = write_changes(
        tmp_path / "a" / "cells.csv", tmp_path / "b" / "cells.csv", tmp_path / "c.csv"
    )
    from_parquet = write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "c.parquet")
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False, atol=1e-6)
    write_profiles(_screen(seed=2), tmp_path / "b", uns={"precision": "bf16"}, csv=True)
    with pytest.raises(ValueError, match="predicted differently"):  # the csv copy's records
        write_changes(
            tmp_path / "a" / "cells.csv", tmp_path / "b" / "cells.csv", tmp_path / "c.csv"
        )
    for name, seed in (("a", 1), ("b", 2)):  # codes read back as themselves, not 7
        screen = _screen(seed=seed).assign(Metadata_Plate="007")
        screen["Metadata_Compound"] = screen["Metadata_Well"].map(lambda well: f"00{well[-1]}")
        write_profiles(screen, tmp_path / name, csv=True)
    codes = screen["Metadata_Well"].str[1:].astype(int).astype(str)  # numbers in A; text in B
    a_codes = _screen(seed=1).assign(Metadata_Code=codes)
    a_codes.to_csv(tmp_path / "a.csv", index=False)
    b_codes = screen.assign(Metadata_Code=codes.where(codes != "29", "X29"))
    b_codes.to_csv(tmp_path / "b.csv", index=False)
    table = write_changes(
        tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv", by="Metadata_Code"
    )
    assert (table.loc[table["Metadata_Code"] == "7", "status"] == "scored").all()
    for by in ("Metadata_Plate", "Metadata_Compound"):
        table = write_changes(
            tmp_path / "a" / "cells.csv", tmp_path / "b", tmp_path / "c.csv", by=by
        )
        assert set(table[by]) == set(screen[by])
        assert (table["n_cells_a"] > 0).all() and (table["n_cells_b"] > 0).all()
    wells = tmp_path / "a" / "wells.parquet"
    with pytest.raises(ValueError, match="Screen A is a table of wells"):
        write_changes(wells, tmp_path / "a", tmp_path / "changes.parquet")
    with pytest.raises(ValueError, match="by must name one metadata column"):
        write_changes(tmp_path / "a", tmp_path / "a", tmp_path / "c.csv", by=["Metadata_Well"])
    drugs = _screen(seed=1).assign(**{"class": "kinase inhibitor"})  # as joined by a user
    with pytest.raises(ValueError, match="by='class' would name two columns of the changes"):
        profile_changes(drugs, drugs, by="class")


def test_cell_profiles_refuse_what_wells_or_files_would_lose():
    cells, proba = _cells(), np.full((12, 3), 1 / 3)
    with pytest.raises(
        ValueError, match="1 row\\(s\\) without a plate or well, the first at row 3"
    ):
        cell_profiles(cells.assign(well=cells["well"].mask(cells.index == 3)), proba, CLASSES)
    with pytest.raises(ValueError, match="column 'Metadata_dose' mixes value types"):
        cell_profiles(cells.assign(dose=["1", 1] * 6), proba, CLASSES)
    features = np.ones((12, 2))
    features[5, 1] = 1e39  # beyond float32
    with pytest.raises(ValueError, match="features has NaN, infinite or beyond-float32 .*cell 5"):
        cell_profiles(cells, proba, CLASSES, features, ["a", "b"])
    with pytest.raises(ValueError, match="start with 'Prob_'"):
        cell_profiles(cells, proba, CLASSES, np.ones((12, 1)), ["Prob_calibrated"])


def test_h5ad_keeps_missing_metadata_missing(tmp_path):
    anndata = pytest.importorskip("anndata")
    cells = _cells()
    cells["strain"] = ["wt", None, "ko"] * 4
    cells["dose"] = pd.array([1, None, 3] * 4, dtype="Int64")
    cells["treated"] = pd.array([True, None, False] * 4, dtype="boolean")
    cells["grade"] = pd.Categorical(["lo", "hi", "mid"] * 4, ["lo", "mid", "hi"], ordered=True)
    cells["replicate"] = pd.Categorical([1, 2, 2] * 4)
    cells["checked"] = pd.array([True, None, False] * 4, dtype="bool[pyarrow]")
    profiles = cell_profiles(cells, np.full((12, 3), 1 / 3), CLASSES)
    obs = anndata.read_h5ad(write_h5ad(profiles, tmp_path / "cells.h5ad")).obs
    assert obs["Metadata_strain"].isna().tolist() == [False, True, False] * 4
    assert obs["Metadata_checked"].tolist() == [True, pd.NA, False] * 4
    for column in ("dose", "treated", "grade", "replicate"):  # each type as it was
        pd.testing.assert_series_equal(
            obs[f"Metadata_{column}"], cells[column], check_names=False, check_index=False
        )


def test_h5ad_of_no_cells_and_refused_uns(tmp_path):
    anndata = pytest.importorskip("anndata")
    profiles = cell_profiles(_cells().iloc[:0], np.zeros((0, 3)), CLASSES)
    assert anndata.read_h5ad(write_h5ad(profiles, tmp_path / "cells.h5ad")).shape == (0, 3)
    with pytest.raises(ValueError, match=r"uns\['options'\] is \{'tta': True\}; expected"):
        write_h5ad(profiles, tmp_path / "other.h5ad", uns={"options": {"tta": True}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad"]


def test_wells_of_one_name_on_several_plates_are_not_pooled():
    a, b = _screen(seed=1), _screen(seed=2)
    a.loc[a.index[:12], "Metadata_Plate"] = "P2"  # well W00 of another plate
    with pytest.raises(ValueError, match=r"Screen A holds 2 plates .*compare plate by plate"):
        profile_changes(a, b)
    a["Metadata_Protein"] = a["Metadata_Well"]
    b["Metadata_Protein"] = b["Metadata_Well"]
    assert len(profile_changes(a, b, by="Metadata_Protein"))  # the user's grouping: taken


def test_well_profiles_keep_only_wells_with_cells_of_categorical_columns():
    profiles, _ = _profiles()
    categorical = profiles.astype({"Metadata_Plate": "category", "Metadata_Well": "category"})
    categorical["Metadata_Plate"] = categorical["Metadata_Plate"].cat.add_categories(["P2"])
    wells = well_profiles(categorical)  # as read from an .h5ad's obs: no P2 wells invented
    assert list(zip(wells["Metadata_Plate"], wells["Metadata_Well"])) == [
        ("P1", "A01"),
        ("P1", "B02"),
        ("P1", "C03"),
    ]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda p: p.assign(Metadata_Well=p["Metadata_Well"].mask(p.index == 2)), "without"),
        (lambda p: p.drop(columns="Metadata_Plate"), r"has no column 'Metadata_Plate'"),
        (lambda p: p.assign(**{"Cells_DeepLoc_Prob_ER": 5.0}), "must hold probabilities"),
        (lambda p: p.assign(**{"Cells_DeepLoc_fc2_0": np.nan}), r"\(Cells_DeepLoc_<name>\)"),
        (lambda p: pd.concat([p, p["Metadata_Well"]], axis=1), "repeated column names"),
        (lambda p: p.rename(columns={"Metadata_Site": 7}), "non-text column names"),
        (lambda p: p.to_numpy(), "expected a pandas DataFrame"),
    ],
)
def test_well_profiles_refuse_what_would_lose_or_mix_cells(edit, match):
    profiles, _ = _profiles()
    with pytest.raises((ValueError, TypeError), match=match):
        well_profiles(edit(profiles))


def test_cell_profiles_refuse_columns_of_earlier_profiles():
    profiles, proba = _profiles()
    with pytest.raises(ValueError, match=r"already has \['Metadata_Predicted_Class'\]"):
        cell_profiles(profiles[[c for c in profiles if c.startswith("Metadata_")]], proba, CLASSES)


def test_h5ad_uns_keeps_the_package_entries_and_reads_back(tmp_path):
    profiles, _ = _profiles()
    with pytest.raises(ValueError, match=r"uns gives \['classes'\]"):
        write_h5ad(profiles, tmp_path / "x.h5ad", uns={"classes": ["a", "b", "c"]})
    path = write_h5ad(profiles, tmp_path / "cells.h5ad", uns={"tta": np.True_, "n": np.int64(3)})
    with h5py.File(path, "r+") as file:
        file["uns"].create_dataset("nothing", data=h5py.Empty("f"))  # anndata's None
    read = profiles_module.read_h5ad_uns(path, ["classes", "tta", "n", "nothing"])
    assert read == {"classes": CLASSES, "tta": True, "n": 3, "nothing": None}
    assert profiles_module.read_h5ad_uns(path, "tta") == {"tta": True}
    with pytest.raises(KeyError, match=r"cells.h5ad has no uns entry 'model'"):
        profiles_module.read_h5ad_uns(path, ["tta", "model"])


def test_profile_changes_match_classes_by_name():
    a, b = _screen(seed=1), _screen("W07", seed=2)
    probability = [f"Cells_DeepLoc_Prob_{c}" for c in CLASSES]
    reordered = b[[c for c in b if c not in probability] + probability[::-1]]
    pd.testing.assert_frame_equal(profile_changes(a, reordered), profile_changes(a, b))


def test_h5ad_predicted_classes_are_every_class_in_the_models_order(tmp_path):
    profiles, _ = _profiles()
    one_class = profiles[profiles["Metadata_Predicted_Class"] == CLASSES[-1]]
    assert 0 < len(one_class) < len(profiles)
    path = write_h5ad(one_class, tmp_path / "cells.h5ad")
    with h5py.File(path) as file:
        categories = file["obs/Metadata_Predicted_Class/categories"].asstr()[:].tolist()
        codes = file["obs/Metadata_Predicted_Class/codes"][:]
    assert categories == CLASSES  # a screen's obs compare with another's, whatever was predicted
    assert codes.tolist() == [len(CLASSES) - 1] * len(one_class)


def test_h5ad_predicted_classes_named_by_numbers_keep_their_codes(tmp_path):
    cells = pd.DataFrame(
        {
            "plate": "P1",
            "well": ["A01", "B02"],
            "site": 0,
            "ObjectNumber": 1,
            "center_x": 5.0,
            "center_y": 5.0,
        }
    )
    profiles = cell_profiles(cells, [[0.9, 0.1], [0.2, 0.8]], ["0", "1"])
    profiles["Metadata_Predicted_Class"] = [0, 1]  # as read back from cells.csv
    with h5py.File(write_h5ad(profiles, tmp_path / "cells.h5ad")) as file:
        assert file["obs/Metadata_Predicted_Class/codes"][:].tolist() == [0, 1]
