"""Inputs larger than memory: lazy HDF5/zarr datasets streamed in blocks, Dask arrays block-wise.

Estimators call :func:`apply_blockwise` with the in-memory method to run:

- a ``numpy`` array (or anything array-like) is processed as it is;
- a :class:`~sklearn_deeploc.datasets.DeepLocHDF5Dataset`, an ``h5py`` or a
  ``zarr`` array is read ``block_size`` cells at a time, so peak memory
  follows the block size, not the number of cells;
- a ``dask.array`` gives back a lazy ``dask.array``, computed block by block on
  the workers, with the estimator shipped once per worker (one graph key).
"""

import numpy as np

from .datasets import DeepLocHDF5Dataset


def is_dask_array(X):
    """True for a ``dask.array.Array`` (without importing dask otherwise)."""
    return type(X).__module__.startswith("dask.array")


def is_lazy_array(X):
    """True for inputs read on demand: the package's HDF5 dataset, h5py and zarr arrays."""
    if isinstance(X, DeepLocHDF5Dataset):
        return True
    return type(X).__module__.split(".")[0] in ("h5py", "zarr") and hasattr(X, "shape")


def read_block(X, start, stop):
    """Cells ``start:stop`` of a lazy input as a numpy array."""
    if isinstance(X, DeepLocHDF5Dataset):
        return X.read(np.arange(start, stop))[0]
    return np.asarray(X[start:stop])


def take_labels(indices, classes):
    """``classes[indices]``, with the block first (for ``map_blocks``)."""
    return classes[indices]


def _apply(block, estimator, method):
    return getattr(estimator, method)(block)


def apply_blockwise(estimator, method, X, n_outputs, *, block_size=4096):
    """Run ``estimator.<method>`` (in-memory, numpy in -> 2-D numpy out) on any input kind.

    Parameters
    ----------
    estimator : fitted estimator
    method : str
        Name of the in-memory method, for example ``"_transform_in_memory"``.
    X : array-like, lazy array or dask array
    n_outputs : int
        Columns of the result.
    block_size : int, default=4096
        Cells read at a time from a lazy input.

    Returns
    -------
    ndarray of shape (n, n_outputs), or a dask array of it

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from sklearn_deeploc.streaming import apply_blockwise
    >>> doubler = FunctionTransformer(lambda X: 2 * X)
    >>> apply_blockwise(doubler, "transform", np.ones((3, 2)), 2).tolist()
    [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]
    """
    if is_dask_array(X):
        import dask

        # One key for the estimator: the scheduler sends it to each worker once.
        model = dask.delayed(estimator, pure=False)
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
        return X.map_blocks(
            _apply,
            model,
            method,
            dtype=np.float32,
            chunks=(X.chunks[0], (n_outputs,)),
            drop_axis=list(range(2, X.ndim)) or None,
        )
    if is_lazy_array(X):
        n = X.shape[0] if hasattr(X, "shape") else len(X)  # zarr 3 arrays have no len()
        out = np.empty((n, n_outputs), np.float32)
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            out[start:stop] = _apply(read_block(X, start, stop), estimator, method)
        return out
    return _apply(X, estimator, method)
