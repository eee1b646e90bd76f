"""Inputs larger than memory: lazy HDF5/zarr datasets streamed in blocks, Dask arrays block-wise."""

import numpy as np
import torch
from torch.utils.data import Dataset


def is_dask_array(X):
    """True for a ``dask.array.Array`` (without importing dask otherwise)."""
    return type(X).__module__.startswith("dask.array")


def is_lazy_array(X):
    """True for inputs read on demand: torch datasets, h5py and zarr arrays."""
    array_module = type(X).__module__.split(".")[0] in ("h5py", "zarr")
    return isinstance(X, Dataset) or (array_module and hasattr(X, "shape"))


def read_block(X, start, stop):
    """Cells ``start:stop`` of a lazy input as a numpy array (the crops of a torch dataset)."""
    block = X[start:stop]
    if isinstance(block, tuple):
        block = block[0]
    return block.numpy() if torch.is_tensor(block) else np.asarray(block)


def n_cells(X):
    """Number of cells of any input (zarr 3 arrays have no ``len``)."""
    return X.shape[0] if hasattr(X, "shape") else len(X)


def apply_blockwise(function, X, n_outputs, *, block_size=4096):
    """Run ``function`` (numpy crops in, ``n_outputs`` columns of numpy out) on any input kind.

    ``X`` may be in memory, lazy (read ``block_size`` cells at a time) or a dask array; then a
    dask array ``(n, n_outputs)`` comes back and ``function`` runs on the workers, so it must
    pickle.
    """
    if is_dask_array(X):
        import dask

        if X.ndim not in (2, 4):
            raise ValueError(
                "Expected crops of shape (n, C, H, W) or the flat layout (n, C * H * W); got a "
                f"dask array of shape {X.shape}."
            )
        # One key for the function: the scheduler sends it to each worker once.
        shipped = dask.delayed(function, pure=False)
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
        return X.map_blocks(
            _run_block,
            shipped,
            dtype=np.float32,
            meta=np.empty((0, n_outputs), np.float32),
            chunks=(X.chunks[0], (n_outputs,)),
            drop_axis=list(range(2, X.ndim)) or None,
        )
    if is_lazy_array(X):
        n = n_cells(X)
        out = np.empty((n, n_outputs), np.float32)
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            out[start:stop] = _run_block(read_block(X, start, stop), function, start=start)
        return out
    return function(X)


def _run_block(block, function, block_info=None, start=0):
    """``function(block)``, errors placed in the whole input (the block starts at ``start``)."""
    if block_info is not None:  # called by dask's map_blocks
        start = block_info[0]["array-location"][0][0]
    try:
        return function(block)
    except ValueError as error:
        raise ValueError(
            f"In the block of cells {start} to {start + len(block) - 1} of the input (cell numbers "
            f"below count from the block's first cell, {start}): {error}"
        ) from error
