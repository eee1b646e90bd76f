import h5py
import numpy as np
import pytest

from sklearn_deeploc.datasets import (
    LOCALIZATIONS,
    DeepLocHDF5Dataset,
    load_deeploc_hdf5,
    make_yeast_cells,
)

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


def _write_chunks(path, sizes, rng, names=None):
    """Chunks written in the order 10, 2, 1 so that numeric order is tested."""
    crops = {}
    with h5py.File(path, "w") as f:
        for k, n in zip((10, 2, 1), sizes):
            crops[k] = rng.random((n, 2 * 64 * 64))
            f[f"data{k}"] = crops[k]
            f[f"Index{k}"] = np.eye(3, dtype=np.uint8)[np.arange(n) % 3]
        if names is not None:
            f["label_names"] = np.asarray(names, dtype="S")
    return np.concatenate([crops[1], crops[2], crops[10]])


def test_three_chunks_load_in_numeric_order(tmp_path, rng):
    expected = _write_chunks(tmp_path / "three.h5", (4, 5, 6), rng, names=["a", "b", "c"])
    X, y = load_deeploc_hdf5(tmp_path / "three.h5")
    np.testing.assert_array_equal(X.reshape(len(X), -1), expected.astype(np.float32))
    assert list(y) == ["a", "b", "c"] * 2 + ["a", "b", "c", "a", "b"] + ["a", "b", "c", "a"]


def test_lazy_dataset_matches_eager_loader(tmp_path, rng):
    _write_chunks(tmp_path / "three.h5", (4, 5, 6), rng)
    X, y = load_deeploc_hdf5(tmp_path / "three.h5")
    assert y.dtype.kind == "i"
    ds = DeepLocHDF5Dataset(tmp_path / "three.h5")
    assert len(ds) == 15 and ds.n_channels == 2
    for i in range(15):
        x_i, y_i = ds[i]
        np.testing.assert_array_equal(x_i.numpy(), X[i])
        assert y_i == y[i]
    order = [14, 0, 7, 7, 3]
    batch, labels = ds[order]
    np.testing.assert_array_equal(batch.numpy(), X[order])
    np.testing.assert_array_equal(labels.numpy(), y[order])


def test_file_without_deeploc_keys(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["images"] = np.zeros((2, 8))
    with pytest.raises(ValueError, match="not a DeepLoc HDF5 file.*found keys \\['images'\\]"):
        load_deeploc_hdf5(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="not a DeepLoc HDF5 file"):
        DeepLocHDF5Dataset(tmp_path / "other.h5")


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


def test_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "cells.h5").write_text("Image Path,Center_X\n")
    with pytest.raises(ValueError, match="cells.h5 is not a readable HDF5 file"):
        load_deeploc_hdf5(tmp_path / "cells.h5")
    with pytest.raises(FileNotFoundError):
        DeepLocHDF5Dataset(tmp_path / "missing.h5")
