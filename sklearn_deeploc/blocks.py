"""Resumable block-wise output: long runs write finished blocks and skip them on a rerun.

A run over ``n`` cells is cut into blocks of ``block_size``. Each finished block
is written to ``<output>.parts/`` under a temporary name and renamed into place,
so an interrupted run leaves only whole blocks behind; a rerun computes only
the blocks that are missing and then assembles the output from all of them.
"""

import os
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

FORMATS = {".csv", ".parquet"}


def _suffix(path):
    suffix = Path(path).suffix
    if suffix not in FORMATS:
        raise ValueError(f"Output must end in one of {sorted(FORMATS)}; got {path}.")
    return suffix


def read_table(path):
    """Read a ``.csv`` or ``.parquet`` table."""
    return pd.read_parquet(path) if _suffix(path) == ".parquet" else pd.read_csv(path)


def write_table(frame, path):
    """Write a table atomically (temporary file, then rename)."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if _suffix(path) == ".parquet":
        frame.to_parquet(partial, index=False)
    else:
        frame.to_csv(partial, index=False)
    os.replace(partial, path)
    return path


def block_ranges(n_items, block_size):
    """``[(start, stop), ...]`` covering ``range(n_items)``."""
    return [(start, min(start + block_size, n_items)) for start in range(0, n_items, block_size)]


def parts_folder(output):
    """Where the blocks of ``output`` live: ``<output>.parts/``."""
    output = Path(output)
    return output.with_name(output.name + ".parts")


def block_path(output, start, stop):
    """File of the block of cells ``start:stop`` of ``output``, in ``output``'s format."""
    return parts_folder(output) / f"block-{start:010d}-{stop:010d}{_suffix(output)}"


def missing_blocks(output, ranges):
    """The ranges whose block file does not exist yet."""
    return [r for r in ranges if not block_path(output, *r).exists()]


def run_blocks(output, n_items, block_size, function, *args, client=None, verbose=1):
    """Compute the missing blocks with ``function(*args, start, stop) -> DataFrame``, then assemble.

    Parameters
    ----------
    output : path-like
        Final ``.csv`` or ``.parquet`` table.
    n_items : int
    block_size : int
    function : callable
        Returns the rows of cells ``start:stop`` as a DataFrame; with a
        ``client`` it runs on the Dask workers, so it must be importable there.
    *args
        Leading arguments of ``function`` (Dask futures are resolved on the workers).
    client : distributed.Client, optional
        Compute blocks on a Dask cluster; each finished block is written here
        as soon as it arrives.
    verbose : int, default=1

    Returns
    -------
    n_computed : int
        Blocks computed in this run (the others were already on disk).

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.blocks import run_blocks, read_table
    >>> import tempfile
    >>> out = tempfile.mkdtemp() + "/numbers.csv"
    >>> rows = lambda a, b: pd.DataFrame({"x": range(a, b)})
    >>> run_blocks(out, 5, 2, rows, verbose=0), run_blocks(out, 5, 2, rows, verbose=0)
    (3, 0)
    >>> read_table(out)["x"].tolist()
    [0, 1, 2, 3, 4]
    """
    ranges = block_ranges(n_items, block_size)
    todo = missing_blocks(output, ranges)
    parts_folder(output).mkdir(parents=True, exist_ok=True)
    if verbose:
        print(
            f"{len(ranges) - len(todo)} of {len(ranges)} blocks already done; "
            f"computing {len(todo)}",
            flush=True,
        )
    progress = tqdm(total=len(todo), disable=not verbose, unit="block")
    if client is None:
        for start, stop in todo:
            write_table(function(*args, start, stop), block_path(output, start, stop))
            progress.update()
    else:
        from distributed import as_completed

        futures = {
            client.submit(function, *args, start, stop, pure=False): (start, stop)
            for start, stop in todo
        }
        for future in as_completed(futures):
            write_table(future.result(), block_path(output, *futures[future]))
            progress.update()
    progress.close()
    assemble(output, ranges)
    return len(todo)


def assemble(output, ranges):
    """Concatenate the blocks, in order, into ``output`` (atomically)."""
    frames = [read_table(block_path(output, *r)) for r in ranges]
    return write_table(pd.concat(frames, ignore_index=True), output)
