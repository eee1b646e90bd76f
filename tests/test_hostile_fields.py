"""Hostile images and cell tables get clear answers: huge headers, duplicates, overflow."""

import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage import io

from sklearn_deeploc import DeepLocModel, DeepLocNet
from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import load_deeploc_hdf5
from sklearn_deeploc.fields import read_cell_table, read_field
from sklearn_deeploc.jobs import run_screen
from sklearn_deeploc.screen import crop_cells, find_cells

CLAIMED = 1_000_000  # a 1e6 x 1e6 uint16 image: 2 TB, more than any machine holds


def _tiff_claiming(path, side):
    """A 4x4 TIFF whose header claims a side x side image (its strip stays 32 bytes)."""
    tifffile.imwrite(path, np.zeros((4, 4), np.uint16), metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tiff:
        tags = tiff.pages[0].tags
        for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tags[name].overwrite(side)
    return path


def _fields(folder, names, value=1.0, dtype=np.uint16):
    for name in names:
        for channel in ("ch1", "ch2"):
            image = np.full((100, 100), value, dtype)
            tifffile.imwrite(folder / name.replace("ch1", channel), image)


@pytest.fixture
def tiny_model(tmp_path):
    net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    return DeepLocModel(net, ["a", "b"]).save(tmp_path / "model")


def test_an_image_claiming_more_pixels_than_memory_is_refused_from_its_header(tmp_path):
    path = _tiff_claiming(tmp_path / "huge-ch1.tiff", CLAIMED)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"huge-ch1\.tiff.*\(1000000, 1000000\) uint16.*GB"):
        read_field(path)
    assert time.perf_counter() - start < 1  # read from the header: nothing allocated


def test_crop_names_the_huge_image_in_one_line(tmp_path, capsys):
    _tiff_claiming(tmp_path / "huge-ch1.tiff", CLAIMED)
    _tiff_claiming(tmp_path / "huge-ch2.tiff", CLAIMED)
    table = tmp_path / "cells.csv"
    pd.DataFrame({"Image Path": ["huge-ch1.tiff"], "Center_X": [50], "Center_Y": [50]}).to_csv(
        table, index=False
    )
    assert main(["crop", "--coords", str(table), "-o", str(tmp_path / "x.h5")]) == 2
    error = capsys.readouterr().err.splitlines()[-1]  # after the progress bar
    assert error.startswith("deeploc crop: error: Image file")
    assert "huge-ch1.tiff" in error and "memory is available" in error


def test_a_png_claiming_a_huge_size_is_named(tmp_path):
    path = tmp_path / "huge.png"
    io.imsave(path, np.ones((4, 4), np.uint8), check_contrast=False)
    png = bytearray(path.read_bytes())
    png[16:24] = struct.pack(">II", 100_000, 100_000)  # IHDR width and height
    png[29:33] = struct.pack(">I", zlib.crc32(png[12:29]))
    path.write_bytes(png)
    with pytest.raises(ValueError, match=r"Cannot read image file .*huge\.png: Image size"):
        read_field(path)


def test_running_out_of_memory_while_reading_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "field.tiff"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16))

    def out_of_memory(self, *args, **kwargs):
        raise MemoryError("Unable to allocate")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", out_of_memory)
    with pytest.raises(ValueError, match=r"memory.*field\.tiff"):
        read_field(path)


def test_a_batch_larger_than_the_data_is_only_the_data(rng, monkeypatch):
    net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    model = DeepLocModel(net, ["a", "b"])
    X = rng.random((3, 2, 64, 64)).astype(np.float32)
    huge = 10**12  # one batch of 1e12 cells would not fit; three cells do
    np.testing.assert_allclose(
        model.predict_proba(X, batch_size=huge, tta=False),
        model.predict_proba(X, tta=False),
        rtol=1e-5,
        atol=1e-6,
    )
    # Memory for two cells: a batch of the three is refused, a batch of two is not.
    room = 2 * model.bytes_per_cell()
    monkeypatch.setattr("sklearn_deeploc.validation.available_memory", lambda: room)
    with pytest.raises(ValueError, match=r"batch_size=1000000000000 needs .* batch of 3 cells"):
        model.predict_proba(X, batch_size=huge)
    assert model.predict_proba(X, batch_size=2).shape == (3, 2)


def test_a_well_pattern_matching_no_image_name_is_reported(tmp_path, tiny_model):
    names = ["plate1_A01-ch1.tiff", "plate1_A02-ch1.tiff"]
    _fields(tmp_path, names)
    table = pd.DataFrame({"Image Path": names, "Center_X": [50, 50], "Center_Y": [50, 50]})
    table = read_cell_table(table, folder=tmp_path)
    with pytest.warns(
        UserWarning, match=r"well_pattern 'r\\\\d\+c\\\\d\+'.*2 of 2.*plate1_A01-ch1\.tiff"
    ):
        cells, wells = run_screen(tiny_model, tmp_path / "out", cells=table, verbose=0)
    assert len(wells) == 2  # each field is its own well, as the warning says


def test_a_well_pattern_matching_every_image_name_is_silent(tmp_path, tiny_model):
    names = ["r01c01f01-ch1.tiff", "r01c01f02-ch1.tiff"]
    _fields(tmp_path, names)
    table = pd.DataFrame({"Image Path": names, "Center_X": [50, 50], "Center_Y": [50, 50]})
    table = read_cell_table(table, folder=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, wells = run_screen(tiny_model, tmp_path / "out", cells=table, verbose=0)
    assert wells["Metadata_Well"].tolist() == ["A01"]


def test_a_cell_tables_other_metadata_reaches_the_profiles(tmp_path, tiny_model):
    names = ["r01c01f01-ch1.tiff", "r01c02f01-ch1.tiff"]
    _fields(tmp_path, names)
    table = pd.DataFrame(
        {
            "Image Path": np.repeat(names, 2),
            "Center_X": [30, 60, 30, 60],
            "Center_Y": 50,
            "Image_Metadata_Gene": ["PHO4", "PHO4", "ERG11", "ERG11"],  # ExportToDatabase's
            "Metadata_Dose": [0.0, 0.0, 1.5, 1.5],
            "Metadata_ObjectNumber": [9, 9, 9, 9],  # the profiles' own names: theirs are kept
            "Metadata_Object_Count": 4,
            "Metadata_Batch": ["b1", 2, "b1", 2],
            "Metadata_Compound": ["007", "007", "None", "None"],  # text, whatever it looks like
        }
    )
    with pytest.warns(UserWarning, match="Metadata_Batch mixes value types"):
        cells = read_cell_table(table, folder=tmp_path)
    profiles, _ = run_screen(tiny_model, tmp_path / "out", cells=cells, verbose=0)
    assert profiles["Metadata_Gene"].tolist() == ["PHO4", "PHO4", "ERG11", "ERG11"]
    assert profiles["Metadata_Dose"].tolist() == [0.0, 0.0, 1.5, 1.5]
    assert profiles["Metadata_ObjectNumber"].tolist() == [1, 2, 1, 2]
    assert "Metadata_Batch" not in profiles and "Metadata_Object_Count" not in profiles
    on_disk = pd.read_parquet(tmp_path / "out" / "cells.parquet")
    assert on_disk["Metadata_Gene"].tolist() == profiles["Metadata_Gene"].tolist()
    written = table.drop(columns="Metadata_Batch").assign(
        Metadata_Hours=["2.50", "24", "nan", "1e-05"],  # numbers as instruments write them
        Metadata_Barcode="12345678901234567890123",  # an identifier beyond int64
        Metadata_Lot=["123456789012345678", None, "2", "3"],  # beyond float64's 15 digits
        Metadata_Control=[True, False, True, False],
    )
    written.to_csv(tmp_path / "cells.csv", index=False)
    from_csv = read_cell_table(tmp_path / "cells.csv")
    assert from_csv["Metadata_Compound"].tolist() == ["007", "007", "None", "None"]
    assert from_csv["Metadata_Dose"].tolist() == [0.0, 0.0, 1.5, 1.5]
    np.testing.assert_array_equal(from_csv["Metadata_Hours"], [2.5, 24.0, np.nan, 1e-05])
    assert set(from_csv["Metadata_Barcode"]) == {"12345678901234567890123"}
    assert from_csv["Metadata_Lot"].iloc[0] == "123456789012345678"
    assert from_csv["Metadata_Control"].tolist() == [True, False, True, False]
    replicate = table.drop(columns="Metadata_Batch").assign(
        Metadata_Replicate=pd.array([1, None, 2, 2], dtype="Int64")
    )
    profiles, _ = run_screen(
        tiny_model, tmp_path / "typed", cells=read_cell_table(replicate, folder=tmp_path), verbose=0
    )
    assert profiles["Metadata_Replicate"].dtype == "Int64"  # not 1.0, 2.0 and NaN


def test_duplicate_rows_of_a_crop_table_are_reported_and_cropped_once(tmp_path):
    _fields(tmp_path, ["r01c01-ch1.tiff"])
    table = pd.DataFrame(
        {
            "Image Path": ["r01c01-ch1.tiff"] * 4,
            "Center_X": [50, 40, 50, 50],
            "Center_Y": [50, 40, 50, 50],
            "Label": ["ER", "ER", "ER", "ER"],
        }
    )
    table.to_csv(tmp_path / "cells.csv", index=False)
    options = ["--coords", str(tmp_path / "cells.csv"), "--label-column", "Label"]
    with pytest.warns(UserWarning, match=r"2 row\(s\) repeat.*row 2 repeats row 0.*once"):
        assert main(["crop", *options, "-o", str(tmp_path / "cells.h5")]) == 0
    X, y = load_deeploc_hdf5(tmp_path / "cells.h5")
    assert len(X) == 2 and list(y) == ["ER", "ER"]


def test_a_field_beyond_float32_range_is_refused_with_its_file(tmp_path):
    _fields(tmp_path, ["r01c01-ch1.tiff"], value=1e300, dtype=np.float64)
    table = pd.DataFrame({"Image Path": ["r01c01-ch1.tiff"], "Center_X": [50], "Center_Y": [50]})
    table.to_csv(tmp_path / "cells.csv", index=False)
    with pytest.raises(ValueError, match=r"r01c01-ch1\.tiff.*float32.*1e\+300"):
        from sklearn_deeploc.jobs import crop

        crop(tmp_path / "x.h5", cells=tmp_path / "cells.csv", verbose=0)


@pytest.mark.parametrize("value", [1e300, -1e39])
def test_crop_cells_and_find_cells_refuse_values_beyond_float32(value):
    image = np.ones((2, 100, 100))
    image[1, 10, 20] = value
    with pytest.raises(ValueError, match=r"float32.*channel 1, row 10, column 20"):
        crop_cells(image, [[50, 50]])
    with pytest.raises(ValueError, match=r"float32.*channel 1, row 10, column 20"):
        find_cells(image, channel=1)


def test_infinite_and_nan_pixels_are_not_called_out_of_range():
    image = np.ones((2, 100, 100))
    image[0, 0, 0], image[0, 0, 1] = np.inf, np.nan
    assert crop_cells(image, [[50, 50]]).crops.shape == (1, 2, 64, 64)


def _named_channel_fields(root, plates):
    """One field of GFP (1000 + k) and RFP (7) images in ``<plate>/images`` for plate k."""
    for k, plate in enumerate(plates):
        folder = root / plate / "images"
        folder.mkdir(parents=True)
        for channel, value in (("GFP", 1000 + k), ("RFP", 7)):
            tifffile.imwrite(folder / f"r01c01f01-{channel}.tif", np.full((80, 80), value, "u2"))
    return pd.DataFrame(
        {
            "Image_FileName_RFP": "r01c01f01-RFP.tif",  # CellProfiler's order, not the model's
            "Image_FileName_GFP": "r01c01f01-GFP.tif",
            "Image_PathName_RFP": [f"{plate}/images" for plate in plates],
            "Image_PathName_GFP": [f"{plate}/images" for plate in plates],
            "cells_Location_Center_X": 40.0,
            "cells_Location_Center_Y": 40.0,
        }
    )


def test_a_cell_table_is_read_by_the_models_channel_names_and_its_plates_stay_apart(tmp_path):
    from sklearn_deeploc.jobs import field_source

    net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    model = DeepLocModel(net, ["ER", "NUCLEI"], channel_names=["GFP", "RFP"])
    table = _named_channel_fields(tmp_path, ["untreated", "treated"])
    with pytest.warns(UserWarning, match=r"read in the model's order \['file_GFP', 'file_RFP'\]"):
        source = field_source(cells=read_cell_table(table, folder=tmp_path), model=model)
    assert [source.read(key)[0][:, 0, 0].tolist() for key in source.keys] == [[1000, 7], [1001, 7]]
    chosen = read_cell_table(table, folder=tmp_path, channels=["RFP", "GFP"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source = field_source(cells=chosen, model=model)  # an order chosen is kept
    assert source.read(source.keys[0])[0][:, 0, 0].tolist() == [7, 1000]
    assert source.fields["plate"].tolist() == ["untreated/images", "treated/images"]
    lower = DeepLocModel(net, ["ER", "NUCLEI"], channel_names=["gfp", "rfp"])
    with pytest.warns(UserWarning, match=r"model's order \['file_GFP', 'file_RFP'\]"):
        source = field_source(cells=read_cell_table(table, folder=tmp_path), model=lower)
    assert source.read(source.keys[0])[0][:, 0, 0].tolist() == [1000, 7]  # names in any case
    for plate in ("untreated", "treated"):
        tifffile.imwrite(tmp_path / plate / "images" / "r01c01f01-DNA.tif", np.ones((80, 80), "u2"))
    extra = table.assign(
        Image_FileName_DNA="r01c01f01-DNA.tif", Image_PathName_DNA=table["Image_PathName_GFP"]
    )
    with pytest.warns(UserWarning, match=r"model's order \['file_GFP', 'file_RFP'\]"):
        source = field_source(cells=read_cell_table(extra, folder=tmp_path), model=model)
    assert source.read(source.keys[0])[0][:, 0, 0].tolist() == [1000, 7]  # DNA left out
    moved = DeepLocModel(net, ["ER", "NUCLEI"], channel_names=["GFP", "DAPI"])
    with pytest.raises(ValueError, match=r"model's channel 0 \('GFP'\) is its channel 1"):
        field_source(cells=read_cell_table(table, folder=tmp_path), model=moved)
    plain = table.drop(columns=["Image_PathName_RFP", "Image_PathName_GFP"])
    both = pd.concat(
        [
            read_cell_table(plain[:1], folder=tmp_path / p / "images")
            for p in ("untreated", "treated")
        ]
    )
    with pytest.raises(ValueError, match="gives field 'r01c01f01-RFP.tif' two sets of files"):
        field_source(cells=both, model=model)


def test_a_z_stack_or_time_series_is_never_read_as_channels(tmp_path):
    pages = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    for axes in ("ZYX", "TYX"):
        tifffile.imwrite(tmp_path / "f.tif", pages, imagej=True, metadata={"axes": axes})
        with pytest.raises(ValueError, match=rf"holds a z stack or time series .*'{axes[0]}': 2"):
            read_field(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "c.tif", pages, imagej=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_field(tmp_path / "c.tif"), pages)


def test_an_ome_tiff_of_several_stage_positions_is_not_read_as_channels(tmp_path):
    planes = np.arange(2 * 8 * 8, dtype=np.uint16).reshape(2, 8, 8)
    with tifffile.TiffWriter(tmp_path / "positions.ome.tif", ome=True) as tiff:
        for position, plane in enumerate(planes):
            tiff.write(plane, metadata={"axes": "YX", "Name": f"Pos{position}"})
    with pytest.raises(ValueError, match=r"holds 2 OME images \(\['Pos0', 'Pos1'\]"):
        read_field(tmp_path / "positions.ome.tif")
    tifffile.imwrite(tmp_path / "one.ome.tif", planes, ome=True, metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_field(tmp_path / "one.ome.tif"), planes)


def test_a_cell_tables_object_numbers_are_kept_and_its_row_order_is_part_of_a_run(tmp_path):
    from sklearn_deeploc.jobs import field_source

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 40, 40), np.uint16), photometric="minisblack")
    table = pd.DataFrame(
        {"Image Path": "a.tif", "ObjectNumber": [5, 9], "Center_X": [10, 30], "Center_Y": 20}
    )
    source = field_source(cells=read_cell_table(table, folder=tmp_path))
    assert source.read("a.tif")[1]["ObjectNumber"].tolist() == [5, 9]
    reordered = field_source(cells=read_cell_table(table[::-1], folder=tmp_path))
    assert reordered.identity()["cells"] != source.identity()["cells"]
    labelled = read_cell_table(table.assign(kind=["1", 1]), folder=tmp_path, label_column="kind")
    with pytest.raises(ValueError, match="label column mixes value types"):
        field_source(cells=labelled)
    with pytest.raises(ValueError, match="gives object 5 of field 'a.tif' twice"):
        field_source(cells=read_cell_table(table.assign(ObjectNumber=5), folder=tmp_path))
    with pytest.raises(ValueError, match="whole numbers from 0 .*row 1 holds 2.5"):
        read_cell_table(table.assign(ObjectNumber=[1, 2.5]), folder=tmp_path)


def test_crop_refuses_integer_class_identifiers_before_cropping(tmp_path, monkeypatch):
    from sklearn_deeploc import jobs

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((2, 40, 40), np.uint16), photometric="minisblack")
    table = pd.DataFrame(
        {"Image Path": "a.tif", "Center_X": [10, 30], "Center_Y": 20, "class": [1000001, 2000002]}
    )
    cells = read_cell_table(table, folder=tmp_path, label_column="class")
    monkeypatch.setattr(jobs, "_cropped_cells", None)  # no field is cropped before the refusal
    with pytest.raises(ValueError, match="would make 2000003 columns"):
        jobs.crop(tmp_path / "cells.h5", cells=cells, verbose=0)


def test_a_table_not_in_utf8_and_a_negative_min_area_are_named(tmp_path):
    (tmp_path / "cells.csv").write_bytes(
        "Image Path,Center_X,Center_Y\ncaf\xe9-ch1.tif,1,2\n".encode("latin-1")
    )
    with pytest.raises(ValueError, match=r"cells\.csv is not UTF-8 text .*save it as UTF-8"):
        read_cell_table(tmp_path / "cells.csv")
    with pytest.raises(ValueError, match="min_area must be a finite number >= 0"):
        find_cells(np.zeros((2, 16, 16), np.float32), min_area=-5)


def test_a_cellprofiler_object_table_joined_to_its_image_table(tmp_path):
    (tmp_path / "images").mkdir()
    for channel, value in (("GFP", 1000), ("RFP", 7)):
        tifffile.imwrite(tmp_path / "images" / f"a-{channel}.tif", np.full((40, 40), value, "u2"))
    images = pd.DataFrame(  # CellProfiler's Image.csv and Cells.csv (ExportToSpreadsheet)
        {"ImageNumber": [1], "FileName_GFP": "a-GFP.tif", "FileName_RFP": "a-RFP.tif"}
    ).assign(PathName_GFP="images", PathName_RFP="images")
    objects = pd.DataFrame(
        {"ImageNumber": 1, "ObjectNumber": [1, 2], "Location_Center_X": [10.0, 30.0]}
    ).assign(Location_Center_Y=20.0)
    with pytest.raises(ValueError, match="a CellProfiler object table; join it to its image"):
        read_cell_table(objects, folder=tmp_path)
    cells = read_cell_table(objects.merge(images, on="ImageNumber"), folder=tmp_path)
    assert cells[["x", "y", "ObjectNumber"]].values.tolist() == [[10, 20, 1], [30, 20, 2]]
    assert read_field(cells.iloc[0])[:, 0, 0].tolist() == [1000, 7]
    for folder in (r"C:\Users\lab\images", r"\\server\share\images"):
        on_windows = objects.merge(images.assign(PathName_GFP=folder))
        with pytest.raises(ValueError, match=r"PathName_GFP holds Windows paths .*pass folder="):
            read_cell_table(on_windows, folder=tmp_path)
    relative = objects.merge(images.drop(columns=["PathName_GFP", "PathName_RFP"]))
    relative = relative.assign(FileName_GFP=r"images\a-GFP.tif", FileName_RFP=r"images\a-RFP.tif")
    cells = read_cell_table(relative, folder=tmp_path)  # names written on Windows
    assert read_field(cells.iloc[0])[:, 0, 0].tolist() == [1000, 7]


def test_a_cell_tables_plate_well_and_site_metadata_name_its_fields(tmp_path):
    from sklearn_deeploc.jobs import field_source

    for name in ("IXM_A01_s1.tif", "IXM_A01_s2.tif", "IXM_B03_s1.tif"):
        tifffile.imwrite(
            tmp_path / name, np.zeros((2, 40, 40), np.uint16), photometric="minisblack"
        )
    table = pd.DataFrame(
        {
            "Image Path": ["IXM_A01_s1.tif", "IXM_A01_s2.tif", "IXM_B03_s1.tif"],
            "Center_X": 20,
            "Center_Y": 20,
            "Image_Metadata_Plate": "screen-7",  # ExportToDatabase's name
            "Metadata_Well": ["A01", "A01", "B03"],
            "Metadata_Site": ["2", "1", "1"],  # CellProfiler's text metadata
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no well pattern is asked for: the table names them
        source = field_source(cells=read_cell_table(table, folder=tmp_path))
    assert source.fields[["plate", "well", "site"]].values.tolist() == [
        ["screen-7", "A01", 2],
        ["screen-7", "A01", 1],
        ["screen-7", "B03", 1],
    ]
    mixed = pd.concat([table, table.iloc[[0]].assign(Metadata_Well="A02")])
    with pytest.raises(ValueError, match=r"field 'IXM_A01_s1.tif' the Metadata_Well values"):
        field_source(cells=read_cell_table(mixed, folder=tmp_path))
    kinds = table.assign(Image_Metadata_Plate=["screen-7", "screen-7", 8])
    with pytest.raises(ValueError, match="Metadata_Plate mixes value types"):
        field_source(cells=read_cell_table(kinds, folder=tmp_path))
    for sites in ([1, 1, 1], [1, None, 1], [1, 2.5, 1]):  # repeated, missing, not whole
        unusable = table.assign(Metadata_Site=sites)
        with pytest.warns(UserWarning, match="numbered in each well from 0 instead"):
            source = field_source(cells=read_cell_table(unusable, folder=tmp_path))
        assert source.fields["site"].tolist() == [0, 1, 0]
    as_csv = tmp_path / "cells.csv"  # plates and wells are names, whatever they look like
    for plate in ("007", "2024"):
        table.assign(Image_Metadata_Plate=plate, Metadata_Well=["NA", "NA", "B03"]).to_csv(as_csv)
        source = field_source(cells=read_cell_table(as_csv))
        assert source.fields[["plate", "well"]].values.tolist() == [[plate, "NA"]] * 2 + [
            [plate, "B03"]
        ]


def test_jobs_never_write_over_the_cell_table_nor_files_they_did_not_write(
    tmp_path, tiny_model, capsys
):
    _fields(tmp_path, ["r01c01f01-ch1.tiff"])
    table = tmp_path / "cells.csv"
    pd.DataFrame({"Image Path": ["r01c01f01-ch1.tiff"], "Center_X": [50], "Center_Y": [50]}).to_csv(
        table, index=False
    )
    before = table.read_bytes()
    for cells in (table, read_cell_table(table)):  # its path, or the table read from it
        for overwrite in (False, True):
            with pytest.raises(
                ValueError, match=r"cell table .*cells.csv is where this job writes"
            ):
                run_screen(tiny_model, tmp_path, cells=cells, overwrite=overwrite, verbose=0)
    crop_table = tmp_path / "train.cells.csv"
    crop_table.write_bytes(before)
    assert main(["crop", "--coords", str(crop_table), "-o", str(tmp_path / "train.h5")]) == 2
    assert "is where this job writes train.cells.csv" in capsys.readouterr().err
    assert crop_table.read_bytes() == table.read_bytes() == before
    # A plate map named as a screen's file, in a folder no screen wrote: replaced only if asked
    out = tmp_path / "out"
    out.mkdir()
    (out / "wells.parquet").write_bytes(b"plate map")
    with pytest.raises(ValueError, match=r"wells.parquet exists; pass overwrite=True"):
        run_screen(tiny_model, out, cells=table, verbose=0)
    assert (out / "wells.parquet").read_bytes() == b"plate map"
    run_screen(tiny_model, out, cells=table, overwrite=True, verbose=0)
    run_screen(tiny_model, out, cells=table, csv=True, verbose=0)  # its own files: resumed
    (tmp_path / "found.cells.csv").write_bytes(b"other")
    args = ["crop", "--coords", str(table), "-o", str(tmp_path / "found.h5")]
    assert main(args) == 2
    assert "found.cells.csv exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert len(pd.read_csv(tmp_path / "found.cells.csv")) == 1


def test_a_label_or_channel_image_of_another_size_is_refused_from_its_header(tmp_path, monkeypatch):
    from sklearn_deeploc import fields
    from sklearn_deeploc.sources import FolderFields

    _fields(tmp_path, ["r01c01f01-ch1.tiff"])
    masks = tmp_path / "masks"
    masks.mkdir()
    claiming = _tiff_claiming(masks / "r01c01f01-ch1_cp_masks.tif", 20_000)  # 800 MB, 1 KB file
    decode = fields._read_image

    def never_the_claiming_file(path):
        assert Path(path).name not in {claiming.name, "big-ch2.tiff"}, "decoded before its size"
        return decode(path)

    monkeypatch.setattr(fields, "_read_image", never_the_claiming_file)
    source = FolderFields(tmp_path, labels=masks)
    with pytest.raises(
        ValueError, match="the label image is 20000x20000 pixels, the field 100x100"
    ):
        source.read(source.keys[0])
    _tiff_claiming(tmp_path / "big-ch2.tiff", 20_000)
    tifffile.imwrite(tmp_path / "big-ch1.tiff", np.zeros((100, 100), np.uint16))
    with pytest.raises(ValueError, match=r"must have one size; got .*\(20000, 20000\)"):
        read_field([tmp_path / "big-ch1.tiff", tmp_path / "big-ch2.tiff"])


@pytest.mark.parametrize("other", ["./r01c01f01-ch1.tiff", "sub/../r01c01f01-ch1.tiff", "abs"])
def test_one_image_named_two_ways_in_a_cell_table_is_refused(tmp_path, tiny_model, other):
    _fields(tmp_path, ["r01c01f01-ch1.tiff"])
    (tmp_path / "sub").mkdir()
    other = str(tmp_path / "r01c01f01-ch1.tiff") if other == "abs" else other
    names = ["r01c01f01-ch1.tiff", other]
    table = pd.DataFrame({"Image Path": names, "Center_X": [30, 70], "Center_Y": [30, 70]})
    with pytest.raises(ValueError, match=r"names one image two ways \('r01c01f01-ch1.tiff' and"):
        run_screen(tiny_model, tmp_path / "out", cells=read_cell_table(table, folder=tmp_path))


def test_a_screen_resumes_with_its_table_named_from_another_folder(
    tmp_path, tiny_model, monkeypatch, capsys
):
    _fields(tmp_path, ["r01c01f01-ch1.tiff"])
    table = pd.DataFrame({"Image Path": ["r01c01f01-ch1.tiff"], "Center_X": [50], "Center_Y": [50]})
    table.to_csv(tmp_path / "cells.csv", index=False)
    monkeypatch.chdir(tmp_path)
    first, _ = run_screen(tiny_model, tmp_path / "out", cells="cells.csv", verbose=0)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the table's files: absolute paths now
    again, _ = run_screen(tiny_model, tmp_path / "out", cells=tmp_path / "cells.csv")
    assert "1 of 1 fields already done; computing 0" in capsys.readouterr().out
    pd.testing.assert_frame_equal(again, first)


def test_a_centre_outside_its_field_is_named_by_its_table_row_and_field(tmp_path, tiny_model):
    from sklearn_deeploc.fields import crop_fields

    _fields(tmp_path, ["r01c01f01-ch1.tiff", "r01c01f02-ch1.tiff"])
    table = pd.DataFrame(
        {
            "Image Path": ["r01c01f01-ch1.tiff"] * 2 + ["r01c01f02-ch1.tiff"] * 2,
            "Center_X": [50, 60, 50, 5000],
            "Center_Y": [50, 60, 50, 50],
        }
    )
    cells = read_cell_table(table, folder=tmp_path)
    with pytest.warns(UserWarning, match=r"1 of 2 centre\(s\) lie outside .*\(rows 3;"):
        crop_fields(cells, verbose=0)
    with pytest.warns(UserWarning, match=r"\(rows r01c01f02-ch1.tiff object 2;"):
        run_screen(tiny_model, tmp_path / "out", cells=cells, verbose=0)


def test_two_images_linked_to_one_annexed_file_are_two_fields(tmp_path, tiny_model):
    annex = tmp_path / ".annex"
    annex.mkdir()
    for channel in ("ch1", "ch2"):  # git-annex, DataLad, DVC: equal files, one object
        tifffile.imwrite(annex / f"blank-{channel}", np.zeros((100, 100), np.uint16))
        for field in ("f01", "f02"):
            (tmp_path / f"r01c01{field}-{channel}.tiff").symlink_to(annex / f"blank-{channel}")
    names = ["r01c01f01-ch1.tiff", "r01c01f02-ch1.tiff"]
    table = pd.DataFrame({"Image Path": names, "Center_X": [50, 50], "Center_Y": [50, 50]})
    cells, _ = run_screen(
        tiny_model, tmp_path / "out", cells=read_cell_table(table, folder=tmp_path)
    )
    assert cells["Metadata_Site"].tolist() == [0, 1]


def test_a_stack_table_of_another_channel_count_is_refused_before_the_run(tmp_path, tiny_model):
    from sklearn_deeploc.blocks import parts_folder

    tifffile.imwrite(tmp_path / "Plate1_B03_s1_w1.tif", np.zeros((100, 100), np.uint16))
    table = pd.DataFrame(
        {"Image Path": ["Plate1_B03_s1_w1.tif"], "Center_X": [50], "Center_Y": [50]}
    )
    cells = read_cell_table(table, folder=tmp_path)  # no chN token: one file, its pages
    with pytest.raises(ValueError, match=r"read with 1 channel\(s\); the model takes 2"):
        run_screen(tiny_model, tmp_path / "out", cells=cells, verbose=0)
    assert not parts_folder(tmp_path / "out" / "cells.parquet").exists()  # nothing to overwrite


def test_sources_read_the_files_named_where_they_were_made(tmp_path, monkeypatch):
    import pickle

    from sklearn_deeploc.sources import FolderFields, TableFields

    for folder, value in (("here", 1.0), ("elsewhere", 9.0)):  # one relative name, two files
        (tmp_path / folder / "fx").mkdir(parents=True)
        _fields(tmp_path / folder / "fx", ["r01c01f01-ch1.tiff"], value=value)
    monkeypatch.chdir(tmp_path / "here")
    table = pd.DataFrame({"Image Path": ["fx/r01c01f01-ch1.tiff"], "Center_X": 50, "Center_Y": 50})
    sources = [FolderFields("fx"), TableFields(read_cell_table(table))]
    monkeypatch.chdir(tmp_path / "elsewhere")  # as a Dask worker started in another folder
    for source in sources:
        shipped = pickle.loads(pickle.dumps(source))
        image, _ = shipped.read(shipped.keys[0])
        assert image.max() == 1.0, type(source).__name__


def test_a_field_file_gone_at_the_end_of_a_screen_keeps_its_parts(
    tmp_path, tiny_model, monkeypatch
):
    from sklearn_deeploc import jobs

    names = ["r01c01f01-ch1.tiff", "r01c02f01-ch1.tiff"]
    _fields(tmp_path, names)
    table = pd.DataFrame({"Image Path": names, "Center_X": 50, "Center_Y": 50})
    profiles, calls = jobs._field_profiles, []

    def first_file_gone_after_the_last_field(*args):
        calls.append(args)
        if len(calls) == len(names):  # as a disk unmounted at the end of the run
            (tmp_path / names[0]).rename(tmp_path / "away.tiff")
        return profiles(*args)

    monkeypatch.setattr(jobs, "_field_profiles", first_file_gone_after_the_last_field)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="could not be checked at the end.*parts were kept"):
        run_screen(tiny_model, out, cells=read_cell_table(table, folder=tmp_path), verbose=0)
    assert len(list((out / "cells.parquet.parts").glob("part-*"))) == len(names)
    (tmp_path / "away.tiff").rename(tmp_path / names[0])
    monkeypatch.setattr(jobs, "_field_profiles", profiles)
    cells, _ = run_screen(tiny_model, out, cells=read_cell_table(table, folder=tmp_path), verbose=0)
    assert len(cells) == len(names)  # resumed from the parts kept
