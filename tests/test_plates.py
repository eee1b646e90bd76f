"""OME-Zarr HCS plates (NGFF 0.4 and 0.5) written by ome-zarr, read by sklearn_deeploc.plates."""

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("zarr")
ome_writer = pytest.importorskip("ome_zarr.writer")
from ome_zarr.format import FormatV04, FormatV05  # noqa: E402

from sklearn_deeploc.plates import open_plate  # noqa: E402

WELLS = ["A/1", "B/3"]
N_FIELDS, SHAPE = 2, (64, 96)
CHANNELS = ["GFP", "RFP"]
WINDOW = {"min": 0, "max": 65535, "start": 0, "end": 4095}
OMERO = {"channels": [{"label": c, "color": "FFFFFF", "window": WINDOW} for c in CHANNELS]}
FORMATS = {"0.4": FormatV04, "0.5": FormatV05}


def _labels(seed):
    """A few rectangles of distinct labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, dtype=np.uint16)
    for value in range(1, 6):
        row, col = rng.integers(0, SHAPE[0] - 10), rng.integers(0, SHAPE[1] - 10)
        labels[row : row + 8, col : col + 8] = value
    return labels


def write_plate(path, version, *, axes="cyx", labels=True):
    """A 2-well x 2-field plate with ome-zarr's writer; returns {image_path: (pixels, labels)}."""
    import zarr

    fmt = FORMATS[version]()
    root = zarr.open_group(path, mode="w", zarr_format=fmt.zarr_format)
    ome_writer.write_plate_metadata(root, ["A", "B"], ["1", "3"], WELLS, fmt=fmt, name="P1")
    rng, written = np.random.default_rng(0), {}
    for well_path in WELLS:
        well = root.require_group(well_path)
        ome_writer.write_well_metadata(well, [str(f) for f in range(N_FIELDS)], fmt=fmt)
        for field in range(N_FIELDS):
            pixels = rng.integers(0, 4096, (len(CHANNELS), 3, *SHAPE), dtype=np.uint16)
            stored = pixels if "z" in axes else pixels[:, 0]
            if "t" in axes:
                stored = np.stack([stored, stored + 1])
            image = well.require_group(str(field))
            ome_writer.write_image(
                stored, image, axes=axes, fmt=fmt, scale_factors=(2,), omero=OMERO
            )
            cells = _labels(len(written))
            if labels:
                ome_writer.write_labels(
                    cells, image, name="cells", axes="yx", fmt=fmt, scaler=None, scale_factors=(2,)
                )
            written[f"{well_path}/{field}"] = (pixels if "z" in axes else pixels[:, 0], cells)
    return written


@pytest.fixture(scope="module")
def written_plates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plates")
    return {
        version: (folder / version, write_plate(folder / version, version)) for version in FORMATS
    }


@pytest.fixture(params=["0.4", "0.5"])
def plate(request, tmp_path, written_plates):
    """A fresh copy of the written plate (tests may damage it)."""
    source, written = written_plates[request.param]
    path = shutil.copytree(source, tmp_path / "P1.zarr")
    return path, request.param, written


def test_fields_are_listed_from_metadata(plate):
    path, version, written = plate
    opened = open_plate(path)
    assert (opened.version, opened.name) == (version, "P1")
    fields = opened.fields
    assert list(fields["image_path"]) == list(written)
    assert list(fields["well"]) == ["A01", "A01", "B03", "B03"]
    assert list(fields["well_path"]) == ["A/1", "A/1", "B/3", "B/3"]
    assert list(fields["site"]) == [0, 1, 0, 1]
    assert set(fields["plate"]) == {"P1"}


def test_read_field_level0_channels_in_requested_order(plate):
    path, _, written = plate
    opened = open_plate(path)
    pixels, _ = written["B/3/1"]
    assert opened.channel_names("B/3/1") == CHANNELS
    np.testing.assert_array_equal(opened.read_field("B/3/1"), pixels)
    np.testing.assert_array_equal(opened.read_field("B/3/1", ["RFP", "GFP"]), pixels[::-1])
    np.testing.assert_array_equal(opened.read_field("B/3/1", [1]), pixels[1:])


def test_read_labels_level0(plate):
    path, _, written = plate
    opened = open_plate(path)
    assert opened.label_names("A/1/1") == ["cells"]
    labels = opened.read_labels("A/1/1", "cells")
    np.testing.assert_array_equal(labels, written["A/1/1"][1])
    assert labels.shape == SHAPE
    opened.check(CHANNELS, "cells")  # every field readable: no error


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_z_stack_max_projection_or_one_plane_and_time_point(tmp_path, version):
    written = write_plate(tmp_path / "z.zarr", version, axes="tczyx", labels=False)
    opened = open_plate(tmp_path / "z.zarr")
    pixels, _ = written["A/1/0"]
    np.testing.assert_array_equal(opened.read_field("A/1/0"), pixels.max(axis=1))
    np.testing.assert_array_equal(opened.read_field("A/1/0", ["RFP"], z=2), pixels[1:, 2])
    np.testing.assert_array_equal(opened.read_field("A/1/0", z=0, t=1), pixels[:, 0] + 1)
    with pytest.raises(ValueError, match=r"has 3 z position\(s\); z=3 is not one"):
        opened.read_field("A/1/0", z=3)
    with pytest.raises(ValueError, match=r"has 2 t position\(s\); t=2"):
        opened.read_field("A/1/0", t=2)


def test_a_screen_of_several_time_points_says_it_reads_the_first(tmp_path):
    from sklearn_deeploc.sources import PlateFields

    written = write_plate(tmp_path / "t.zarr", "0.5", axes="tczyx", labels=False)
    with pytest.warns(UserWarning, match="has 2 time points; the first"):
        source = PlateFields(tmp_path / "t.zarr", ["GFP", "RFP"])
    image, _ = source.read("A/1/0")
    np.testing.assert_array_equal(image, written["A/1/0"][0].max(axis=1))
    assert open_plate(tmp_path / "t.zarr").sizes("A/1/0") == {
        "t": 2,
        "c": 2,
        "z": 3,
        "y": 64,
        "x": 96,
    }


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_x_stored_before_y_is_read_as_rows_then_columns(tmp_path, version):
    import zarr

    fmt = FORMATS[version]()
    root = zarr.open_group(tmp_path / "xy.zarr", mode="w", zarr_format=fmt.zarr_format)
    ome_writer.write_plate_metadata(root, ["A"], ["1"], ["A/1"], fmt=fmt, name="P1")
    ome_writer.write_well_metadata(root.require_group("A/1"), ["0"], fmt=fmt)
    image = root.require_group("A/1/0")
    pixels = np.random.default_rng(0).integers(0, 4096, (2, *SHAPE), dtype=np.uint16)
    stored = pixels.transpose(0, 2, 1)  # NGFF orders axes by type only: c, x, y is valid
    ome_writer.write_image(stored, image, axes="cxy", fmt=fmt, scale_factors=(2,), omero=OMERO)
    ome_writer.write_labels(_labels(0).T, image, name="cells", axes="xy", fmt=fmt, scaler=None)
    opened = open_plate(tmp_path / "xy.zarr")
    np.testing.assert_array_equal(opened.read_field("A/1/0"), pixels)
    np.testing.assert_array_equal(opened.read_labels("A/1/0", "cells"), _labels(0))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_axes_are_known_by_type_and_names_in_any_case(tmp_path, version):
    path = tmp_path / "iohub.zarr"
    written = write_plate(path, version, axes="tczyx", labels=False)
    for image_path in written:  # as iohub names them: T, C, Z, Y, X
        document_path = path / image_path / (".zattrs" if version == "0.4" else "zarr.json")
        document = json.loads(document_path.read_text())
        ome = document if version == "0.4" else document["attributes"]["ome"]
        for axis in ome["multiscales"][0]["axes"]:
            axis["name"] = {"time": "time", "channel": "ch"}.get(axis["type"], axis["name"].upper())
        document_path.write_text(json.dumps(document))
    opened = open_plate(path)
    assert opened.sizes("A/1/0") == {"t": 2, "c": 2, "z": 3, "y": 64, "x": 96}
    np.testing.assert_array_equal(opened.read_field("B/3/1"), written["B/3/1"][0].max(axis=1))


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_label_image_of_several_planes_needs_a_plane(tmp_path, version):
    import zarr

    path = tmp_path / "z.zarr"
    write_plate(path, version, labels=False)
    stack = np.stack([_labels(seed) for seed in range(3)])
    image = zarr.open_group(path / "A" / "1" / "0", mode="r+")
    fmt = FORMATS[version]()
    ome_writer.write_labels(stack, image, name="cells", axes="zyx", fmt=fmt, scaler=None)
    opened = open_plate(path)
    with pytest.raises(ValueError, match="has 3 z planes; expected a 2-D label image"):
        opened.read_labels("A/1/0", "cells")
    np.testing.assert_array_equal(opened.read_labels("A/1/0", "cells", z=1), stack[1])
    with pytest.raises(ValueError, match="3 z planes; expected a 2-D label image, one plane per"):
        opened.check(labels="cells")  # a screen's check, before any pixel is read


def test_a_zipped_plate_is_refused_as_a_file(tmp_path):
    import zipfile

    write_plate(tmp_path / "P1.zarr", "0.5", labels=False)
    with zipfile.ZipFile(tmp_path / "P1.ozx", "w") as archive:
        for path in (tmp_path / "P1.zarr").rglob("*"):
            archive.write(path, path.relative_to(tmp_path / "P1.zarr"))
    with pytest.raises(ValueError, match=r"P1.ozx is a file; expected a plate folder"):
        open_plate(tmp_path / "P1.ozx")


def test_two_well_paths_of_one_well_name_are_refused(tmp_path):
    written = tmp_path / "w.zarr"
    write_plate(written, "0.4", labels=False)
    shutil.copytree(written / "A" / "1", written / "A" / "01")
    document = json.loads((written / ".zattrs").read_text())
    document["plate"]["wells"].append({"path": "A/01", "rowIndex": 0, "columnIndex": 0})
    (written / ".zattrs").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"wells \['A/1', 'A/01'\], all named A01"):
        open_plate(written)
    document["plate"]["wells"][-1]["path"] = "A/1"
    (written / ".zattrs").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="lists field A/1/0 twice"):
        open_plate(written)


def test_unknown_channel_lists_the_known_names(plate):
    opened = open_plate(plate[0])
    with pytest.raises(ValueError, match=r"no channel 'DAPI'; .* names \['GFP', 'RFP'\]"):
        opened.read_field("A/1/0", ["GFP", "DAPI"])
    with pytest.raises(ValueError, match="indices 0..1"):
        opened.read_field("A/1/0", [2])
    with pytest.raises(ValueError, match="name a channel twice"):
        opened.read_field("A/1/0", ["GFP", 0])


def test_absent_label_name_lists_the_available(plate):
    opened = open_plate(plate[0])
    with pytest.raises(ValueError, match=r"no label image 'nuclei'; it has \['cells'\]"):
        opened.read_labels("A/1/0", "nuclei")
    with pytest.raises(ValueError, match=r"4 of 4 fields cannot be read: .*'nuclei'"):
        opened.check(labels="nuclei")


def test_missing_field_image_is_named(plate):
    path, _, _ = plate
    shutil.rmtree(path / "B" / "3" / "0")
    opened = open_plate(path)  # listing reads the wells' metadata only
    with pytest.raises(ValueError, match=r"Field B/3/0 of plate .*image 'B/3/0' is missing"):
        opened.read_field("B/3/0")
    with pytest.raises(ValueError, match=r"1 of 4 fields cannot be read: Field B/3/0"):
        opened.check()


def test_missing_well_group_is_named(plate):
    path, _, _ = plate
    shutil.rmtree(path / "A" / "1")
    with pytest.raises(ValueError, match=r"Well A/1 of plate .*: its well group 'A/1' is missing"):
        open_plate(path)


def _edit(path, member, edit):
    """Edit the NGFF metadata of a plate's member (a group path) in place."""
    v2 = path / member / ".zattrs"
    document = json.loads((v2 if v2.exists() else path / member / "zarr.json").read_text())
    edit(document if v2.exists() else document["attributes"]["ome"])
    (v2 if v2.exists() else path / member / "zarr.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("member", "edit", "where", "error"),
    [
        ("", lambda ome: ome["plate"]["wells"][0].pop("path"), "Plate", "KeyError: 'path'"),
        ("A/1", lambda ome: ome["well"]["images"][0].pop("path"), "Well A/1 of plate", "Key"),
        ("A/1/0", lambda ome: ome["multiscales"][0].pop("axes"), "Field A/1/0 of plate", "Key"),
        (
            "A/1/0",
            lambda ome: ome.update(multiscales=ome["multiscales"][0]),
            "Field A/1/0",
            "KeyError",
        ),
        ("A/1/0", lambda ome: ome.update(omero=[]), "Field A/1/0 of plate", "AttributeError"),
    ],
)
def test_metadata_lacking_a_key_or_of_another_type_is_named(plate, member, edit, where, error):
    path, _, _ = plate
    _edit(path, member, edit)
    with pytest.raises(ValueError, match=rf"{where} .*not NGFF 0.4/0.5 \({error}"):
        open_plate(path).read_field("A/1/0")


def test_metadata_cut_short_is_named(plate):
    path, version, _ = plate
    name = ".zattrs" if version == "0.4" else "zarr.json"
    metadata = path / "A" / "1" / "0" / name
    metadata.write_text(metadata.read_text()[:40])  # an interrupted copy
    with pytest.raises(ValueError, match=r"Field A/1/0 of plate .*image 'A/1/0' is damaged \(not"):
        open_plate(path).read_field("A/1/0")


def test_metadata_on_disk_is_read_not_a_consolidated_copy(plate):
    import zarr

    path, _, written = plate
    zarr.consolidate_metadata(str(path))
    _edit(path, "A/1/0", lambda ome: ome["omero"]["channels"].reverse())  # made after
    opened = open_plate(path)
    assert opened.channel_names("A/1/0") == CHANNELS[::-1]
    np.testing.assert_array_equal(opened.read_field("A/1/0", ["GFP"]), written["A/1/0"][0][1:])


def _replace_labels(path, version, labels):
    """Overwrite field A/1/0's label image level 0 (and nothing else) with ``labels``."""
    import zarr

    group = zarr.open_group(path / "A" / "1" / "0" / "labels" / "cells", mode="r+")
    attributes = group.attrs.asdict() if version == "0.4" else group.attrs["ome"]
    level0 = attributes["multiscales"][0]["datasets"][0]["path"]
    del group[level0]
    group.create_array(level0, data=labels)


def test_label_image_of_floats_is_refused(plate):
    path, version, _ = plate
    _replace_labels(path, version, np.zeros(SHAPE, dtype=np.float32))
    opened = open_plate(path)
    with pytest.raises(ValueError, match="Label image 'cells' of field A/1/0.*float32 values"):
        opened.read_labels("A/1/0", "cells")
    with pytest.raises(ValueError, match="1 of 4 fields cannot be read:.*float32 values"):
        opened.check(labels="cells")  # from the metadata, before any pixel is read


def test_label_image_of_another_shape_is_refused(plate):
    path, version, _ = plate
    _replace_labels(path, version, np.zeros((32, 96), dtype=np.uint16))
    opened = open_plate(path)
    with pytest.raises(ValueError, match="is 32x96 pixels; the field's images are 64x96"):
        opened.read_labels("A/1/0", "cells")
    with pytest.raises(ValueError, match="1 of 4 fields cannot be read:.*32x96"):
        opened.check(labels="cells")


def test_v05_metadata_without_ome_is_refused(tmp_path):
    path = tmp_path / "P1.zarr"
    write_plate(path, "0.5", labels=False)
    metadata = json.loads((path / "zarr.json").read_text())
    metadata["attributes"] = metadata["attributes"]["ome"]  # as a 0.4 writer would put it
    (path / "zarr.json").write_text(json.dumps(metadata))
    keys = r"\(keys \['plate', 'version'\]\)"
    with pytest.raises(ValueError, match=f"Zarr v3 group whose NGFF metadata {keys} is not under"):
        open_plate(path)


@pytest.mark.parametrize(
    ("version", "declared", "match"),
    [
        ("0.4", "0.3", r"declares NGFF version '0.3' on Zarr v2"),
        ("0.5", "0.4", r"declares NGFF version '0.4' on Zarr v3"),
    ],
)
def test_unsupported_ngff_version_is_refused(tmp_path, version, declared, match):
    path = tmp_path / "P1.zarr"
    write_plate(path, version, labels=False)
    name = ".zattrs" if version == "0.4" else "zarr.json"
    metadata = json.loads((path / name).read_text())
    plate_metadata = metadata if version == "0.4" else metadata["attributes"]["ome"]
    if version == "0.5":
        plate_metadata["version"] = declared
    plate_metadata["plate"]["version"] = declared
    (path / name).write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=match):
        open_plate(path)


def test_single_image_or_plain_folder_is_not_a_plate(plate, tmp_path):
    path, _, _ = plate
    with pytest.raises(ValueError, match=r"not an OME-Zarr HCS plate \(it is a single image"):
        open_plate(path / "A" / "1" / "0")
    with pytest.raises(ValueError, match="not an OME-Zarr HCS plate: its metadata has keys"):
        open_plate(path / "A")  # a group with no NGFF metadata of its own
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a Zarr group"):
        open_plate(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="absent.zarr not found"):
        open_plate(tmp_path / "absent.zarr")
