"""Reading the DeepLoc HDF5 layout: ``data<k>`` crops with one-hot ``Index<k>`` labels."""

import re

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..validation import IMAGE_SIZE, check_crops

_CHUNK = re.compile(r"^data(\d+)$")


def _open(path):
    """Open an HDF5 file read-only, saying which file when it is not one."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file: {error}") from error


def _chunk_numbers(handle, path):
    numbers = sorted(int(m.group(1)) for key in handle if (m := _CHUNK.match(key)))
    missing = [k for k in numbers if f"Index{k}" not in handle]
    if not numbers or missing:
        raise ValueError(
            f"{path} is not a DeepLoc HDF5 file: expected datasets 'data1', 'Index1', ... "
            f"(crops and one-hot labels); found keys {sorted(handle.keys())}."
        )
    return numbers


def _label_names(handle, first_chunk, n_columns):
    for source in (
        handle.get("label_names"),
        handle.attrs.get("label_names"),
        handle.attrs.get(f"Index{first_chunk}_columns"),
    ):
        if source is None:
            continue
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(source)]
        if len(names) == n_columns:
            return np.asarray(names, dtype=object)
    return None


def _labels_from_one_hot(one_hot, path, key):
    one_hot = np.asarray(one_hot)
    per_row = (one_hot != 0).sum(axis=1)
    if np.any(per_row != 1):
        row = int(np.flatnonzero(per_row != 1)[0])
        raise ValueError(
            f"{path}:{key} must be one-hot (exactly one non-zero per row); row {row} "
            f"has {int(per_row[row])}."
        )
    return np.argmax(one_hot, axis=1)


def load_deeploc_hdf5(path, *, image_size=IMAGE_SIZE):
    """Load a DeepLoc-format HDF5 file into memory.

    Reads every ``data<k>`` / ``Index<k>`` pair in numeric order (``data2``
    before ``data10``). Each ``data`` row is one crop, flattened channel-major
    (``row[c * 4096:(c + 1) * 4096]`` is channel ``c``); each ``Index`` row is
    one-hot over the classes.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    image_size : int, default=64
        Side of the square crops.

    Returns
    -------
    X : ndarray of shape (n, C, image_size, image_size), float32
        Raw pixel values (stretching is the estimators' job).
    y : ndarray of shape (n,)
        Label names (object array of str) when the file names its ``Index``
        columns (a ``label_names`` dataset or attribute, or an
        ``Index1_columns`` attribute), otherwise integer column indices.

    See Also
    --------
    DeepLocHDF5Dataset : the same file read lazily, cell by cell.

    Examples
    --------
    >>> from sklearn_deeploc.datasets import load_deeploc_hdf5
    >>> X, y = load_deeploc_hdf5("../shared/data/Schuldiner_test_set.hdf5")  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (36, 2, 64, 64)
    """
    with _open(path) as handle:
        numbers = _chunk_numbers(handle, path)
        crops = [check_crops(handle[f"data{k}"][()], image_size=image_size) for k in numbers]
        labels = [_labels_from_one_hot(handle[f"Index{k}"][()], path, f"Index{k}") for k in numbers]
        names = _label_names(handle, numbers[0], handle[f"Index{numbers[0]}"].shape[1])
    X = np.concatenate(crops)
    y = np.concatenate(labels)
    return X, (names[y] if names is not None else y)


class DeepLocHDF5Dataset(Dataset):
    """A DeepLoc HDF5 file as a lazy torch ``Dataset``: only requested cells are read.

    The file is opened on first access in each process (handles do not
    pickle), so the dataset works in ``DataLoader`` workers and on Dask
    workers. Indexing with an integer gives one cell; with a sorted or
    unsorted sequence of integers, a batch read chunk by chunk.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    image_size : int, default=64
        Side of the square crops.

    Attributes
    ----------
    classes : ndarray
        Label names (or column indices) in ``Index`` column order.
    n_channels : int
        Channels per crop.

    Examples
    --------
    >>> from sklearn_deeploc.datasets import DeepLocHDF5Dataset
    >>> ds = DeepLocHDF5Dataset("../shared/data/Schuldiner_test_set.hdf5")  # doctest: +SKIP
    >>> x, label = ds[0]  # doctest: +SKIP
    >>> tuple(x.shape)  # doctest: +SKIP
    (2, 64, 64)
    """

    def __init__(self, path, *, image_size=IMAGE_SIZE):
        self.path = path
        self.image_size = image_size
        with _open(path) as handle:
            self._numbers = _chunk_numbers(handle, path)
            lengths = [handle[f"data{k}"].shape[0] for k in self._numbers]
            width = handle[f"data{self._numbers[0]}"].shape[1]
            n_columns = handle[f"Index{self._numbers[0]}"].shape[1]
            names = _label_names(handle, self._numbers[0], n_columns)
        self.n_channels = width // (image_size * image_size)
        if self.n_channels * image_size * image_size != width:
            raise ValueError(
                f"{path}: rows of {width} values are not whole {image_size}x{image_size} channels."
            )
        self._starts = np.concatenate([[0], np.cumsum(lengths)])
        self.classes = names if names is not None else np.arange(n_columns)
        self._handle = None

    def __len__(self):
        return int(self._starts[-1])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def _file(self):
        if self._handle is None:
            self._handle = h5py.File(self.path, "r")
        return self._handle

    def read(self, indices):
        """Crops ``(len(indices), C, H, W)`` float32 and integer labels, in the given order."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"cell index out of range for {len(self)} cells.")
        indices = indices % max(len(self), 1)
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        chunk_of = np.searchsorted(self._starts, sorted_idx, side="right") - 1
        handle = self._file()
        X = np.empty((indices.size, self.n_channels * self.image_size**2), np.float32)
        y = np.empty(indices.size, np.int64)
        for chunk in np.unique(chunk_of):
            in_chunk = chunk_of == chunk
            local = sorted_idx[in_chunk] - self._starts[chunk]
            unique_local, inverse = np.unique(local, return_inverse=True)
            k = self._numbers[chunk]
            X[order[in_chunk]] = handle[f"data{k}"][unique_local][inverse]
            y[order[in_chunk]] = _labels_from_one_hot(
                handle[f"Index{k}"][unique_local], self.path, f"Index{k}"
            )[inverse]
        side = self.image_size
        return X.reshape(-1, self.n_channels, side, side), y

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        if np.ndim(index) == 0:
            X, y = self.read([index])
            return torch.from_numpy(X[0]), int(y[0])
        X, y = self.read(index)
        return torch.from_numpy(X), torch.from_numpy(y)
