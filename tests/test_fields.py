"""Reading fields of view and cell tables in the token, CellProfiler and stack layouts."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from sklearn_deeploc.fields import crop_fields, file_columns, read_cell_table, read_field

FIELD = "field_r01c01f01"
CH1, CH2 = "r01c01f01p01-ch1sk1fk1fl1.tiff", "r01c01f01p01-ch2sk1fk1fl1.tiff"


@pytest.fixture
def field(shared_data):
    return shared_data / FIELD


@pytest.fixture
def token_crops(field):
    cells = read_cell_table(field / "cells.csv", label_column="Saved Label")
    return crop_fields(cells)


def _cellprofiler_table(field, **columns):
    listed = pd.read_csv(field / "cells.csv")
    return pd.DataFrame(
        {
            "ImageNumber": 1,
            "ObjectNumber": np.arange(1, len(listed) + 1),
            "Image_FileName_GFP": CH1,
            "Image_FileName_RFP": CH2,
            "cells_Location_Center_X": listed["Center_X"].astype(float),
            "cells_Location_Center_Y": listed["Center_Y"].astype(float),
            **columns,
        }
    )


def test_token_layout_crops_every_listed_cell_at_its_centre(field, token_crops):
    crops, kept = token_crops
    assert crops.shape == (390, 2, 64, 64)
    assert kept.index.tolist() == list(range(390))
    assert kept["label"].iloc[0] == "Cell Periphery"
    listed = pd.read_csv(field / "cells.csv").loc[kept.index[~kept["padded"]]]
    image = np.stack([tifffile.imread(field / name) for name in (CH1, CH2)])
    centres = crops[~kept["padded"].to_numpy(), :, 32, 32]
    assert np.array_equal(centres, image[:, listed["Center_Y"], listed["Center_X"]].T)


def test_cellprofiler_layout_gives_the_same_crops(field, token_crops):
    table = _cellprofiler_table(field)
    crops, kept = crop_fields(read_cell_table(table, folder=field))
    assert np.array_equal(crops, token_crops[0])
    assert kept["padded"].equals(token_crops[1]["padded"])


def test_cellprofiler_path_columns_and_channel_order(field, token_crops, tmp_path):
    table = _cellprofiler_table(field, Image_PathName_GFP=str(field), Image_PathName_RFP=str(field))
    table.to_csv(tmp_path / "SQL_data.csv", index=False)
    cells = read_cell_table(tmp_path / "SQL_data.csv", channels=["RFP", "GFP"])
    assert list(cells.columns) == ["field", "file_RFP", "file_GFP", "x", "y", "ObjectNumber"]
    crops, _ = crop_fields(cells)
    assert np.array_equal(crops, token_crops[0][:, ::-1])


def test_multipage_tiff_and_flex_read_as_channels_first(tmp_path):
    pages = np.arange(3 * 20 * 30, dtype=np.uint16).reshape(3, 20, 30)
    for name in ("stack.tiff", "stack.flex"):
        tifffile.imwrite(tmp_path / name, pages, photometric="minisblack")
        assert np.array_equal(read_field(tmp_path / name), pages)
    rgb = np.zeros((20, 30, 3), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    assert read_field(tmp_path / "rgb.tiff").shape == (3, 20, 30)


def test_png_is_read_with_scikit_image(tmp_path):
    from skimage.io import imsave

    image = np.random.default_rng(0).integers(0, 255, (20, 30), dtype=np.uint8)
    imsave(tmp_path / "field.png", image)
    assert np.array_equal(read_field([tmp_path / "field.png"]), image[None])


def test_stack_layout_reads_one_file_per_field(tmp_path):
    tifffile.imwrite(
        tmp_path / "w1.tiff", np.ones((2, 80, 80), np.uint16), photometric="minisblack"
    )
    table = pd.DataFrame({"Image Path": ["w1.tiff"], "Center_X": [40], "Center_Y": [40]})
    table.to_csv(tmp_path / "cells.csv", index=False)
    cells = read_cell_table(tmp_path / "cells.csv")
    assert list(cells.columns) == ["field", "file", "x", "y"]
    crops, _ = crop_fields(cells, size=32)
    assert crops.shape == (1, 2, 32, 32)


def test_channel_token_is_replaced_in_the_file_name_only():
    table = pd.DataFrame({"Image Path": ["batch2/r01-ch1.tiff"], "Center_X": [1], "Center_Y": [1]})
    cells = read_cell_table(table, folder="screen", channels=["ch3"])
    assert cells["file_ch3"].tolist() == [str(Path("screen/batch2/r01-ch3.tiff"))]
    with pytest.raises(ValueError, match="stack layout reads every page .* does not apply"):
        read_cell_table(table, layout="stack", channels=["ch3"])


def test_missing_files_are_listed_before_reading(field):
    table = pd.read_csv(field / "cells.csv")
    table.loc[0, "Image Path"] = "r02c02f01p01-ch1.tiff"
    cells = read_cell_table(table, folder=field)
    with pytest.raises(FileNotFoundError, match=r"2 image files not found: \[.*r02c02f01p01-ch1"):
        crop_fields(cells)


def test_missing_columns_are_named(field):
    with pytest.raises(ValueError, match=r"lacks columns \['Label'\]; it has \['Image Path'"):
        read_cell_table(field / "cells.csv", label_column="Label")
    with pytest.raises(ValueError, match=r"lacks columns \['Image_FileName_DAPI'\]"):
        read_cell_table(_cellprofiler_table(field), channels=["GFP", "DAPI"])
    two_objects = _cellprofiler_table(field, nuclei_Location_Center_X=1.0)
    with pytest.raises(ValueError, match="Cannot tell the X centre column .* pass x_column="):
        read_cell_table(two_objects)
    with pytest.raises(ValueError, match="must carry a channel token 'chN'"):
        read_cell_table(field / "cells.csv", layout="token", image_column="Saved Label")
    with pytest.raises(ValueError, match="layout must be one of"):
        read_cell_table(field / "cells.csv", layout="opera")


def test_cellprofiler_layout_without_file_columns_is_refused(tmp_path):
    table = pd.DataFrame(
        {"ImageNumber": [1], "cells_Location_Center_X": [5.0], "cells_Location_Center_Y": [5.0]}
    )
    with pytest.raises(ValueError, match=r"needs Image_FileName_<channel> columns.*ImageNumber"):
        read_cell_table(table, layout="cellprofiler", folder=tmp_path)


def test_channel_images_of_different_sizes(tmp_path):
    tifffile.imwrite(tmp_path / "a-ch1.tiff", np.zeros((20, 30), np.uint16))
    tifffile.imwrite(tmp_path / "a-ch2.tiff", np.zeros((20, 31), np.uint16))
    with pytest.raises(ValueError, match=r"must have one size; got .*\(20, 31\)"):
        read_field([tmp_path / "a-ch1.tiff", tmp_path / "a-ch2.tiff"])


def test_fields_with_different_channel_counts(tmp_path):
    tifffile.imwrite(
        tmp_path / "a.tiff", np.zeros((2, 80, 80), np.uint16), photometric="minisblack"
    )
    tifffile.imwrite(
        tmp_path / "b.tiff", np.zeros((3, 80, 80), np.uint16), photometric="minisblack"
    )
    table = pd.DataFrame({"Image Path": ["a.tiff", "b.tiff"], "Center_X": 40, "Center_Y": 40})
    with pytest.raises(
        ValueError, match="Field 'b.tiff' has 3 channels; the fields before it have 2"
    ):
        crop_fields(read_cell_table(table, folder=tmp_path))


def test_appended_tiff_series_are_channels(tmp_path):
    path = tmp_path / "appended.tiff"
    tifffile.imwrite(path, np.full((20, 30), 1, np.uint16))
    tifffile.imwrite(path, np.full((20, 30), 2, np.uint16), append=True)
    assert read_field(path)[:, 0, 0].tolist() == [1, 2]
    tifffile.imwrite(path, np.zeros((10, 30), np.uint16), append=True)
    with pytest.raises(ValueError, match=r"appended.tiff holds 3 series of different sizes"):
        read_field(path)


@pytest.mark.parametrize("content", [b"garbage" * 10, b""])
def test_unreadable_images_are_named(tmp_path, content):
    (tmp_path / "broken.tiff").write_bytes(content)
    with pytest.raises(ValueError, match=r"Cannot read image file .*broken.tiff: not a TIFF"):
        read_field(tmp_path / "broken.tiff")


def test_truncated_tiff_is_named(tmp_path):
    path = tmp_path / "cut.tiff"
    tifffile.imwrite(path, np.ones((3, 100, 100), np.uint16), photometric="minisblack")
    with open(path, "r+b") as file:
        file.truncate(5000)
    with pytest.raises(ValueError, match=r"Cannot read image file .*cut.tiff: failed to read"):
        read_field(path)


def test_read_field_needs_a_file():
    with pytest.raises(ValueError, match="Expected at least one image file; got none"):
        read_field([])
    with pytest.raises(ValueError, match=r"no file_<channel> entries; it has \['x', 'y'\]"):
        read_field(pd.Series({"x": 1, "y": 2}))


def test_one_channel_may_be_given_as_a_string():
    table = pd.DataFrame({"Image Path": ["r01-ch1.tiff"], "Center_X": [1], "Center_Y": [1]})
    cells = read_cell_table(table, channels="ch2")
    assert file_columns(cells) == ["file_ch2"]


@pytest.mark.parametrize("missing", [np.nan, None, " "])
def test_missing_file_names_are_located(missing):
    names = ["a-ch1.tiff", "b-ch1.tiff", missing]
    table = pd.DataFrame({"Image Path": names, "Center_X": 1, "Center_Y": 1}, index=[5, 6, 7])
    with pytest.raises(ValueError, match="no file name in column 'Image Path' .* at index 7"):
        read_cell_table(table)
    profiler = pd.DataFrame(
        {
            "Image_FileName_GFP": ["a.tiff"] * 3,
            "Image_PathName_GFP": ["screen", missing, "screen"],
            "cells_Location_Center_X": 1.0,
            "cells_Location_Center_Y": 1.0,
        }
    )
    with pytest.raises(ValueError, match="no file name in column 'Image_PathName_GFP' .* index 1"):
        read_cell_table(profiler)


def test_empty_csv_is_refused(tmp_path):
    (tmp_path / "cells.csv").write_text("")
    with pytest.raises(ValueError, match=r"cells.csv is empty"):
        read_cell_table(tmp_path / "cells.csv")


def test_a_channel_file_with_several_channels_and_repeated_channels_are_refused(tmp_path):
    gfp, rgb = tmp_path / "f-ch1.tiff", tmp_path / "f-ch2.tiff"
    tifffile.imwrite(gfp, np.zeros((40, 50), np.uint16))
    tifffile.imwrite(rgb, np.zeros((40, 50, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="Each channel file must hold one channel.*f-ch2.tiff"):
        read_field([gfp, rgb])
    assert read_field(rgb).shape == (3, 40, 50)  # alone, its colours are its channels
    table = pd.DataFrame({"Image Path": ["f-ch1.tiff"], "Center_X": [20], "Center_Y": [20]})
    with pytest.raises(ValueError, match="channels names a channel twice"):
        read_cell_table(table, channels=["ch1", "ch1"], folder=tmp_path)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "packbits"])
def test_compressed_tiffs_are_read_as_microscopes_write_them(tmp_path, compression):
    import tifffile

    pixels = np.arange(2 * 40 * 50, dtype=np.uint16).reshape(2, 40, 50)
    tifffile.imwrite(tmp_path / "field.tif", pixels, compression=compression)  # LZW: ImageJ's
    np.testing.assert_array_equal(read_field(tmp_path / "field.tif"), pixels)
