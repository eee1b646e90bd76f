"""Memory and Dask throughput of featurising whole HDF5 screens.

1. Peak resident memory of in-process featurisation (``DeepLocFeaturizer.transform``
   on a lazy ``DeepLocHDF5Dataset``) of a 2,000-cell and a 20,000-cell file, each
   in a fresh process: memory should follow the block size, not the cell count.
2. Throughput of ``deeploc featurize`` block by block in-process (2 torch
   threads) against a ``LocalCluster`` of 2 workers x 1 thread.

A reduced-width network keeps the run to a few minutes (memory behaviour does
not depend on the widths). Run: ``python benchmarks/bench_scale.py``.
"""

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.blocks import run_blocks
from sklearn_deeploc.datasets import make_yeast_cells, save_deeploc_hdf5
from sklearn_deeploc.jobs import block_table

WIDTHS = {"conv_channels": (16, 16, 32, 32, 64, 64, 64, 64), "fc_units": (128, 128)}
CHUNK = 2000


def write_screen(path, n_cells, X, y):
    """A DeepLoc HDF5 file of ``n_cells`` cells, in chunks of 2,000 (jittered copies)."""
    rng = np.random.default_rng(0)
    pick = rng.integers(0, len(X), n_cells)
    crops = rng.standard_normal((n_cells, *X.shape[1:]), dtype=np.float32)
    crops *= 2
    crops += X[pick]
    save_deeploc_hdf5(path, crops, y[pick], chunk_size=CHUNK)


PEAK_SCRIPT = """
import resource, time
from sklearn_deeploc import DeepLocFeaturizer
from sklearn_deeploc.datasets import DeepLocHDF5Dataset
data = DeepLocHDF5Dataset({data!r})
featurizer = DeepLocFeaturizer({model!r}).fit(data.read([0])[0])
start = time.perf_counter()
features = featurizer.transform(data)
seconds = time.perf_counter() - start
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{{len(features)}} {{peak_mib:.0f}} {{seconds:.1f}}")
"""


def peak_memory(model, data):
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(PEAK_SCRIPT.format(model=str(model), data=str(data))),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def main():
    from distributed import Client, LocalCluster

    from sklearn_deeploc import DeepLocFeaturizer

    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    X, y = make_yeast_cells(30, random_state=0)
    model = DeepLocClassifier(**WIDTHS, max_iter=50, batch_size=64, random_state=0).fit(X, y)
    model_folder = model.save_pretrained(folder / "model")
    print(f"widths {WIDTHS}, five-crop fc2 features (128-d); files in {folder}")
    sizes = (2_000, 20_000)
    for n in sizes:
        write_screen(folder / f"screen{n}.h5", n, X, y)
    print("\nin-process featurisation of a lazy DeepLocHDF5Dataset, fresh process each:")
    peaks = {}
    for n in sizes:
        cells, peaks[n], seconds = peak_memory(model_folder, folder / f"screen{n}.h5")
        print(f"  {cells:6d} cells: peak RSS {peaks[n]:6.0f} MiB, {cells / seconds:6.0f} cells/s")
    print(f"  20,000 / 2,000 peak: {peaks[20_000] / peaks[2_000]:.3f} (goal <= 1.10)")

    data = folder / "screen20000.h5"
    featurizer = DeepLocFeaturizer(model_folder).fit(X[:1])
    start = time.perf_counter()
    run_blocks(folder / "local.parquet", 20_000, 1000, block_table, featurizer, data, verbose=0)
    local = 20_000 / (time.perf_counter() - start)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        start = time.perf_counter()
        remote_model = client.scatter(featurizer, broadcast=True)
        run_blocks(
            folder / "dask.parquet",
            20_000,
            1000,
            block_table,
            remote_model,
            data,
            client=client,
            verbose=0,
        )
        remote = 20_000 / (time.perf_counter() - start)
    print("\ndeeploc featurize, 20,000 cells in blocks of 1,000:")
    print(f"  in-process (2 torch threads)      {local:6.0f} cells/s")
    print(f"  LocalCluster (2 workers x 1 thread) {remote:6.0f} cells/s ({remote / local:.2f}x)")


if __name__ == "__main__":
    main()
