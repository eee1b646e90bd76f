import os
import pickle
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pytest

from sklearn_deeploc.datasets import (
    LOCALIZATIONS,
    DeepLocHDF5Dataset,
    load_deeploc_hdf5,
    make_yeast_cells,
    save_deeploc_hdf5,
)
from sklearn_deeploc.datasets._synthetic import STYLE_BOUNDS

SCHULDINER_COUNTS = {
    "ER": 6,
    "Bud": 1,
    "Cell Periphery": 7,
    "Cytosol": 5,
    "Mitochondria": 1,
    "Nuclear Periphery": 3,
    "Punctate": 4,
    "Vacuole": 6,
    "Vacuole Membrane": 3,
}


def test_schuldiner_file_loads(shared_data):
    X, y = load_deeploc_hdf5(shared_data / "Schuldiner_test_set.hdf5")
    assert X.shape == (36, 2, 64, 64) and X.dtype == np.float32
    names, counts = np.unique(y, return_counts=True)
    assert dict(zip(names, counts)) == SCHULDINER_COUNTS
    with h5py.File(shared_data / "Schuldiner_test_set.hdf5") as f:
        np.testing.assert_array_equal(X[3, 1].ravel(), f["data1"][3, 4096:].astype(np.float32))
        assert y[3] == f.attrs["Index1_columns"][np.argmax(f["Index1"][3])].decode()


def _crops(rng, n, dtype=np.float32):
    return (rng.random((n, 2, 64, 64)) * 1000).astype(dtype)


@pytest.mark.parametrize(("chunk_size", "n_chunks"), [(1, 13), (4, 4), (None, 1)])
def test_save_load_round_trip_with_chunks_and_label_names(tmp_path, rng, chunk_size, n_chunks):
    X = _crops(rng, 13)
    y = np.array(list("bcaabcabcbaca"))
    save_deeploc_hdf5(tmp_path / "cells.h5", X, y, chunk_size=chunk_size)
    X_back, y_back = load_deeploc_hdf5(tmp_path / "cells.h5")
    np.testing.assert_array_equal(X_back, X)  # chunk_size=1: data2 before data10
    np.testing.assert_array_equal(y_back, y)
    with h5py.File(tmp_path / "cells.h5") as f:
        chunks = {f"{key}{k}" for key in ("data", "Index") for k in range(1, n_chunks + 1)}
        assert set(f) == chunks | {"label_names"}
        assert f["data1"].shape[1] == 2 * 64 * 64 and f["Index1"].dtype == np.uint8
        assert f["label_names"][()].tolist() == [b"a", b"b", b"c"]
    lazy = DeepLocHDF5Dataset(tmp_path / "cells.h5")
    crops, labels = lazy[:]
    np.testing.assert_array_equal(crops.numpy(), X)
    np.testing.assert_array_equal(lazy.classes[labels.numpy()], y)


def test_save_keeps_float64_and_names_integer_columns(tmp_path, rng):
    X = _crops(rng, 4, np.float64) + 1e-6  # not representable in float32
    names = ["ER", "bud", "nucleus", "vacuole"]
    save_deeploc_hdf5(tmp_path / "cells.h5", X, [3, 0, 0, 3], label_names=names)
    with h5py.File(tmp_path / "cells.h5") as f:
        np.testing.assert_array_equal(f["data1"][()], X.reshape(4, -1))
        assert f["Index1"].shape == (4, 4)  # columns without cells are kept
    _, y = load_deeploc_hdf5(tmp_path / "cells.h5")
    assert y.tolist() == ["vacuole", "ER", "ER", "vacuole"]
    assert DeepLocHDF5Dataset(tmp_path / "cells.h5").classes.tolist() == names


def test_unlabelled_file_round_trip(tmp_path, rng):
    X = _crops(rng, 5)
    save_deeploc_hdf5(tmp_path / "cells.h5", X, chunk_size=2)
    with h5py.File(tmp_path / "cells.h5") as f:
        assert sorted(f) == ["data1", "data2", "data3"]
    X_back, y_back = load_deeploc_hdf5(tmp_path / "cells.h5")
    np.testing.assert_array_equal(X_back, X)
    assert y_back is None
    lazy = DeepLocHDF5Dataset(tmp_path / "cells.h5")
    assert lazy.classes is None and lazy[3][1] == -1
    assert lazy[[0, 4]][1].tolist() == [-1, -1]


def test_interrupted_save_leaves_the_old_file(tmp_path, rng, monkeypatch):
    X = _crops(rng, 6)
    save_deeploc_hdf5(tmp_path / "cells.h5", X, list("aabbcc"))
    create = h5py.Group.create_dataset
    calls = []

    def interrupted_after_one_dataset(self, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", interrupted_after_one_dataset)
    with pytest.raises(KeyboardInterrupt):
        save_deeploc_hdf5(tmp_path / "cells.h5", X[:2], chunk_size=1)
    assert [p.name for p in tmp_path.iterdir()] == ["cells.h5"]
    np.testing.assert_array_equal(load_deeploc_hdf5(tmp_path / "cells.h5")[0], X)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"y": list("ab")}, ValueError, "one label per cell \\(3\\); got shape \\(2,\\)"),
        (
            {"y": list("abd"), "label_names": ["a", "b"]},
            ValueError,
            "not in label_names: \\['d'\\]",
        ),
        ({"y": [0, 1, 2], "label_names": ["a", "b"]}, ValueError, "columns 0 to 1"),
        ({"y": [0, -1, 1]}, ValueError, "columns 0 to 1 .*from -1 to 1"),
        ({"y": [1000001, 2000002, 1000001]}, ValueError, "would make 2000003 columns"),
        (
            {"y": ["a", 1, "b"]},
            TypeError,
            "all integer column numbers or all string labels; got \\['int', 'str'\\]",
        ),
        ({"y": [0.0, 1.0, 1.0]}, TypeError, "integer column numbers .*; got \\['float'\\]"),
        ({"y": list("abc"), "label_names": ["a", "a", "b", "c"]}, ValueError, "repeats a name"),
        ({"label_names": ["a"]}, ValueError, "label_names .* needs y"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive integer"),
        ({"y": ["a\x00", "a", "b"]}, ValueError, r"Label 'a\\x00' holds a NUL character"),
        (
            {"y": [0, 1, 0], "label_names": ["a", "b\x00c"]},
            ValueError,
            r"Label name 'b\\x00c' holds a NUL character",
        ),
        ({"y": ["a", "\ud800", "b"]}, ValueError, r"Label '\\ud800' cannot be written as UTF-8"),
    ],
)
def test_save_refuses_bad_labels_and_sizes(tmp_path, rng, arguments, error, match):
    with pytest.raises(error, match=match):
        save_deeploc_hdf5(tmp_path / "cells.h5", _crops(rng, 3), **arguments)
    assert not list(tmp_path.iterdir())


def test_save_refuses_bad_crops(tmp_path, rng):
    with pytest.raises(ValueError, match="square crops; got 64x60"):
        save_deeploc_hdf5(tmp_path / "cells.h5", rng.random((2, 2, 64, 60)))
    with pytest.raises(ValueError, match="NaN or infinity"):
        save_deeploc_hdf5(tmp_path / "cells.h5", np.full((2, 2, 64, 64), np.nan))
    with pytest.raises(FileNotFoundError, match="folder .*missing does not exist"):
        save_deeploc_hdf5(tmp_path / "missing" / "cells.h5", _crops(rng, 2))


def _tampered(path, rng, change):
    """A valid 3-chunk labelled file, then ``change(handle)`` applied to it."""
    save_deeploc_hdf5(path, _crops(rng, 9, np.float64), list("abcabcabc"), chunk_size=3)
    with h5py.File(path, "a") as f:
        change(f)
    return path


def _replace(**datasets):
    def change(f):
        for key, value in datasets.items():
            if key in f:
                del f[key]
            f[key] = value

    return change


def _declare_without_writing(f):
    del f["data3"]
    f.create_dataset("data3", shape=(10**7, 8192), dtype="f4", chunks=(1, 8192))


def _declare_compressed_without_writing(f):
    del f["data3"]
    f.create_dataset(
        "data3", (10**9, 8192), "f4", chunks=(1, 8192), compression="gzip", fillvalue=100
    )


def _write_compressed_partly(f):
    del f["data2"]
    f.create_dataset("data2", (3, 8192), "f4", chunks=(1, 8192), compression="gzip")
    f["data2"][0] = 1.0


def _make_virtual(f):
    del f["data3"]
    layout = h5py.VirtualLayout(shape=(3, 8192), dtype="f4")
    layout[:] = h5py.VirtualSource("missing.h5", "data", shape=(3, 8192))
    f.create_virtual_dataset("data3", layout)


def _store_externally(f):
    del f["data3"]
    f.create_dataset("data3", (3, 8192), "f4", external=[("missing.bin", 0, h5py.h5f.UNLIMITED)])


def _link_to_another_file(f, soft=False):
    with h5py.File(Path(f.filename).with_name("other.h5"), "w") as other:
        other["cells"] = np.zeros((3, 8192), "f4")
    del f["data3"]
    f["external" if soft else "data3"] = h5py.ExternalLink("other.h5", "cells")
    if soft:
        f["data3"] = h5py.SoftLink("/external")


def _link_label_names_to_another_file(f):
    with h5py.File(Path(f.filename).with_name("other.h5"), "w") as other:
        other["names"] = np.array([b"x", b"y", b"z"])
    del f["label_names"]
    f["label_names"] = h5py.ExternalLink("other.h5", "names")


def _use_many_classes(f):
    del f["label_names"]
    for k in (1, 2, 3):
        del f[f"Index{k}"]
        f[f"Index{k}"] = np.eye(3, 10_001, dtype=np.uint8)


def _declare_label_names_without_writing(f):
    del f["label_names"]
    f.create_dataset("label_names", (3,), "S1000")


TAMPERINGS = {
    "declared, never written": (
        _declare_without_writing,
        "data3 declares shape \\(10000000, 8192\\) \\(327680000000 bytes\\) but stores 0 bytes",
    ),
    "compressed, never written": (
        _declare_compressed_without_writing,
        "data3 declares shape \\(1000000000, 8192\\) in 1000000000 chunks of \\(1, 8192\\) "
        "but the file holds 0 of them; .* fill value 100.0",
    ),
    "compressed, partly written": (
        _write_compressed_partly,
        "data2 declares shape \\(3, 8192\\) in 3 chunks .* holds 1 of them",
    ),
    "virtual dataset": (_make_virtual, "data3 keeps its values in other files"),
    "external storage": (_store_externally, "data3 keeps its values in other files"),
    "external link": (_link_to_another_file, "data3 is a link to another file .*other.h5"),
    "soft link to an external link": (
        partial(_link_to_another_file, soft=True),
        "data3 is a link to another file .*other.h5",
    ),
    "external label names": (
        _link_label_names_to_another_file,
        "label_names is a link to another file .*other.h5",
    ),
    "too many classes": (
        _use_many_classes,
        "Index chunks have 10001 columns; expected at most 10000",
    ),
    "label_names never written": (
        _declare_label_names_without_writing,
        "label_names declares shape \\(3,\\) \\(3000 bytes\\) but stores 0 bytes",
    ),
    "label names too long": (
        _replace(label_names=np.array([b"a", b"b", b"c"], dtype="S2000")),
        "label_names dataset declares names of 2000 bytes .*at most 1000 bytes",
    ),
    "chunk widths differ": (
        _replace(data2=np.zeros((3, 3 * 64 * 64))),
        "chunk data2 has 12288 columns but data1 has 8192",
    ),
    "Index columns differ": (
        _replace(Index3=np.eye(4, dtype=np.uint8)[:3]),
        "chunk Index3 has 4 columns but Index1 has 3",
    ),
    "label_names count": (
        _replace(label_names=np.array([b"a", b"b"])),
        "label_names dataset holds 2 names for 3 Index columns",
    ),
    "Index rows": (
        _replace(Index2=np.eye(3, dtype=np.uint8)[[0, 1]]),
        "chunk Index2 has 2 rows but data2 has 3 cells",
    ),
    "unpaired chunk": (
        _replace(data4=np.zeros((1, 8192))),
        "must come in pairs; chunk\\(s\\) \\[4\\]",
    ),
    "no cells": (
        _replace(
            **{f"data{k}": np.zeros((0, 8192)) for k in (1, 2, 3)},
            **{f"Index{k}": np.zeros((0, 3)) for k in (1, 2, 3)},
        ),
        "holds no cells",
    ),
    "not one-hot": (
        _replace(Index3=np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], np.uint8)),
        "Index3 must be one-hot .*row 1 holds \\[1 1 0\\]",
    ),
    "label not 0 or 1": (
        _replace(Index1=np.array([[1, 0, 0], [np.nan, 0, 1], [0, 0, 1]])),
        "Index1 must be one-hot .*row 1 holds \\[nan",
    ),
    "names not UTF-8": (
        _replace(label_names=np.array([b"\xff", b"b", b"c"])),
        "label_names dataset holds a name that is not UTF-8",
    ),
    "partial channels": (
        _replace(**{f"data{k}": np.zeros((3, 8000)) for k in (1, 2, 3)}),
        "rows of 8000 values are not whole 64x64 channels",
    ),
}


@pytest.mark.parametrize("case", TAMPERINGS)
def test_both_loaders_refuse_inconsistent_files_with_one_message(tmp_path, rng, case):
    change, match = TAMPERINGS[case]
    path = _tampered(tmp_path / "cells.h5", rng, change)
    with pytest.raises(ValueError, match=match) as eager:
        load_deeploc_hdf5(path)
    with pytest.raises(ValueError) as lazy:
        DeepLocHDF5Dataset(path)
    assert str(eager.value) == str(lazy.value)
    assert str(path) in str(eager.value)


@pytest.mark.parametrize("change", ["fewer cells", "other labels"])
def test_lazy_dataset_refuses_a_file_changed_after_its_check(tmp_path, rng, change):
    path = tmp_path / "cells.h5"
    save_deeploc_hdf5(path, _crops(rng, 4), list("abcd"))
    lazy = DeepLocHDF5Dataset(path)
    pickled = pickle.dumps(lazy)  # as DataLoader and Dask workers get it
    if change == "fewer cells":
        save_deeploc_hdf5(path, _crops(rng, 2), list("zy"))
    else:
        save_deeploc_hdf5(path, _crops(rng, 4), list("abdc"))
    for dataset in (lazy, pickle.loads(pickled)):
        with pytest.raises(ValueError, match="cells.h5 changed since this DeepLocHDF5Dataset"):
            dataset[0]
    crops, _ = DeepLocHDF5Dataset(path)[:]  # checked anew, the file reads
    assert len(crops) == (2 if change == "fewer cells" else 4)


@pytest.mark.parametrize("change", ["touch", "opened for writing", "identical copy"])
def test_lazy_dataset_reads_a_file_touched_but_not_changed(tmp_path, rng, change):
    path = tmp_path / "cells.h5"
    X = _crops(rng, 4)
    save_deeploc_hdf5(path, X, list("abcd"))
    lazy = DeepLocHDF5Dataset(path)
    if change == "touch":
        status = path.stat()
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1))
    elif change == "opened for writing":
        with h5py.File(path, "a") as f:
            f.attrs["note"] = "checked by hand"
    else:
        copy = tmp_path / "copy.h5"
        copy.write_bytes(path.read_bytes())
        os.replace(copy, path)  # another inode, same content (a worker's staged copy)
    crops, labels = lazy[:]
    np.testing.assert_array_equal(crops.numpy(), X)
    assert labels.tolist() == [0, 1, 2, 3]


def test_directories_are_refused_by_name(tmp_path, rng):
    with pytest.raises(IsADirectoryError, match="is a directory, expected an HDF5 file"):
        load_deeploc_hdf5(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a directory, expected an HDF5 file"):
        DeepLocHDF5Dataset(tmp_path)
    with pytest.raises(IsADirectoryError, match="Cannot write .*: it is a directory"):
        save_deeploc_hdf5(tmp_path, _crops(rng, 2))


def test_non_finite_and_overflowing_pixels_are_refused(tmp_path, rng):
    def poison(f):
        f["data2"][1, 5] = np.nan
        f["data3"][2, 7] = 1e300

    path = _tampered(tmp_path / "cells.h5", rng, poison)
    with pytest.raises(ValueError, match="data2 row 1 holds NaN or infinite values"):
        load_deeploc_hdf5(path)
    lazy = DeepLocHDF5Dataset(path)
    with pytest.raises(ValueError, match="data2 row 1 holds NaN or infinite values"):
        lazy[4]
    with pytest.raises(ValueError, match="data3 row 2 holds values beyond the float32 range"):
        lazy[-1]
    assert lazy[[0, 3, 5, 6, 7]][0].shape == (5, 2, 64, 64)  # the sound cells still read


def test_damaged_compressed_chunk_is_refused(tmp_path, rng):
    path = tmp_path / "cells.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data1", data=_crops(rng, 4).reshape(4, -1), compression="gzip")
        f["Index1"] = np.eye(2, dtype=np.uint8)[[0, 1, 0, 1]]
        chunk = f["data1"].id.get_chunk_info(0)
    content = bytearray(path.read_bytes())
    content[chunk.byte_offset : chunk.byte_offset + 64] = bytes(64)
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="data1 cannot be read; the file is damaged"):
        load_deeploc_hdf5(path)
    with pytest.raises(ValueError, match="data1 cannot be read; the file is damaged"):
        DeepLocHDF5Dataset(path)[0]


@pytest.fixture
def eleven_cells(tmp_path, rng):
    X = _crops(rng, 11)
    y = np.arange(11) % 3
    save_deeploc_hdf5(tmp_path / "cells.h5", X, y, chunk_size=4)
    return DeepLocHDF5Dataset(tmp_path / "cells.h5"), X, y


MASK = np.array([True, False, False, True, True, False, False, False, True, False, True])


@pytest.mark.parametrize(
    "index",
    [
        slice(None),
        slice(2, 9, 3),
        slice(None, None, -1),
        slice(9, 1, -4),
        slice(20, 30),
        [10, 0, 5, 5, -1],
        np.array([3, 7], dtype=np.uint8),
        [],
        MASK,
        list(MASK),
    ],
    ids=repr,
)
def test_lazy_dataset_indexes_like_numpy(eleven_cells, index):
    lazy, X, y = eleven_cells
    crops, labels = lazy[index]
    np.testing.assert_array_equal(crops.numpy(), X[index])
    np.testing.assert_array_equal(labels.numpy(), y[index])


@pytest.mark.parametrize("index", [0, 10, -1, -11, np.int64(5), (3,)])
def test_lazy_dataset_single_cells(eleven_cells, index):
    lazy, X, y = eleven_cells
    crop, label = lazy[index]
    assert crop.shape == (2, 64, 64) and isinstance(label, int)
    np.testing.assert_array_equal(crop.numpy(), X[index])
    assert label == y[index]


@pytest.mark.parametrize(
    ("index", "error", "match"),
    [
        (1.0, TypeError, "takes an int, a slice, .* got float 1.0"),
        (np.array([0.0, 1.0]), TypeError, "takes an int"),
        ("0", TypeError, "takes an int"),
        ([[0, 1], [2]], TypeError, "takes an int"),
        ((0, 0), IndexError, "one axis \\(cells\\); got a tuple of 2 indices"),
        ((), IndexError, "got a tuple of 0 indices"),
        (11, IndexError, "Cell index 11 is out of range for 11 cells \\(-11 to 10\\)"),
        ([0, -12], IndexError, "Cell index -12 is out of range"),
        (
            MASK[:-1],
            IndexError,
            "boolean mask must have one entry per cell \\(11\\); got shape \\(10,\\)",
        ),
    ],
    ids=repr,
)
def test_lazy_dataset_refuses_other_indices(eleven_cells, index, error, match):
    lazy, _, _ = eleven_cells
    with pytest.raises(error, match=match):
        lazy[index]


def test_lazy_dataset_iterates_and_pickles(eleven_cells):
    lazy, X, _ = eleven_cells
    assert len(list(lazy)) == 11  # iteration stops at the IndexError
    copy = pickle.loads(pickle.dumps(lazy))
    np.testing.assert_array_equal(copy.read([2, 9])[0], X[[2, 9]])


def test_file_without_deeploc_keys(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["images"] = np.zeros((2, 8))
    with pytest.raises(ValueError, match="not a DeepLoc HDF5 file.*found keys \\['images'\\]"):
        load_deeploc_hdf5(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="not a DeepLoc HDF5 file"):
        DeepLocHDF5Dataset(tmp_path / "other.h5")
    h5py.File(tmp_path / "empty.h5", "w").close()
    with pytest.raises(ValueError, match="empty.h5 is not a DeepLoc HDF5 file.*found keys \\[\\]"):
        load_deeploc_hdf5(tmp_path / "empty.h5")


def test_make_yeast_cells_is_deterministic_balanced_and_shaped():
    X, y = make_yeast_cells(3, random_state=0)
    X2, y2 = make_yeast_cells(3, random_state=0)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert len(LOCALIZATIONS) >= 12
    assert X.shape == (3 * len(LOCALIZATIONS), 2, 64, 64) and X.dtype == np.float32
    assert set(np.unique(y, return_counts=True)[1]) == {3}
    assert not np.array_equal(X, make_yeast_cells(3, random_state=1)[0])


def test_make_yeast_cells_styles_differ():
    source, _ = make_yeast_cells(2, ["NUCLEI"], style="source", random_state=0)
    target, _ = make_yeast_cells(2, ["NUCLEI"], style="target", random_state=0)
    assert target.min() > 30000 > source.max()
    custom, _ = make_yeast_cells(2, ["NUCLEI"], style={"offset": 5000.0}, random_state=0)
    assert 4000 < custom.min()


def test_make_yeast_cells_bad_arguments():
    with pytest.raises(ValueError, match="Unknown classes \\['GOLGII'\\]"):
        make_yeast_cells(1, ["GOLGII"])
    with pytest.raises(ValueError, match="n_per_class must be a positive integer"):
        make_yeast_cells(0)
    with pytest.raises(ValueError, match="Unknown style keys"):
        make_yeast_cells(1, style={"gain": 2})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"image_size": 0}, "image_size must be a positive integer; got 0"),
        ({"image_size": 2.5}, "image_size must be a positive integer; got 2.5"),
        ({"bud_fraction": np.nan}, r"bud_fraction must be a fraction in \[0, 1\]; got nan"),
        ({"style": {"photons": -1}}, r"style\['photons'\] must be a number in \[0.001, 10000\]"),
        ({"style": {"offset": 1e39}}, r"style\['offset'\] must be a number in \[0, 1e\+06\]"),
        ({"style": {"marker": "x"}}, r"style\['marker'\] must be one of \('cytosol', 'rim'\)"),
        ({"style": {"cell_radius": (9, 3)}}, r"style\['cell_radius'\] must be two radii"),
        ({"style": 3}, "style must be a style name or a dict; got int"),
        ({"classes": "NUCLEI"}, "classes must be a list of class names; got the string"),
    ],
)
def test_make_yeast_cells_refuses_what_no_camera_gives(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make_yeast_cells(**{"n_per_class": 1, "classes": ["NUCLEI"], **options})


def test_make_yeast_cells_takes_every_style_at_its_bounds():
    brightest = {key: high for key, (low, high) in STYLE_BOUNDS.items() if key != "blur"}
    for style in (brightest, {**brightest, "blur": 100, "cell_radius": (1, 1000)}):
        X, _ = make_yeast_cells(100, ["NUCLEI"], style=style, random_state=0)
        assert np.isfinite(X).all()


def test_make_yeast_cells_takes_a_small_crop_and_a_style_of_its_own():
    style = {"cell_radius": [4, 5], "marker": "rim", "offset": 0}
    X, _ = make_yeast_cells(2, ["NUCLEI"], image_size=16, style=style, random_state=0)
    assert X.shape == (2, 2, 16, 16) and np.isfinite(X).all()


def test_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "cells.h5").write_text("Image Path,Center_X\n")
    with pytest.raises(ValueError, match="cells.h5 is not a readable HDF5 file"):
        load_deeploc_hdf5(tmp_path / "cells.h5")
    with pytest.raises(FileNotFoundError):
        DeepLocHDF5Dataset(tmp_path / "missing.h5")


def test_a_gap_in_the_chunk_numbers_is_reported(tmp_path):
    path = tmp_path / "gap.h5"
    save_deeploc_hdf5(path, np.zeros((6, 2, 64, 64)), ["ER", "bud"] * 3, chunk_size=2)
    with h5py.File(path, "a") as file:
        del file["data2"], file["Index2"]  # a copy cut short in the middle
    match = r"data chunks \[1, 3\] without data2 \(a partial copy\?\); the chunks there"
    with pytest.warns(UserWarning, match=match):
        assert len(load_deeploc_hdf5(path)[0]) == 4
    with pytest.warns(UserWarning, match=match):
        assert len(DeepLocHDF5Dataset(path)) == 4
