"""A plate screen end to end (plate -> profiles) against prediction alone, and its memory.

Two measurements, each on a plate written here with ome-zarr's writer (NGFF
0.5, 2 channels of 2048 x 2048 uint16 per field, a label image of round cells,
one zstd chunk per field and level)::

    # end-to-end cells/s over prediction alone, same cells, same precision, one process
    python benchmarks/bench_screen.py throughput --fields 8 --cells 50 [--precision bf16] [--no-tta]
    # peak memory while screening fields totalling over 4x the budget (MiB)
    python benchmarks/bench_screen.py memory --budget 1024

``throughput`` uses the paper's network (random weights: the arithmetic is
the same), with the model's test-time augmentation unless ``--no-tta``; it times
``run_screen(plate=..., labels="cells")`` (reading fields and label images,
centroids, crops, prediction, parts, profiles, wells and the .h5ad) and
``DeepLocModel.predict_proba`` on the same cells' crops held in memory,
interleaved, best of ``--rounds``. ``memory`` screens a plate whose fields
total more than 4x ``--budget`` with a tiny network (so that the run is
short and the pipeline, not the network, dominates), sampling the resident
memory every 20 ms and reporting its peak after each quarter of the fields.
Results are in RESULTS.md.
"""

import argparse
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZE = 2048
FIELD_MIB = 2 * SIZE * SIZE * 2 / 2**20  # two uint16 channels


def _rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _field(rng, n_cells):
    """Two channels (protein, cytosolic marker) of round cells, and their labels."""
    labels = np.zeros((SIZE, SIZE), np.uint32)
    centres = rng.integers(40, SIZE - 40, (n_cells, 2))
    rows, cols = np.ogrid[-12:13, -12:13]
    disc = rows**2 + cols**2 <= 144
    for value, (row, col) in enumerate(centres, start=1):
        window = labels[row - 12 : row + 13, col - 12 : col + 13]
        window[disc & (window == 0)] = value
    inside = labels > 0
    protein = rng.normal(200, 10, (SIZE, SIZE)) + inside * rng.normal(800, 100, (SIZE, SIZE))
    marker = rng.normal(150, 10, (SIZE, SIZE)) + inside * 600
    return np.stack([protein, marker]).clip(0, 4095).astype(np.uint16), labels


def write_plate(path, n_fields, n_cells, seed=0):
    """An NGFF 0.5 plate of ``n_fields`` fields over wells of 4, with ``labels/cells``."""
    import zarr
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image, write_labels, write_plate_metadata, write_well_metadata

    fmt, rng = FormatV05(), np.random.default_rng(seed)
    n_wells = -(-n_fields // 4)
    wells = [f"A/{k + 1}" for k in range(n_wells)]
    root = zarr.open_group(path, mode="w", zarr_format=3)
    write_plate_metadata(root, ["A"], [str(k + 1) for k in range(n_wells)], wells, fmt=fmt)
    pixels, labels = _field(rng, n_cells)
    window = {"min": 0, "max": 65535, "start": 0, "end": 4095}
    omero = {
        "channels": [{"label": c, "color": "FFFFFF", "window": window} for c in ("GFP", "RFP")]
    }
    for k, well_path in enumerate(wells):
        well = root.require_group(well_path)
        sites = range(min(4, n_fields - 4 * k))
        write_well_metadata(well, [str(site) for site in sites], fmt=fmt)
        for site in sites:
            image = well.require_group(str(site))
            shift = 97 * (4 * k + site)  # each field its own cells' positions
            write_image(
                np.roll(pixels, shift, axis=(1, 2)),
                image,
                axes="cyx",
                fmt=fmt,
                scale_factors=(2,),
                omero=omero,
            )
            write_labels(
                np.roll(labels, shift, axis=(0, 1)),
                image,
                name="cells",
                axes="yx",
                fmt=fmt,
                scale_factors=(2,),
            )
    return path


def _crops_of(source, border="pad"):
    from sklearn_deeploc.jobs import _cropped_cells

    return np.concatenate([_cropped_cells(source, key, border=border)[0] for key in source.keys])


def throughput(args, folder):
    from sklearn_deeploc import DeepLocModel, DeepLocNet
    from sklearn_deeploc.jobs import field_source, run_screen

    plate = write_plate(folder / "plate.zarr", args.fields, args.cells)
    model = DeepLocModel(DeepLocNet(n_classes=19), [f"class{k}" for k in range(19)])
    crops = _crops_of(field_source(plate=plate, labels="cells", model=model))
    options = {"precision": args.precision, "batch_size": 128, "tta": not args.no_tta}
    rates = {"prediction alone": [], "plate -> profiles": []}
    for round_ in range(args.rounds):
        start = time.perf_counter()
        model.predict_proba(crops, **options)
        rates["prediction alone"].append(len(crops) / (time.perf_counter() - start))
        out = folder / f"out{round_}"
        start = time.perf_counter()
        cells, _ = run_screen(model, out, plate=plate, labels="cells", verbose=0, **options)
        rates["plate -> profiles"].append(len(cells) / (time.perf_counter() - start))
        assert len(cells) == len(crops)
    best = {name: max(values) for name, values in rates.items()}
    tta = "off" if args.no_tta else "on"
    print(f"{args.fields} fields, {len(crops)} cells, precision {args.precision}, tta {tta}")
    for name, values in rates.items():
        print(
            f"  {name:18s} best {best[name]:7.1f} cells/s  (rounds: "
            + ", ".join(f"{v:.1f}" for v in values)
            + ")"
        )
    print(
        f"  ratio end-to-end / prediction alone: "
        f"{best['plate -> profiles'] / best['prediction alone']:.2f}"
    )


def memory(args, folder):
    from sklearn_deeploc import DeepLocModel, DeepLocNet, blocks
    from sklearn_deeploc.jobs import run_screen

    n_fields = int(4 * args.budget / FIELD_MIB) + 4
    plate = write_plate(folder / "plate.zarr", n_fields, args.cells)
    net = DeepLocNet(n_classes=3, conv_channels=(8,) * 8, fc_units=(16, 16))
    model = DeepLocModel(net, ["a", "b", "c"])
    samples, done, stop = [], [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mib()))
            time.sleep(0.02)

    write = blocks.ResumableOutput.write

    def timed_write(self, key, frame):
        write(self, key, frame)
        done.append(time.perf_counter())

    blocks.ResumableOutput.write = timed_write
    before = _rss_mib()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    cells, _ = run_screen(model, folder / "out", plate=plate, labels="cells", verbose=0)
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    print(
        f"{n_fields} fields x {FIELD_MIB:.0f} MiB = {n_fields * FIELD_MIB / 1024:.2f} GiB of "
        f"pixels ({n_fields * FIELD_MIB / args.budget:.1f}x a {args.budget} MiB budget), "
        f"{len(cells)} cells in {elapsed:.0f} s; resident before the screen {before:.0f} MiB"
    )
    for quarter in (1, 2, 3, 4):
        until = done[quarter * len(done) // 4 - 1]
        peak = max(rss for when, rss in samples if when <= until)
        print(f"  after {quarter * len(done) // 4:4d} fields: peak resident {peak:6.0f} MiB")
    peak = max(rss for _, rss in samples)
    print(
        f"  whole run (profiles, wells, .h5ad): peak resident {peak:.0f} MiB "
        f"({'within' if peak <= args.budget else 'OVER'} the budget)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["throughput", "memory"])
    parser.add_argument("--fields", type=int, default=8)
    parser.add_argument("--cells", type=int, default=50, help="cells per field")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-tta", action="store_true", help="centre crop only (5x faster)")
    parser.add_argument("--budget", type=int, default=1024, help="memory budget (MiB)")
    parser.add_argument("--folder", help="work folder (default: a temporary one, removed)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_screen_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        {"throughput": throughput, "memory": memory}[args.what](args, folder)
    finally:
        if args.folder is None:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
