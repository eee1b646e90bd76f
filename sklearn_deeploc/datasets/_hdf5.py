"""The DeepLoc HDF5 layout: ``data<k>`` crops with one-hot ``Index<k>`` labels.

``data<k>`` holds one crop per row, flattened channel-major; ``Index<k>`` (when labelled) one
one-hot row per crop; an optional ``label_names`` dataset names the ``Index`` columns. Both
loaders pass :func:`_read_layout` before reading a pixel, so they refuse the same files alike.
"""

import math
import numbers
import os
import re
import warnings
from collections import namedtuple
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .._files import write_atomically
from ..validation import IMAGE_SIZE, check_crops, check_positive_int

_CHUNK = re.compile(r"^(data|Index)(0|[1-9]\d*)$")
# Whole chunks are read in pieces of about this size, so memory follows the output.
_READ_BYTES = 64 * 2**20
# Bounds on what a file may declare before anything is read: a few bytes of
# HDF5 metadata must not make a loader allocate gigabytes for labels.
_MAX_CLASSES = 10_000
_MAX_LABEL_NAME_BYTES = 1_000

# A checked file: every data<k>'s k in numeric order, each chunk's first cell then the cell count,
# the channels, the Index column names (or numbers), each cell's column (both None if unlabelled).
_Layout = namedtuple("_Layout", "chunks starts n_channels classes labels")


def _identity(handle):
    """Size, mtime and inode of the file an open handle reads (not of what its path names now)."""
    status = os.fstat(handle.id.get_vfd_handle())
    return status.st_size, status.st_mtime_ns, status.st_ino


def _open(path):
    """Open an HDF5 file read-only, saying which file when it is not one."""
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"No DeepLoc HDF5 file at {path}: it does not exist.") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path} is a directory, expected an HDF5 file.") from None
    except OSError as error:
        raise ValueError(f"{path} is not a readable HDF5 file: {error}") from error


def _dataset(handle, key, path):
    """The 2-D numeric dataset ``key``, its values all stored in the file."""
    dataset = handle.get(key)
    if not isinstance(dataset, h5py.Dataset) or dataset.ndim != 2:
        raise ValueError(f"{path}: {key} must be a 2-D dataset (one row per cell); got {dataset}.")
    if dataset.dtype.kind not in "biuf":
        raise ValueError(f"{path}: {key} must hold numbers; got dtype {dataset.dtype}.")
    _check_stored(dataset, path, key, handle)
    return dataset


def _check_stored(dataset, path, key, handle):
    """Believe a declared shape only when the file holds every value (HDF5 fills the rest)."""
    if dataset.file != handle:  # an external link, maybe behind a soft link
        raise ValueError(
            f"{path}: {key} is a link to another file ({dataset.file.filename}); expected the "
            "values in the file itself."
        )
    if dataset.is_virtual or dataset.external:
        raise ValueError(
            f"{path}: {key} keeps its values in other files (a virtual dataset or external "
            "storage), read as fill values when missing; expected them in the file itself."
        )
    unfiltered = dataset.id.get_create_plist().get_nfilters() == 0
    stored = dataset.id.get_storage_size()
    if unfiltered and stored < dataset.nbytes:
        raise ValueError(
            f"{path}: {key} declares shape {dataset.shape} ({dataset.nbytes} bytes) but "
            f"stores {stored} bytes; the file is truncated or was not completely written."
        )
    # Compressed chunks have no expected size, and padded edge chunks can make the byte
    # count look complete with a chunk missing: count the chunks too.
    if dataset.chunks is not None:
        needed = math.prod(-(-n // chunk) for n, chunk in zip(dataset.shape, dataset.chunks))
        written = dataset.id.get_num_chunks()
        if written < needed:
            raise ValueError(
                f"{path}: {key} declares shape {dataset.shape} in {needed} chunks of "
                f"{dataset.chunks} but the file holds {written} of them; HDF5 would read the "
                f"rest as the fill value {dataset.fillvalue}."
            )


def _chunk_numbers(handle, path):
    """The chunk numbers, and whether the file is labelled (has ``Index`` chunks)."""
    found = {"data": set(), "Index": set()}
    for key in handle:
        if match := _CHUNK.match(key):
            found[match.group(1)].add(int(match.group(2)))
    if not found["data"]:
        raise ValueError(
            f"{path} is not a DeepLoc HDF5 file: expected datasets 'data1', 'Index1', ... "
            f"(crops and one-hot labels); found keys {sorted(handle.keys())}."
        )
    if found["Index"] and found["Index"] != found["data"]:
        unpaired = sorted(found["data"] ^ found["Index"])
        raise ValueError(
            f"{path}: data<k> and Index<k> chunks must come in pairs; chunk(s) {unpaired} "
            f"have one without the other (data: {sorted(found['data'])}, "
            f"Index: {sorted(found['Index'])})."
        )
    chunks = sorted(found["data"])
    missing = sorted(set(range(min(chunks[0], 1), chunks[-1] + 1)) - set(chunks))
    if missing:  # the published files number their chunks from 1 without a gap
        absent = ", ".join(f"data{k}" for k in missing[:3]) + ", ..." * (len(missing) > 3)
        warnings.warn(
            f"{path} holds data chunks {chunks} without {absent} (a partial copy?); the chunks "
            "there are read.",
            UserWarning,
            stacklevel=4,
        )
    return chunks, bool(found["Index"])


def _check_shapes(handle, path, chunks, key):
    """Rows of each ``<key><k>`` chunk; every chunk must have as many columns as the first."""
    datasets = [_dataset(handle, f"{key}{k}", path) for k in chunks]
    width = datasets[0].shape[1]
    for k, dataset in zip(chunks, datasets):
        if dataset.shape[1] != width:
            raise ValueError(
                f"{path}: chunk {key}{k} has {dataset.shape[1]} columns but {key}{chunks[0]} "
                f"has {width}; every {key} chunk must have the same width."
            )
    return [dataset.shape[0] for dataset in datasets], width


def _label_names(handle, path, first_chunk, n_columns):
    """Names of the ``Index`` columns, from the first place that has them, or None."""
    source = handle.get("label_names")
    if source is not None:
        if not isinstance(source, h5py.Dataset):
            raise ValueError(f"{path}: label_names must be a dataset of names; got {source}.")
        _check_stored(source, path, "label_names", handle)
        where, read = "the label_names dataset", partial(_read, source, (), path, "label_names")
    else:
        name = "label_names" if "label_names" in handle.attrs else f"Index{first_chunk}_columns"
        if name not in handle.attrs:
            return None
        where, source = f"the {name} attribute", handle.attrs.get_id(name)
        read = partial(handle.attrs.get, name)
    n_names = math.prod(source.shape)
    if n_names != n_columns:
        raise ValueError(
            f"{path}: {where} holds {n_names} names for {n_columns} Index columns; "
            "expected one name per column."
        )
    if source.dtype.itemsize > _MAX_LABEL_NAME_BYTES:
        raise ValueError(
            f"{path}: {where} declares names of {source.dtype.itemsize} bytes (dtype "
            f"{source.dtype}); expected at most {_MAX_LABEL_NAME_BYTES} bytes per name."
        )
    try:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in np.ravel(read())]
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: {where} holds a name that is not UTF-8: {error}.") from error
    names = np.asarray(names, dtype=object)
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: {where} repeats a name: {names.tolist()}.")
    return names


def _read(dataset, selection, path, key):
    """``dataset[selection]``; HDF5's error for damaged stored data names the file."""
    try:
        return dataset[selection]
    except OSError as error:
        raise ValueError(f"{path}:{key} cannot be read; the file is damaged: {error}") from error


def _read_labels(handle, path, chunks, n_columns):
    """Every cell's ``Index`` column (the single 1 of its one-hot row), read in pieces."""
    labels = []
    for key in (f"Index{k}" for k in chunks):
        rows = _READ_BYTES // max(n_columns * handle[key].dtype.itemsize, 1)
        for start in range(0, len(handle[key]), rows):
            one_hot = _read(handle[key], slice(start, start + rows), path, key)
            ones = one_hot == 1
            bad = np.flatnonzero((ones.sum(axis=1) != 1) | ~(ones | (one_hot == 0)).all(axis=1))
            if bad.size:
                raise ValueError(
                    f"{path}:{key} must be one-hot (a single 1 per row, 0 elsewhere); row "
                    f"{start + bad[0]} holds {np.array2string(one_hot[bad[0]], threshold=20)}."
                )
            labels.append(np.argmax(ones, axis=1))
    return np.concatenate(labels).astype(np.int64)


def _index_columns(handle, path, chunks, lengths):
    """The ``Index`` column count, once every chunk has one row per cell and few columns."""
    index_rows, n_columns = _check_shapes(handle, path, chunks, "Index")
    for k, n_rows, n_cells in zip(chunks, index_rows, lengths):
        if n_rows != n_cells:
            raise ValueError(
                f"{path}: chunk Index{k} has {n_rows} rows but data{k} has {n_cells} "
                "cells; expected one label row per cell."
            )
    if n_columns > _MAX_CLASSES:
        raise ValueError(
            f"{path}: Index chunks have {n_columns} columns; expected at most "
            f"{_MAX_CLASSES} (one column per class)."
        )
    return n_columns


def _read_layout(handle, path, image_size):
    """Check every declared shape and label of a DeepLoc file; the loaders' one gate."""
    check_positive_int(image_size, "image_size")
    chunks, labelled = _chunk_numbers(handle, path)
    lengths, width = _check_shapes(handle, path, chunks, "data")
    pixels = image_size * image_size
    if width < pixels or width % pixels:
        raise ValueError(
            f"{path}: rows of {width} values are not whole {image_size}x{image_size} "
            f"channels (expected a multiple of {pixels}); give image_size if the crops "
            "have another side."
        )
    if sum(lengths) == 0:
        raise ValueError(f"{path} holds no cells: every data chunk is empty.")
    n_columns = _index_columns(handle, path, chunks, lengths) if labelled else 0
    names = _label_names(handle, path, chunks[0], n_columns)
    classes = (names if names is not None else np.arange(n_columns)) if labelled else None
    labels = _read_labels(handle, path, chunks, n_columns) if labelled else None
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return _Layout(chunks, starts, width // pixels, classes, labels)


def _read_crops(dataset, rows, path, key):
    """Rows (sorted, unique) of one data chunk as float32, refusing non-finite values."""
    contiguous = rows[-1] - rows[0] + 1 == len(rows)
    values = _read(dataset, slice(rows[0], rows[-1] + 1) if contiguous else rows, path, key)
    with np.errstate(over="ignore"):  # overflow is reported below, by row
        crops = values.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(crops).all(axis=1))
    if bad.size:
        first = bad[0]
        beyond = "values beyond the float32 range (about 3.4e38)"
        what = beyond if np.isfinite(values[first]).all() else "NaN or infinite values"
        raise ValueError(
            f"{path}:{key} row {rows[first]} holds {what}; expected finite pixel values."
        )
    return crops


def load_deeploc_hdf5(path, *, image_size=IMAGE_SIZE):
    """Load a DeepLoc-format HDF5 file into memory, chunks in numeric order (``data2`` first).

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
    y : ndarray of shape (n,) or None
        Label names (object array of str) when the file names its ``Index`` columns
        (``label_names`` dataset or attribute, ``Index1_columns`` attribute), else
        column indices; None when the file has no ``Index`` chunks.

    See Also
    --------
    DeepLocHDF5Dataset : the same file read lazily, cell by cell.
    save_deeploc_hdf5 : write the layout.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn_deeploc.datasets import load_deeploc_hdf5, save_deeploc_hdf5
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5")
    >>> save_deeploc_hdf5(path, np.zeros((3, 2, 64, 64)), ["ER", "bud", "ER"], chunk_size=2)
    >>> X, y = load_deeploc_hdf5(path)
    >>> X.shape, y.tolist()
    ((3, 2, 64, 64), ['ER', 'bud', 'ER'])
    """
    with _open(path) as handle:
        layout = _read_layout(handle, path, image_size)
        X = np.empty((int(layout.starts[-1]), layout.n_channels * image_size**2), np.float32)
        rows_per_read = max(1, _READ_BYTES // (X.shape[1] * 8))
        for k, start, stop in zip(layout.chunks, layout.starts, layout.starts[1:]):
            for first in range(start, stop, rows_per_read):
                last = min(first + rows_per_read, stop)
                rows = np.arange(first - start, last - start)
                X[first:last] = _read_crops(handle[f"data{k}"], rows, path, f"data{k}")
    y = layout.classes[layout.labels] if layout.labels is not None else None
    return X.reshape(len(X), layout.n_channels, image_size, image_size), y


_ACCEPTED_INDEX = (
    "DeepLocHDF5Dataset takes an int, a slice, a 1-D sequence of ints or a boolean mask "
    "of {n} entries; got {got}."
)


class DeepLocHDF5Dataset(Dataset):
    """A DeepLoc HDF5 file as a lazy torch ``Dataset``: only requested cells are read.

    The layout and labels are checked when the dataset is made; each process opens the file
    on first access (handles do not pickle) and refuses it if its chunks or labels changed.

    Indexing follows numpy's rules for one axis: an integer gives ``(crop (C, H, W), int
    label)``; a slice, a 1-D sequence of integers or a boolean mask gives ``(crops (n, C, H,
    W), labels (n,))`` tensors in the order asked. Labels of an unlabelled file are -1.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    image_size : int, default=64
        Side of the square crops.

    Attributes
    ----------
    classes : ndarray or None
        Label names (or column indices) in ``Index`` column order; None when the file has no labels.
    n_channels : int
        Channels per crop.

    See Also
    --------
    load_deeploc_hdf5 : the whole file in memory.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn_deeploc.datasets import DeepLocHDF5Dataset, save_deeploc_hdf5
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5")
    >>> save_deeploc_hdf5(path, np.zeros((5, 2, 64, 64)), [0, 1, 2, 1, 0], chunk_size=2)
    >>> ds = DeepLocHDF5Dataset(path)
    >>> x, label = ds[-2]
    >>> tuple(x.shape), label
    ((2, 64, 64), 1)
    >>> crops, labels = ds[::-2]
    >>> tuple(crops.shape), labels.tolist()
    ((3, 2, 64, 64), [0, 2, 0])
    """

    def __init__(self, path, *, image_size=IMAGE_SIZE):
        self.path = path
        self.image_size = image_size
        with _open(path) as handle:
            self._identity = _identity(handle)
            self._layout = _read_layout(handle, path, image_size)
        self.classes, self.n_channels = self._layout.classes, self._layout.n_channels
        self._handle = None

    def __len__(self):
        return int(self._layout.starts[-1])

    def __getstate__(self):
        return {**self.__dict__, "_handle": None}

    def _file(self):
        """The open file, once it is known to be the one whose layout was checked."""
        if self._handle is None:
            handle = _open(self.path)
            now = _identity(handle)
            # A touched or copied file (a new attribute, a worker's own copy) is checked
            # again; only a change of its cells' layout or labels refuses.
            if now != self._identity and not self._same_layout(handle):
                handle.close()
                raise ValueError(
                    f"{self.path} changed since this DeepLocHDF5Dataset checked it (size, "
                    f"mtime_ns, inode were {self._identity}, now {now}): its chunks or labels "
                    "differ from the ones checked. Make a new DeepLocHDF5Dataset."
                )
            self._identity, self._handle = now, handle
        return self._handle

    def _same_layout(self, handle):
        """Whether the file still passes the layout check with the same chunks and labels."""
        try:
            layout = _read_layout(handle, self.path, self.image_size)
        except ValueError:  # no longer a valid DeepLoc file
            return False
        return all(map(np.array_equal, layout, self._layout))

    def _positions(self, index):
        """Cell positions (non-negative int64, 1-D) for an index, and whether it was a scalar."""
        n = len(self)
        if isinstance(index, slice):
            return np.arange(*index.indices(n)), False
        try:
            array = np.asarray(index)
        except ValueError as error:  # ragged nested sequences
            got = f"{type(index).__name__} ({error})"
            raise TypeError(_ACCEPTED_INDEX.format(n=n, got=got)) from error
        if array.dtype == bool:
            if array.shape != (n,):
                raise IndexError(
                    f"A boolean mask must have one entry per cell ({n}); got shape {array.shape}."
                )
            return np.flatnonzero(array), False
        if array.ndim == 1 and array.size == 0:  # [] comes as float64
            return np.empty(0, np.int64), False
        if array.dtype.kind not in "iu" or array.ndim > 1:
            raise TypeError(
                _ACCEPTED_INDEX.format(n=n, got=f"{type(index).__name__} {index!r:.60}")
            )
        if array.size and (array.min() < -n or array.max() >= n):
            bad = array[(array < -n) | (array >= n)][0]
            raise IndexError(f"Cell index {bad} is out of range for {n} cells ({-n} to {n - 1}).")
        return np.atleast_1d(array).astype(np.int64) % n, array.ndim == 0

    def read(self, indices):
        """Crops and labels of the given cells, in the given order.

        Parameters
        ----------
        indices : int, slice, sequence of int or boolean mask
            As for indexing the dataset (an int gives a batch of one).

        Returns
        -------
        X : ndarray of shape (n, C, H, W), float32
        y : ndarray of shape (n,), int64
            ``Index`` columns (positions in :attr:`classes`), -1 when unlabelled.
        """
        positions, _ = self._positions(indices)
        chunks, starts, labels = self._layout.chunks, self._layout.starts, self._layout.labels
        chunk_of = np.searchsorted(starts, positions, side="right") - 1
        X = np.empty((positions.size, self.n_channels * self.image_size**2), np.float32)
        for chunk in np.unique(chunk_of):
            in_chunk = chunk_of == chunk
            rows, inverse = np.unique(positions[in_chunk] - starts[chunk], return_inverse=True)
            key = f"data{chunks[chunk]}"
            X[in_chunk] = _read_crops(self._file()[key], rows, self.path, key)[inverse]
        y = labels[positions] if labels is not None else np.full(positions.size, -1)
        return X.reshape(-1, self.n_channels, self.image_size, self.image_size), y

    def __getitem__(self, index):
        if isinstance(index, tuple):  # numpy's rule for one axis: (i,) is i, more is an error
            if len(index) != 1:
                raise IndexError(
                    f"DeepLocHDF5Dataset has one axis (cells); got a tuple of {len(index)} "
                    "indices. Pick several cells with a list, e.g. dataset[[0, 5]]."
                )
            (index,) = index
        positions, scalar = self._positions(index)
        X, y = self.read(positions)
        if scalar:
            return torch.from_numpy(X[0]), int(y[0])
        return torch.from_numpy(X), torch.from_numpy(y)


def _flat_rows(X):
    """Validated crops as rows of the layout: float64 input stays float64, else float32."""
    crops = check_crops(X)
    n, _, height, width = crops.shape
    if height != width:
        raise ValueError(
            f"The DeepLoc layout holds square crops; got {height}x{width} pixels per channel."
        )
    source = X.to_numpy() if hasattr(X, "iloc") else X
    if isinstance(source, np.ndarray) and source.dtype.kind == "f" and source.dtype.itemsize > 4:
        return np.asarray(source, dtype=np.float64).reshape(n, -1)
    return crops.reshape(n, -1)


def _check_storable(texts, what):
    """Refuse text that the ``label_names`` dataset (UTF-8 byte strings) would not give back."""
    for text in set(texts):
        if "\x00" in text:
            raise ValueError(
                f"{what} {text!r} holds a NUL character, which HDF5 strings treat as "
                "padding; expected text without NUL."
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"{what} {text!r} cannot be written as UTF-8 ({error.reason}); expected "
                "valid Unicode text."
            ) from None


def _checked_names(label_names):
    """``label_names`` as an object array of distinct, storable strings."""
    names = np.asarray(label_names, dtype=object).ravel()
    if names.size == 0 or not all(isinstance(name, str) for name in names):
        raise ValueError(f"label_names must be a non-empty list of strings; got {label_names!r}.")
    _check_storable(names, "Label name")
    if len(set(names)) != len(names):
        raise ValueError(f"label_names repeats a name: {names.tolist()}.")
    return names


def _label_values(y, n_cells):
    """``y`` as int64 or str labels, refusing other and mixed kinds."""
    # Lists go through object dtype: numpy would turn ["a", 1] into strings.
    values = np.asarray(y) if hasattr(y, "dtype") else np.asarray(y, dtype=object)
    if values.shape != (n_cells,):
        raise ValueError(f"y must hold one label per cell ({n_cells}); got shape {values.shape}.")
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "S":
        values = values.astype(str)
    if values.dtype.kind == "U" or all(isinstance(label, str) for label in values):
        _check_storable(values.tolist(), "Label")  # before numpy drops trailing NULs
        return values.astype(str)
    if all(isinstance(label, numbers.Integral) and not isinstance(label, bool) for label in values):
        return values.astype(np.int64)
    kinds = sorted({type(label).__name__ for label in values})
    raise TypeError(f"y must hold all integer column numbers or all string labels; got {kinds}.")


def one_hot_labels(y, label_names, n_cells):
    """``Index`` rows (uint8 one-hot) and the column names for ``y``; None for no labels."""
    if y is None:
        if label_names is not None:
            raise ValueError("label_names names the columns of y; it needs y.")
        return None, None
    names = None if label_names is None else _checked_names(label_names)
    y = _label_values(y, n_cells)
    if y.dtype.kind == "i":
        codes = y
        n_columns = int(y.max()) + 1 if names is None else len(names)
        if y.min() < 0 or y.max() >= n_columns:
            raise ValueError(
                f"Integer labels must be Index columns 0 to {n_columns - 1} (one per label "
                f"name); got values from {y.min()} to {y.max()}."
            )
        if n_columns > _MAX_CLASSES:  # before allocating: identifiers are not column numbers
            raise ValueError(
                f"Integer labels are Index columns: values up to {y.max()} would make "
                f"{n_columns} columns (at most {_MAX_CLASSES} are read back). Pass class "
                "identifiers as names (strings such as 'class_1000001')."
            )
    else:
        names = np.unique(y) if names is None else names
        codes, n_columns = pd.Index(names).get_indexer(y), len(names)
        if (codes < 0).any():
            raise ValueError(
                "y holds labels that are not in label_names: "
                f"{sorted(set(y[codes < 0].tolist()))[:5]} (label_names: {list(names)})."
            )
    one_hot = np.zeros((n_cells, n_columns), np.uint8)
    one_hot[np.arange(n_cells), codes] = 1
    return one_hot, names


def save_deeploc_hdf5(path, X, y=None, *, label_names=None, chunk_size=None):
    """Write crops (and labels) in the DeepLoc HDF5 layout, which the loaders read back exactly.

    Crops are stored float32 (float64 when ``X`` is), labels one-hot (uint8), their names as
    UTF-8 ``label_names``; the file appears at ``path`` only once complete.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file to write.
    X : array-like of shape (n, C, H, H) or (n, C * 64 * 64)
        Crops, checked by :func:`~sklearn_deeploc.validation.check_crops`.
        Crops of another side than 64 are read back with ``image_size=H``.
    y : array-like of shape (n,), optional
        Labels: strings, or integer ``Index`` columns; without ``y`` the file is unlabelled.
    label_names : sequence of str, optional
        Names of the ``Index`` columns, in order; by default the sorted distinct string
        labels (none for integer labels). Integer labels must be columns
        ``0 .. len(label_names) - 1``; string labels must be among them.
    chunk_size : int, optional
        Crops per chunk; None writes one chunk.

    See Also
    --------
    load_deeploc_hdf5, DeepLocHDF5Dataset : read the file.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn_deeploc.datasets import load_deeploc_hdf5, save_deeploc_hdf5
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.h5")
    >>> X = np.random.default_rng(0).random((5, 2, 64, 64), dtype=np.float32)
    >>> save_deeploc_hdf5(path, X, [2, 0, 1, 0, 0], label_names=["ER", "bud", "vacuole"])
    >>> X_back, y_back = load_deeploc_hdf5(path)
    >>> np.array_equal(X_back, X), y_back.tolist()
    (True, ['vacuole', 'ER', 'bud', 'ER', 'ER'])
    """
    rows = _flat_rows(X)
    one_hot, names = one_hot_labels(y, label_names, len(rows))
    size = len(rows) if chunk_size is None else check_positive_int(chunk_size, "chunk_size")

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"Cannot write {path}: it is a directory, expected a file path.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {path}: the folder {path.parent} does not exist.")

    def write(temporary):
        with h5py.File(temporary, "w") as handle:
            for k, start in enumerate(range(0, len(rows), size), start=1):
                handle.create_dataset(f"data{k}", data=rows[start : start + size])
                if one_hot is not None:
                    handle.create_dataset(f"Index{k}", data=one_hot[start : start + size])
            if names is not None:
                handle.create_dataset("label_names", data=np.char.encode(names.astype(str)))

    write_atomically(path, write, suffix=".part")
