"""Screens from OME-Zarr plates (0.4 and 0.5, written by ome-zarr) and folders of label images."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import assert_same_float32

pytest.importorskip("zarr")
pytest.importorskip("ome_zarr")
from skimage.measure import regionprops  # noqa: E402
from test_plates import FORMATS, write_plate  # noqa: E402

from sklearn_deeploc import (  # noqa: E402
    DeepLocModel,
    DeepLocNet,
    sources,  # noqa: E402
)
from sklearn_deeploc.cli import main  # noqa: E402
from sklearn_deeploc.datasets import load_deeploc_hdf5  # noqa: E402
from sklearn_deeploc.fields import crop_cells  # noqa: E402
from sklearn_deeploc.jobs import run_screen, write_changes  # noqa: E402
from sklearn_deeploc.labels import cells_from_labels  # noqa: E402
from sklearn_deeploc.plates import open_plate  # noqa: E402
from sklearn_deeploc.sources import FolderFields, PlateFields, Prefetched  # noqa: E402

CLASSES = ["ER", "NUCLEI", "VACUOLE"]


def _model(path, seed=0):
    import torch

    torch.manual_seed(seed)
    net = DeepLocNet(n_classes=len(CLASSES), conv_channels=(4,) * 8, fc_units=(8, 8))
    with torch.no_grad():  # not the initial zeros of the last layer: outputs tell inputs apart
        for parameter in net.parameters():
            parameter.normal_(0, 0.3)
    return DeepLocModel(net, CLASSES).save(path)


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("screen_plates")
    return {v: (folder / f"{v}.zarr", write_plate(folder / f"{v}.zarr", v)) for v in FORMATS}


@pytest.fixture(params=list(FORMATS))
def plate(request, plates, tmp_path):
    source, written = plates[request.param]
    return shutil.copytree(source, tmp_path / "P1.zarr"), written


@pytest.fixture
def model(tmp_path):
    return _model(tmp_path / "model")


def _expected(written, model):
    """One row per label object: centroids by scikit-image, probabilities of crops cut here."""
    rows, probabilities = [], []
    for image_path, (pixels, labels) in written.items():
        row, column, site = image_path.split("/")
        regions = regionprops(labels)
        centres = np.array([region.centroid for region in regions])
        crops = crop_cells(pixels, centres, border="pad").crops
        probabilities.append(model.predict_proba(crops))
        rows += [
            (f"{row}0{column}", int(site), region.label, region.area, *region.centroid[::-1])
            for region in regions
        ]
    columns = ["well", "site", "object", "area", "x", "y"]
    return pd.DataFrame(rows, columns=columns), np.concatenate(probabilities)


def _screen(plate, model, out, *options):
    return main(
        ["screen", str(model), "--plate", str(plate), "--labels", "cells", "-o", str(out), *options]
    )


def test_a_plate_with_labels_gives_one_row_per_object(plate, model, tmp_path):
    path, written = plate
    assert _screen(path, model, tmp_path / "out", "--device", "cpu") == 0  # as loaded below
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    expected, proba = _expected(written, DeepLocModel.load(model))
    assert len(cells) == len(expected) == 20
    assert set(cells["Metadata_Plate"]) == {"P1"}
    assert cells["Metadata_Well"].tolist() == expected["well"].tolist()
    assert cells["Metadata_Site"].tolist() == expected["site"].tolist()
    assert cells["Metadata_ObjectNumber"].tolist() == expected["object"].tolist()
    np.testing.assert_allclose(cells["Metadata_Location_Center_X"], expected["x"])
    np.testing.assert_allclose(cells["Metadata_Location_Center_Y"], expected["y"])
    assert cells["Metadata_Area"].tolist() == expected["area"].tolist()
    probability = [f"Cells_DeepLoc_Prob_{c}" for c in CLASSES]
    assert_same_float32(cells[probability].to_numpy(), proba)
    wells = pd.read_parquet(tmp_path / "out" / "wells.parquet")
    assert wells[["Metadata_Well", "Metadata_Object_Count"]].values.tolist() == [
        ["A01", 10],
        ["B03", 10],
    ]


def test_channels_are_chosen_by_name_or_index(plate, model, tmp_path):
    path, _ = plate
    assert _screen(path, model, tmp_path / "default") == 0
    assert _screen(path, model, tmp_path / "names", "--channels", "RFP", "GFP") == 0
    assert _screen(path, model, tmp_path / "indices", "--channels", "1", "0") == 0
    read = {
        name: pd.read_parquet(tmp_path / name / "cells.parquet") for name in ("names", "indices")
    }
    pd.testing.assert_frame_equal(read["names"], read["indices"])
    default = pd.read_parquet(tmp_path / "default" / "cells.parquet")
    assert (
        default["Metadata_ObjectNumber"].tolist() == read["names"]["Metadata_ObjectNumber"].tolist()
    )


def test_plate_mistakes_are_one_clear_line(plate, model, tmp_path, capsys):
    path, _ = plate
    assert _screen(path, model, tmp_path / "a", "--channels", "GFP", "DAPI") == 2
    assert "has no channel 'DAPI'; it has channel names ['GFP', 'RFP']" in capsys.readouterr().err
    args = ["screen", str(model), "--plate", str(path), "--labels", "nuclei", "-o", str(tmp_path)]
    assert main(args) == 2
    assert "has no label image 'nuclei'; it has ['cells']" in capsys.readouterr().err
    assert main([*args[:3], str(tmp_path / "none.zarr"), "-o", str(tmp_path / "b")]) == 2
    assert "none.zarr not found" in capsys.readouterr().err
    both = [*args[:4], "--images", str(tmp_path), "-o", str(tmp_path / "c")]
    assert main(both) == 2
    assert "Give --plate or --images, not both" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def _killed_after(n_fields, plate, model, out):
    """Run the screen in another process and SIGKILL it when ``n_fields`` fields are written."""
    code = f"""
import os, signal
import sklearn_deeploc.blocks as blocks
from sklearn_deeploc.cli import main
write = blocks.ResumableOutput.write
def write_then_die(self, key, frame):
    write(self, key, frame)
    if len(self._records) == {n_fields}:
        os.kill(os.getpid(), signal.SIGKILL)
blocks.ResumableOutput.write = write_then_die
main(["screen", {str(model)!r}, "--plate", {str(plate)!r}, "--labels", "cells", "-o", {str(out)!r}])
"""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)


def test_a_killed_plate_screen_resumes_and_another_model_is_refused(plate, model, tmp_path, capsys):
    path, _ = plate
    killed = _killed_after(2, path, model, tmp_path / "out")
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert not (tmp_path / "out" / "cells.parquet").exists()
    assert _screen(path, model, tmp_path / "out") == 0
    assert "2 of 4 fields already done; computing 2" in capsys.readouterr().out
    assert _screen(path, model, tmp_path / "clean") == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "out" / "cells.parquet"),
        pd.read_parquet(tmp_path / "clean" / "cells.parquet"),
    )
    other = _model(tmp_path / "other", seed=1)
    assert _screen(path, other, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "made from other inputs or options (model:" in error and "--overwrite" in error
    assert _screen(path, other, tmp_path / "out", "--overwrite") == 0


def test_a_changed_plate_is_refused(plate, model, tmp_path, capsys):
    path, _ = plate
    assert _screen(path, model, tmp_path / "out") == 0
    chunk = next(p for p in sorted((path / "A" / "1" / "0").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes())  # same bytes, touched: the plate may have changed
    os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
    assert _screen(path, model, tmp_path / "out") == 2
    assert "source" in capsys.readouterr().err


@pytest.fixture
def featured(plate, model, tmp_path):
    """A screen's output folder with fc2 features, and its cells."""
    path, _ = plate
    assert _screen(path, model, tmp_path / "out", "--features", "fc2") == 0
    cells = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    assert sum(c.startswith("Cells_DeepLoc_fc2_") for c in cells.columns) == 8
    return tmp_path / "out", cells


def test_pycytominer_aggregates_the_screens_cells(featured):
    pycytominer = pytest.importorskip("pycytominer")
    out, cells = featured
    wells = pycytominer.aggregate(cells, strata=["Metadata_Plate", "Metadata_Well"])
    assert wells["Metadata_Well"].tolist() == ["A01", "B03"]
    ours = pd.read_parquet(out / "wells.parquet")
    np.testing.assert_allclose(
        wells["Cells_DeepLoc_Prob_ER"], ours["Cells_DeepLoc_Prob_ER"], rtol=1e-5
    )


def test_anndata_reads_the_screens_h5ad(featured, model):
    anndata = pytest.importorskip("anndata")  # CI installs it apart: see .ci/run
    out, cells = featured
    adata = anndata.read_h5ad(out / "cells.h5ad")
    assert adata.X.shape == (20, 8)
    assert list(adata.obs["Metadata_Well"].astype(str)) == cells["Metadata_Well"].tolist()
    assert list(adata.uns["classes"]) == CLASSES
    assert adata.uns["model"] == DeepLocModel.load(model).digest()


def test_changes_between_two_screen_outputs(plates, model, tmp_path, capsys):
    for version, (path, _) in plates.items():
        assert _screen(path, model, tmp_path / version) == 0
    out = tmp_path / "changes.parquet"
    args = ["changes", str(tmp_path / "0.4"), str(tmp_path / "0.5"), "-o", str(out)]
    assert main(args) == 0
    table = pd.read_parquet(out)
    assert sorted(set(table["Metadata_Well"])) == ["A01", "B03"]
    assert not table["significant"].any()  # the same cells in both: nothing changed
    assert main([*args[:2], str(tmp_path / "none"), "-o", str(out)]) == 2
    assert "cells.parquet" in capsys.readouterr().err
    other = _model(tmp_path / "other", seed=1)
    assert _screen(plates["0.5"][0], other, tmp_path / "other-model") == 0
    assert main([*args[:2], str(tmp_path / "other-model"), "-o", str(out)]) == 2
    assert "predicted differently" in capsys.readouterr().err
    # Copied away from their folders, the tables still record their model
    untreated, treated = tmp_path / "untreated.parquet", tmp_path / "treated.parquet"
    shutil.copy(tmp_path / "0.5" / "cells.parquet", untreated)
    shutil.copy(tmp_path / "other-model" / "cells.parquet", treated)
    with pytest.raises(ValueError, match="predicted differently"):
        write_changes(untreated, treated, out)
    table = pd.read_parquet(treated)
    table.attrs.clear()  # a table from elsewhere: no record
    table.to_parquet(treated)
    with pytest.warns(
        UserWarning, match=r"No record of the model that predicted .*/treated.parquet"
    ):
        write_changes(untreated, treated, out)


def test_a_well_whose_cells_all_died_is_counted(plate, model, tmp_path):
    import zarr

    path, written = plate
    run_screen(model, tmp_path / "untreated", plate=path, labels="cells", verbose=0)
    for key in written:
        if key.startswith("B/3/"):  # no cell segmented in either field of well B03
            for _, level in zarr.open_group(path / key / "labels" / "cells").arrays():
                level[...] = 0
    cells, wells = run_screen(model, tmp_path / "out", plate=path, labels="cells", verbose=0)
    assert "B03" not in set(cells["Metadata_Well"])
    on_disk = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    assert cells["Metadata_Predicted_Class"].dtype == on_disk["Metadata_Predicted_Class"].dtype
    dead = wells.set_index("Metadata_Well").loc["B03"]
    assert dead["Metadata_Object_Count"] == 0 and pd.isna(dead["Metadata_Predicted_Class"])
    assert dead.filter(like="Cells_DeepLoc_Prob_").isna().all()
    assert wells["Metadata_Well"].tolist() == ["A01", "B03"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "wells.parquet"), wells)
    run_screen(model, tmp_path / "out", plate=path, labels="cells", csv=True, verbose=0)
    (tmp_path / "copies").mkdir()  # the CSV copies alone say so too
    for name in ("cells.csv", "wells.csv"):
        shutil.copy(tmp_path / "out" / name, tmp_path / "copies" / name)
    for treated in ("out", "copies"):
        changes = write_changes(tmp_path / "untreated", tmp_path / treated, tmp_path / "c.csv")
        status = changes.groupby("Metadata_Well")["status"].unique()
        assert list(status["B03"]) == ["no cells in screen B"], treated


def test_plate_fields_run_on_dask_workers(plates, model, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, _ = plates["0.5"]
    local, _ = run_screen(model, tmp_path / "local", plate=path, labels="cells", verbose=0)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote, _ = run_screen(
            model, tmp_path / "dask", plate=path, labels="cells", client=client, verbose=0
        )
    pd.testing.assert_frame_equal(local, remote, check_exact=False, rtol=1e-5, atol=1e-6)


def _blobs(shape, centres, seed):
    """A marker channel of bright discs on a dim background, and a protein channel."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    marker = rng.normal(100, 5, shape)
    for row, col in centres:
        marker[(rows - row) ** 2 + (cols - col) ** 2 < 64] += 1000
    return np.stack([rng.normal(300, 20, shape), marker]).astype(np.uint16)


def test_a_folder_of_fields_with_cellpose_masks(model, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    centres = [(30, 30), (30, 90), (90, 60)]
    for name, seed in (("r01c01f01", 0), ("r01c02f01", 1)):
        pixels = _blobs((128, 128), centres, seed)
        for channel, plane in zip(("ch1", "ch2"), pixels):
            tifffile.imwrite(images / f"{name}-{channel}.tiff", plane)
        labels = np.zeros((128, 128), np.uint16)
        for value, (row, col) in zip((3, 5, 9), centres):
            labels[row - 4 : row + 4, col - 4 : col + 4] = value
        tifffile.imwrite(masks / f"{name}-ch1_cp_masks.tif", labels)
    out = tmp_path / "out"
    args = ["screen", str(model), "--images", str(images), "--labels", str(masks), "-o", str(out)]
    assert main(args) == 0
    cells = pd.read_parquet(out / "cells.parquet")
    assert cells["Metadata_ObjectNumber"].tolist() == [3, 5, 9] * 2
    assert cells["Metadata_Well"].tolist() == ["A01"] * 3 + ["A02"] * 3  # as plates name them
    assert set(cells["Metadata_Plate"]) == {"images"}
    np.testing.assert_allclose(cells["Metadata_Location_Center_Y"], [29.5, 29.5, 89.5] * 2)
    found = main(["screen", str(model), "--images", str(images), "-o", str(tmp_path / "found")])
    assert found == 0  # without labels, the discs are found in the marker channel
    found = pd.read_parquet(tmp_path / "found" / "cells.parquet")
    assert len(found) == 6 and found["Metadata_ObjectNumber"].tolist() == [1, 2, 3] * 2
    data = tmp_path / "cells.h5"
    crop = ["crop", "--images", str(images), "--labels", str(masks), "--border", "pad"]
    assert main([*crop, "-o", str(data)]) == 0
    X, y = load_deeploc_hdf5(data)
    assert X.shape == (6, 2, 64, 64) and y is None
    (masks / "r01c02f01-ch1_cp_masks.tif").unlink()
    assert main([*args[:-1], str(tmp_path / "missing")]) == 2
    assert "No label image in" in capsys.readouterr().err
    tifffile.imwrite(masks / "r01c02f01.png.tif", np.zeros((64, 64), np.uint16))
    assert main([*args[:-1], str(tmp_path / "small")]) == 2
    assert "the label image is 64x64 pixels, the field 128x128" in capsys.readouterr().err


def test_label_images_are_paired_by_name_and_never_guessed(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for name in ("r01c01f01", "r01c01f10"):
        for channel in ("ch1", "ch2", "ch10"):
            tifffile.imwrite(images / f"{name}-{channel}.tiff", np.zeros((8, 8), np.uint16))
    labels = np.zeros((8, 8), np.uint16)
    labels[2:4, 2:4] = 7
    np.save(masks / "r01c01f01.npy", labels)  # the field's name without its channel token
    np.save(masks / "r01c01f10-ch1_cp_masks.npy", labels * 2)  # Cellpose's name
    source = FolderFields(images, labels=masks)
    assert source.keys == ["r01c01f01-ch1.tiff", "r01c01f10-ch1.tiff"]  # not the ch10 images
    assert [source.read(key)[1]["ObjectNumber"].item() for key in source.keys] == [7, 14]
    np.save(masks / "r01c01f10-ch1_seg.npy", {"masks": labels})  # Cellpose's session file
    tifffile.imwrite(masks / "r01c01f10-ch1_flows.tif", np.zeros((8, 8, 3), np.uint8))  # its flows
    tifffile.imwrite(masks / "r01c01f10-ch1_cp_outlines.tif", labels)
    tifffile.imwrite(masks / "r01c01f10-ch1_cp_output.tif", labels)  # its plot
    assert FolderFields(images, labels=masks).read(source.keys[1])[1]["ObjectNumber"].item() == 14
    np.save(masks / "r01c01f10-ch1_masks.npy", labels)
    with pytest.raises(ValueError, match=r"2 label images in .* match field r01c01f10-ch1\.tiff"):
        FolderFields(images, labels=masks)


def test_a_label_image_is_never_another_fields_nor_another_channel(tmp_path):
    for name in ("r01c01f01", "r01c01f01_2"):
        for channel in ("ch1", "ch2", "ch3"):  # ch3: a channel beside the fields, not a mask
            tifffile.imwrite(tmp_path / f"{name}-{channel}.tiff", np.ones((8, 8), np.uint16))
    labels = np.zeros((8, 8), np.uint16)
    labels[2:4, 2:4] = 7
    np.save(tmp_path / "r01c01f01_2_cp_masks.npy", labels)  # extends r01c01f01 too
    with pytest.raises(FileNotFoundError, match=r"No label image .* field r01c01f01-ch1\.tiff"):
        FolderFields(tmp_path, labels=tmp_path)
    np.save(tmp_path / "r01c01f01_cp_masks.npy", labels * 2)
    source = FolderFields(tmp_path, labels=tmp_path)
    assert [source.read(key)[1]["ObjectNumber"].item() for key in source.keys] == [14, 7]


def _edit_metadata(group, edit, *, array=False):
    """Edit a group's NGFF metadata (or an array's own metadata) in a 0.4 or 0.5 plate."""
    import json

    v2 = group / (".zarray" if array else ".zattrs")
    path = v2 if v2.exists() else group / "zarr.json"
    document = json.loads(path.read_text())
    edit(document if array or v2.exists() else document["attributes"]["ome"])
    path.write_text(json.dumps(document))


def _level0_chunk(image):
    """The largest chunk file of a multiscale image's level 0 (ome-zarr names it s0)."""
    chunks = [p for p in (image / "s0").rglob("*") if p.is_file() and p.name[0] not in ".z"]
    return max(chunks, key=lambda p: p.stat().st_size)


def test_hostile_plates_are_one_clear_line(plate, model, tmp_path, capsys):
    path, _ = plate
    _edit_metadata(path / "A" / "1" / "0", lambda ome: ome["multiscales"][0].update(datasets=[]))
    assert _screen(path, model, tmp_path / "a") == 2
    assert "lists no resolution level" in capsys.readouterr().err
    _edit_metadata(path, lambda ome: ome["plate"].update(wells=[]))
    assert _screen(path, model, tmp_path / "b") == 2
    assert "lists no field" in capsys.readouterr().err


def test_damaged_or_oversized_pixels_name_the_field(plate, model, tmp_path, capsys):
    path, _ = plate
    chunk = _level0_chunk(path / "B" / "3" / "1")
    chunk.write_bytes(b"\x00garbage" * (chunk.stat().st_size // 8 + 1))
    assert _screen(path, model, tmp_path / "a") == 2
    assert "B/3/1" in capsys.readouterr().err
    _edit_metadata(
        path / "A" / "1" / "0" / "s0",
        lambda meta: meta.update(shape=[2, 200_000, 200_000]),
        array=True,
    )
    found = ["screen", str(model), "--plate", str(path), "-o", str(tmp_path / "b")]
    assert main(found) == 2  # without labels (with them, their size differs first)
    error = capsys.readouterr().err
    assert "A/1/0" in error and "fits in memory" in error


def test_channels_and_marker_are_checked_before_any_field(plate, model, tmp_path, capsys):
    path, _ = plate
    assert _screen(path, model, tmp_path / "a", "--channels", "GFP") == 2
    assert "read with 1 channel(s); the model takes 2" in capsys.readouterr().err
    found = ["screen", str(model), "--plate", str(path), "-o", str(tmp_path / "b")]
    assert main([*found, "--marker", "-1"]) == 2
    assert "marker=-1 is not one of the 2 channels" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert _screen(path, model, tmp_path / "c") == 0
    assert _screen(path, model, tmp_path / "c", "--channels", "GFP", "RFP") == 0  # the same
    assert "4 of 4 fields already done" in capsys.readouterr().out


def test_a_symlinked_well_is_part_of_the_plates_identity(plate, model, tmp_path, capsys):
    path, _ = plate
    elsewhere = tmp_path / "elsewhere"
    shutil.move(path / "B" / "3", elsewhere)
    (path / "B" / "3").symlink_to(elsewhere, target_is_directory=True)
    assert _screen(path, model, tmp_path / "out") == 0
    chunk = _level0_chunk(elsewhere / "1" / "labels" / "cells")
    os.utime(chunk, ns=(chunk.stat().st_atime_ns, chunk.stat().st_mtime_ns + 10**9))
    assert _screen(path, model, tmp_path / "out") == 2
    assert "source" in capsys.readouterr().err


def test_overwrite_leaves_no_file_of_the_previous_run(plate, model, tmp_path, capsys):
    path, _ = plate
    out = tmp_path / "out"
    assert _screen(path, model, out, "--csv", "--features", "fc1") == 0
    assert _screen(path, model, out, "--overwrite") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cells.h5ad",
        "cells.parquet",
        "cells.parquet.parts",
        "wells.parquet",
    ]
    assert _screen(path, model, out, "--overwrite", "--border", "drop") == 2  # 64-pixel fields
    assert "No cell in the 4 fields could be cropped" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["cells.parquet.parts"]


def test_folder_fields_beside_their_masks_and_odd_names(model, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    centres = [(30, 30), (90, 60)]
    labels = np.zeros((128, 128), np.uint16)
    labels[26:34, 26:34], labels[86:94, 56:64] = 4, 8
    for site in (1, 2, 10):
        pixels = _blobs((128, 128), centres, site)
        for channel, plane in zip(("ch1", "ch2"), pixels):
            tifffile.imwrite(images / f"batch1_r01c01f{site}-{channel}.tiff", plane)
        tifffile.imwrite(images / f"batch1_r01c01f{site}-ch1_cp_masks.png", labels)
    (images / "notes-ch1.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["screen", str(model), "--images", str(images), "--labels", str(images), "-o", str(out)]
    assert main(args) == 0
    cells = pd.read_parquet(out / "cells.parquet")
    assert cells["Metadata_ObjectNumber"].tolist() == [4, 8] * 3
    assert cells["Metadata_Image"].unique().tolist() == [
        f"batch1_r01c01f{site}-ch1.tiff"
        for site in (1, 2, 10)  # f2 before f10
    ]
    assert cells["Metadata_Site"].tolist() == [0, 0, 1, 1, 2, 2]
    for mask in images.glob("*_cp_masks.png"):
        mask.rename(images / mask.name.replace("-ch1_cp_masks.png", ".png"))  # token removed
    assert main([*args[:-1], str(tmp_path / "renamed")]) == 0
    for mask in images.glob("*.png"):
        mask.unlink()  # no mask: a channel image is never taken for one
    assert main([*args[:-1], str(tmp_path / "none")]) == 2
    assert "No label image in" in capsys.readouterr().err


def test_reading_ahead_gives_the_same_profiles(plates, model, tmp_path, monkeypatch):
    import torch

    path, _ = plates["0.4"]
    plain, _ = run_screen(model, tmp_path / "plain", plate=path, labels="cells", verbose=0)
    reads = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 0)  # a core left free: read ahead
    monkeypatch.setattr(sources.Prefetched, "read", _counted(sources.Prefetched.read, reads))
    ahead, _ = run_screen(model, tmp_path / "ahead", plate=path, labels="cells", verbose=0)
    assert len(reads) == 4
    pd.testing.assert_frame_equal(plain, ahead)


def _counted(function, calls):
    def counted(*args, **kwargs):
        calls.append(args[1:])
        return function(*args, **kwargs)

    return counted


def test_a_field_that_fails_when_read_ahead_fails_in_its_turn(plates):
    path, _ = plates["0.5"]
    source = PlateFields(path, labels="cells")
    broken = source.keys[1]
    read = source.read

    def read_or_fail(key):
        if key == broken:
            raise ValueError(f"cannot read {key}")
        return read(key)

    source.read = read_or_fail
    with Prefetched(source, source.keys) as ahead:
        image, cells = ahead.read(source.keys[0])  # the next field's error is not raised here
        np.testing.assert_array_equal(image, read(source.keys[0])[0])
        with pytest.raises(ValueError, match=broken):
            ahead.read(broken)


def test_a_field_storing_its_channels_in_another_order_is_read_by_name(plate, model, tmp_path):
    path, written = plate
    _edit_metadata(path / "B" / "3" / "1", lambda ome: ome["omero"]["channels"].reverse())
    opened = open_plate(path)
    swapped = opened.read_field("B/3/1", ["RFP", "GFP"])
    np.testing.assert_array_equal(swapped, written["B/3/1"][0])  # names now say RFP, GFP
    by_index = PlateFields(path, [0, 1], labels="cells")
    image, _ = by_index.read("B/3/1")  # [0, 1] means the first field's GFP, RFP: by name
    np.testing.assert_array_equal(image, written["B/3/1"][0][::-1])
    assert by_index.identity()["channels"] == ["GFP", "RFP"]
    assert PlateFields(path, ["GFP", "RFP"], labels="cells").identity() == by_index.identity()


def _set_names(image, names):
    _edit_metadata(image, lambda ome: ome["omero"].update(channels=[{"label": n} for n in names]))


def test_channel_names_that_do_not_tell_one_channel_are_refused(plate):
    path, _ = plate
    _set_names(path / "A" / "1" / "0", ["GFP", "dummy", "RFP"])  # 3 names, 2 stored channels
    with pytest.raises(ValueError, match=r"names its 2 stored channel\(s\).*'GFP' is not one"):
        PlateFields(path, ["GFP", "RFP"], labels="cells")
    _set_names(path / "A" / "1" / "0", ["GFP"])
    image, _ = PlateFields(path, [0, 1], labels="cells").read("A/1/0")  # indices: as asked
    assert image.shape[0] == 2
    _set_names(path / "A" / "1" / "0", ["RFP", "RFP"])
    with pytest.raises(ValueError, match="'RFP' is not one channel"):
        PlateFields(path, ["RFP"], labels="cells")


def test_channels_chosen_by_position_are_refused_where_fields_name_them_apart(plate):
    path, written = plate
    _set_names(path / "A" / "1" / "0", ["GFP", ""])  # the first field: no usable names
    _set_names(path / "B" / "3" / "1", ["RFP", "GFP"])  # another field: stored the other way
    with pytest.raises(ValueError, match="stored channel 0 is 'GFP' in field A/1/0 but 'RFP'"):
        PlateFields(path, labels="cells", model_channels=["protein", "marker"])
    source = PlateFields(path, [0, 1], labels="cells")  # asked by position: read so
    np.testing.assert_array_equal(source.read("B/3/1")[0], written["B/3/1"][0])


def test_a_model_channel_named_at_another_position_is_not_read_by_position(plate):
    path, written = plate
    for names in (["rfp", "gfp"], [" RFP", "GFP "]):  # in another case, spaces around them
        for image_path in written:
            _set_names(path / image_path, names)
        source = PlateFields(path, labels="cells", model_channels=["GFP", "RFP"])
        np.testing.assert_array_equal(source.read("A/1/0")[0], written["A/1/0"][0][::-1])
        chosen = PlateFields(path, ["GFP", "RFP"], labels="cells")  # by the user: the same
        np.testing.assert_array_equal(chosen.read("A/1/0")[0], written["A/1/0"][0][::-1])
    for image_path in written:
        _set_names(path / image_path, ["mCherry", "GFP"])
    with pytest.raises(ValueError, match=r"the model's channel 0 \('GFP'\) is its channel 1"):
        PlateFields(path, labels="cells", model_channels=["GFP", "RFP"])
    for image_path in written:
        _set_names(path / image_path, ["Cy3", "FITC"])  # none of the model's names: by position
    source = PlateFields(path, labels="cells", model_channels=["GFP", "RFP"])
    np.testing.assert_array_equal(source.read("A/1/0")[0], written["A/1/0"][0])


def test_cli_channels_that_are_digits_are_the_plates_names_first(plate, model, tmp_path):
    path, written = plate
    for image_path in written:
        _set_names(path / image_path, ["2", "1"])  # wavelengths or numbers as names
    assert _screen(path, model, tmp_path / "cli", "--channels", "1", "2") == 0
    by_index, _ = run_screen(model, tmp_path / "api", plate=path, labels="cells", channels=[1, 0])
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cli" / "cells.parquet"), by_index)


def test_acquisitions_of_a_well_are_kept_apart(plate, model, tmp_path):
    from sklearn_deeploc.profiles import profile_changes

    path, written = plate
    for well in ("A/1", "B/3"):  # field 0 imaged on day 1, field 1 on day 2
        _edit_metadata(
            path / well,
            lambda ome: [
                image.update(acquisition=site + 1)
                for site, image in enumerate(ome["well"]["images"])
            ],
        )
    fields = open_plate(path).fields
    assert fields[["acquisition", "site"]].values.tolist() == [[1, 0], [2, 0]] * 2  # same sites
    source = PlateFields(path, ["GFP", "RFP"], labels="cells")
    with Prefetched(source, source.keys) as ahead:  # as a screen reads with a core to spare
        assert [ahead.metadata(key)["acquisition"] for key in source.keys] == [1, 2, 1, 2]
    cells, wells = run_screen(model, tmp_path / "out", plate=path, labels="cells")
    assert cells.groupby("Metadata_Image")["Metadata_Acquisition"].first().to_dict() == {
        "A/1/0": 1,
        "A/1/1": 2,
        "B/3/0": 1,
        "B/3/1": 2,
    }
    keys = ["Metadata_Well", "Metadata_Acquisition", "Metadata_Object_Count"]
    assert wells[keys].values.tolist() == [
        ["A01", 1, 5],
        ["A01", 2, 5],
        ["B03", 1, 5],
        ["B03", 2, 5],
    ]
    with pytest.raises(ValueError, match="holds 2 acquisitions .*compare acquisition by"):
        profile_changes(cells, cells)
    _edit_metadata(path / "A/1", lambda ome: ome["well"]["images"][0].pop("acquisition"))
    cells, _ = run_screen(model, tmp_path / "unnamed", plate=path, labels="cells")
    acquisitions = cells.groupby("Metadata_Image")["Metadata_Acquisition"].first()
    assert acquisitions.dtype == "Int64"  # nullable: not 1.0 and NaN
    assert acquisitions.astype(object).fillna(0).tolist() == [0, 2, 1, 2]
    for well in ("A/1", "B/3"):  # one acquisition, and one image without: a column
        _edit_metadata(
            path / well,
            lambda ome: [image.update(acquisition=1) for image in ome["well"]["images"][1:]],
        )
    fields = PlateFields(path, ["GFP", "RFP"], labels="cells").fields
    assert not fields.duplicated(["well", "site", "acquisition"]).any()
    _edit_metadata(path / "B/3", lambda ome: ome["well"]["images"][0].update(acquisition=[1]))
    with pytest.raises(ValueError, match=r"Well B/3 .*acquisition \[1\]; expected NGFF's integer"):
        open_plate(path)
    for well in ("A/1", "B/3"):  # one acquisition: no column
        _edit_metadata(
            path / well,
            lambda ome: [image.update(acquisition=1) for image in ome["well"]["images"]],
        )
    assert "acquisition" not in PlateFields(path, ["GFP", "RFP"], labels="cells").fields


def test_harmony_z_planes_are_projected_and_the_first_time_point_read(tmp_path):
    images = tmp_path / "Images"
    images.mkdir()
    stacks = {}
    for field in (1, 2):
        for time in (1, 2):
            planes = [
                _blobs((96, 96), [(30, 30 + 10 * p)], 10 * field + p + time) for p in range(3)
            ]
            stacks[field, time] = np.max(planes, axis=0)
            for plane, pixels in enumerate(planes, start=1):
                for channel, image in zip(("ch1", "ch2"), pixels):
                    name = f"r02c03f{field:02d}p{plane:02d}-{channel}sk{time}fk1fl1.tiff"
                    tifffile.imwrite(images / name, image)
    with pytest.warns(UserWarning, match=r"holds 2 time points .*the first \(sk1\) is read"):
        source = FolderFields(images)
    assert source.fields["site"].tolist() == [0, 1]
    for key, field in zip(source.keys, (1, 2)):
        np.testing.assert_array_equal(source.read(key)[0], stacks[field, 1])
    for channel, plane in zip(("ch1", "ch2"), _blobs((96, 96), [(40, 40)], 0)):
        tifffile.imwrite(images / f"r05c05f01-{channel}.tiff", plane)  # no planes, no sk
    with pytest.warns(UserWarning, match="holds 2 time points"):
        assert FolderFields(images).keys[-1] == "r05c05f01-ch1.tiff"
    from sklearn_deeploc.jobs import find_cell_table

    with pytest.raises(ValueError, match="have z planes .* which a cell table cannot name"):
        find_cell_table(images, verbose=0)
    for channel in ("ch1", "ch2"):  # a plane of another size
        tifffile.imwrite(images / f"r02c03f02p02-{channel}sk1fk1fl1.tiff", np.zeros((8, 8), "u2"))
    with pytest.raises(
        ValueError, match=r"its z plane r02c03f02p02-ch1sk1fk1fl1.tiff is \(2, 8, 8\)"
    ):
        source.read(source.keys[1])
    for path in images.glob("r02c03f01p*sk1*"):  # field 1 at the second time point only
        path.unlink()
    with pytest.raises(
        ValueError, match=r"f01p01-ch1sk2fk1fl1.tiff in .* has no image at the first"
    ):
        FolderFields(images)


HARMONY_INDEX = """<?xml version="1.0" encoding="utf-8"?>
<EvaluationInputData xmlns="http://www.perkinelmer.com/PEHH/HarmonyV5" Version="2">
  <Plates><Plate><PlateID>BC0042</PlateID><Name>{name}</Name></Plate></Plates>
  <Images><Image Version="1"><URL>r01c01f01p01-ch1sk1fk1fl1.tiff</URL></Image></Images>
</EvaluationInputData>"""


@pytest.mark.parametrize(
    ("index", "plate"),
    [
        (None, "Images"),
        (HARMONY_INDEX.format(name="Screen 7"), "Screen 7"),
        (HARMONY_INDEX.format(name=""), "BC0042"),
        ("<EvaluationInputData>cut short", "Measurement 1"),
    ],
)
def test_a_harmony_export_is_named_by_its_index(tmp_path, index, plate):
    images = tmp_path / "Measurement 1" / "Images"
    images.mkdir(parents=True)
    for channel in ("ch1", "ch2"):
        tifffile.imwrite(images / f"r01c01f01p01-{channel}sk1fk1fl1.tiff", np.zeros((8, 8), "u2"))
    if index is not None:
        (images / "Index.idx.xml").write_text(index)
    source = FolderFields(images)
    assert source.fields[["plate", "well"]].values.tolist() == [[plate, "A01"]]
    assert source.identity()["plate"] == plate  # a screen resumed after a rename is refused


def test_imagexpress_names_with_their_own_channel_tokens(tmp_path):
    images = tmp_path / "PLATE1"
    images.mkdir()
    for site in (1, 2):
        for channel in (1, 2):
            name = f"PLATE1_A01_s{site}_w{channel}"
            tifffile.imwrite(images / f"{name}.tif", np.full((16, 16), 10 * site + channel, "u2"))
            tifffile.imwrite(images / f"{name}_thumb.tif", np.zeros((4, 4), np.uint16))
    source = FolderFields(images, ["w1", "w2"], well_pattern=r"[A-P]\d\d")
    assert source.fields[["well", "site"]].values.tolist() == [["A01", 0], ["A01", 1]]
    assert [source.read(key)[0][:, 0, 0].tolist() for key in source.keys] == [[11, 12], [21, 22]]


def test_channels_named_by_digits_are_never_the_digits_of_a_well(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for well, value in (("r01c01", 10), ("r02c01", 20)):
        for channel in (1, 2):
            image = np.full((16, 16), value + channel, "u2")
            tifffile.imwrite(images / f"{well}f01-{channel}.tif", image)
    source = FolderFields(images, ["1", "2"])
    assert source.keys == ["r01c01f01-1.tif", "r02c01f01-1.tif"]
    assert [source.read(key)[0][:, 0, 0].tolist() for key in source.keys] == [[11, 12], [21, 22]]


def test_a_well_spelled_as_a_channel_is_not_taken_for_one(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for well, value in (("C01", 10), ("C02", 20)):  # CellVoyager: the channel token comes last
        for channel in (1, 2, 3):
            name = f"Plate_{well}_T0001F001L01A01Z01C0{channel}.tif"
            tifffile.imwrite(images / name, np.full((16, 16), value + channel, "u2"))
    with pytest.raises(ValueError, match=r"holds the channel tokens \['C01', 'C02'\]"):
        FolderFields(images, ["C01", "C02"])  # the well C01 is named like a channel
    source = FolderFields(images, ["Z01C01", "Z01C02"], well_pattern=r"_(?P<well>[A-P]\d\d)_")
    assert source.fields["well"].tolist() == ["C01", "C02"]
    assert [source.read(key)[0][:, 0, 0].tolist() for key in source.keys] == [[11, 12], [21, 22]]


def test_an_unchosen_channel_beside_the_masks_is_never_a_label_image(tmp_path):
    images = tmp_path / "Plate1"
    images.mkdir()
    labels = np.zeros((32, 32), np.uint16)
    labels[10:20, 10:20] = 4
    for site in (1, 2):
        for channel in (1, 2, 3):
            tifffile.imwrite(images / f"Plate1_B03_s{site}_w{channel}.tif", labels + channel)
    tifffile.imwrite(images / "Plate1_B03_s1_w1_cp_masks.tif", labels)
    tifffile.imwrite(images / "Plate1_B03_s2_w1_thumb.tif", labels[::4, ::4])  # MetaXpress's
    (images / "._Plate1_B03_s1_w1.tif").write_bytes(b"macOS metadata, not a TIFF")
    with pytest.raises(FileNotFoundError, match="No label image .* for field Plate1_B03_s2_w1"):
        FolderFields(images, ["w1", "w2"], labels=images)  # not its w3 image
    tifffile.imwrite(images / "Plate1_B03_s2_w1_cp_masks.tif", labels)
    source = FolderFields(images, ["w1", "w2"], labels=images)
    assert source.keys == ["Plate1_B03_s1_w1.tif", "Plate1_B03_s2_w1.tif"]  # no ._ file


def test_cellvoyager_z_planes_are_projected_and_the_first_time_point_read(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for time in (1, 2):
        for plane in (1, 2, 3):
            for channel in (1, 2):
                name = f"Plate_B03_T000{time}F001L01A01Z0{plane}C0{channel}.tif"
                pixels = np.full((16, 16), 100 * time + 10 * plane + channel, "u2")
                tifffile.imwrite(images / name, pixels)
    with pytest.warns(UserWarning, match=r"holds 2 time points \(T\); the first \(T1\) is read"):
        source = FolderFields(images, ["C01", "C02"], well_pattern=r"_(?P<well>[A-P]\d\d)_")
    assert source.keys == ["Plate_B03_T0001F001L01A01Z01C01.tif"]  # one field, not six sites
    assert source.read(source.keys[0])[0][:, 0, 0].tolist() == [131, 132]  # the brightest plane


def test_model_channels_match_names_exactly_before_in_any_case():
    assert sources._match_names(["GFP", "RFP"], ["rfp", "GFP", "gfp"]) == ["GFP", "rfp"]
    assert sources._match_names(["GFP"], ["gfp", "Gfp"]) == [None]  # two in any case: none
    assert sources._match_names(["GFP", "RFP"], ["RFP ", " gfp"]) == [" gfp", "RFP "]


def test_a_field_without_its_first_channel_is_refused_not_skipped(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("f01-ch1", "f01-ch2", "f02-ch2", "f03-ch1", "f03-ch2", "f03-ch1_cp_masks"):
        tifffile.imwrite(images / f"{name}.tif", np.zeros((16, 16), np.uint16))
    with pytest.raises(ValueError, match=r"f02-ch2.tif in .* has no ch1 image \(f02-ch1.tif\)"):
        FolderFields(images)


def test_masks_beside_fields_are_never_fields(model, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    pixels = _blobs((128, 128), [(30, 30), (90, 60)], 0)
    for channel, plane in zip(("ch1", "ch2"), pixels):
        tifffile.imwrite(images / f"r01c01f01-{channel}.tiff", plane)
    tifffile.imwrite(images / "r01c01f01-ch1_cp_masks.tif", np.zeros((128, 128), np.uint16))
    out = tmp_path / "out"
    assert main(["screen", str(model), "--images", str(images), "-o", str(out)]) == 0
    cells = pd.read_parquet(out / "cells.parquet")
    assert set(cells["Metadata_Image"]) == {"r01c01f01-ch1.tiff"} and len(cells) == 2


def test_object_numbers_keep_one_type_across_fields(tmp_path):
    dense, sparse = np.zeros((8, 8), np.uint64), np.zeros((8, 8), np.uint64)
    dense[1, 1], sparse[1, 1], sparse[2, 2] = 1, 2**63 + 5, 2**63 + 6
    both = pd.concat([cells_from_labels(dense), cells_from_labels(sparse)])
    assert both["ObjectNumber"].tolist() == [1, 2**63 + 5, 2**63 + 6]
    assert both["ObjectNumber"].dtype == np.uint64


def test_a_well_path_that_is_not_row_and_column_is_named(plate, tmp_path):
    path, _ = plate

    def deeper(ome):
        ome["plate"]["wells"][0]["path"] = "X/A/1"

    _edit_metadata(path, deeper)
    shutil.copytree(path / "A", path / "X" / "A")
    with pytest.raises(
        ValueError, match=r"Well X/A/1 of plate .*expected a well path 'row/column'"
    ):
        open_plate(path)


def test_workers_run_on_a_local_cluster_closed_afterwards(plates, model, tmp_path):
    pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    path, _ = plates["0.5"]
    before = {p.pid for p in psutil.Process().children(recursive=True)}  # joblib's, say
    assert _screen(path, model, tmp_path / "out", "--workers", "1") == 0
    assert len(pd.read_parquet(tmp_path / "out" / "cells.parquet")) == 20
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid not in before and "resource_tracker" not in " ".join(child.cmdline()):
                left.append(child)
        except psutil.NoSuchProcess:  # it ended while we looked
            pass
    assert not left  # no worker left running


def test_find_cell_table_names_no_wells_so_warns_of_none(tmp_path):
    import warnings

    from sklearn_deeploc.jobs import find_cell_table

    for channel in (1, 2):  # no Opera well in these names: a screen would warn
        plane = _blobs((96, 96), [(40, 40)], channel)[0]
        tifffile.imwrite(tmp_path / f"Plate1_B03_s1_w{channel}.tif", plane)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = find_cell_table(tmp_path, channels=["w1", "w2"], marker=0, verbose=0)
    assert table["Image Path"].unique().tolist() == ["Plate1_B03_s1_w1.tif"]


def test_masks_named_after_the_marker_channel_are_found(tmp_path):
    images = tmp_path / "Images"
    images.mkdir()
    labels = np.zeros((32, 32), np.uint16)
    labels[5:15, 5:15], labels[20:30, 20:30] = 3, 8
    for channel in ("ch1", "ch2", "ch3"):
        tifffile.imwrite(images / f"r01c01f01p01-{channel}sk1fk1fl1.tiff", labels + 1)
    # Cellpose segmented the marker (ch2), whose file names the masks
    tifffile.imwrite(images / "r01c01f01p01-ch2sk1fk1fl1_cp_masks.tif", labels)
    source = FolderFields(images, ["ch1", "ch2"], labels=images)
    assert source.read(source.keys[0])[1]["ObjectNumber"].tolist() == [3, 8]


def test_a_plate_source_reads_its_plate_from_another_folder(plate, tmp_path, monkeypatch):
    import pickle

    path, written = plate
    monkeypatch.chdir(path.parent)
    source = PlateFields(path.name, labels="cells")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # as a Dask worker started in another folder
    shipped = pickle.loads(pickle.dumps(source))
    image, _ = shipped.read(shipped.keys[0])
    np.testing.assert_array_equal(image, written[shipped.keys[0]][0][:2])


def test_a_screen_written_inside_its_plate_resumes(plate, model):
    path, _ = plate
    first, _ = run_screen(model, path / "deeploc", plate=path, labels="cells", verbose=0)
    again, _ = run_screen(model, path / "deeploc", plate=path, labels="cells", verbose=0)
    pd.testing.assert_frame_equal(first, again)


def test_fields_changed_during_a_screen_are_refused_and_its_parts_removed(
    plate, model, tmp_path, monkeypatch
):
    from sklearn_deeploc import jobs

    path, written = plate
    last = sorted(written)[-1]
    profiles = jobs._field_profiles

    def segmentation_lands_midway(*args):
        for file in (path / last).rglob("*"):  # as a new segmentation written over the masks
            os.utime(file, ns=(0, file.stat().st_mtime_ns + 10**9))
        return profiles(*args)

    monkeypatch.setattr(jobs, "_field_profiles", segmentation_lands_midway)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="changed during this run.*parts were removed"):
        run_screen(model, out, plate=path, labels="cells", verbose=0)
    assert not (out / "cells.parquet").exists()
    assert not [p for p in (out / "cells.parquet.parts").iterdir() if not p.name.startswith("lock")]
    monkeypatch.setattr(jobs, "_field_profiles", profiles)
    run_screen(model, out, plate=path, labels="cells", verbose=0)  # no overwrite needed


def test_each_cells_intensity_is_measured_and_abundance_changes_found(plate, model, tmp_path):
    import zarr

    path, written = plate
    untreated, _ = run_screen(model, tmp_path / "a", plate=path, labels="cells", verbose=0)
    column = next(c for c in untreated if c.startswith("Metadata_MeanIntensity_"))
    for key, (pixels, labels) in written.items():  # the mean of each cell's protein pixels
        cells = untreated[untreated["Metadata_Image"] == key]
        expected = [pixels[0][labels == n].mean() for n in cells["Metadata_ObjectNumber"]]
        np.testing.assert_allclose(cells[column], expected)
    for key in written:  # four times the protein in every cell, the same shapes
        for _, level in zarr.open_group(path / key).arrays():
            level[0] = level[0] * 4
    run_screen(model, tmp_path / "b", plate=path, labels="cells", verbose=0)
    changes = write_changes(tmp_path / "a", tmp_path / "b", tmp_path / "changes.csv")
    np.testing.assert_allclose(changes["log2_abundance"], 2.0, atol=0.01)
    assert changes["abundance_significant"].all()
    assert {"t", "significant", "status"} <= set(changes.columns)  # and the localization
