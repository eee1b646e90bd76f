"""Which OME-Zarr reader should ``sklearn_deeploc.plates`` use? Measure the candidates.

Each candidate lives in its own virtual environment (its install footprint is
measured there), so this script runs in two steps::

    # 1. write the plates (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) with ome-zarr's writer
    /tmp/r_omezarr/bin/python benchmarks/bench_plates.py write /tmp/plates
    # 2. read one field (both channels, level 0) with each reader, one process each
    /tmp/r_zarr/bin/python benchmarks/bench_plates.py read zarr /tmp/plates/p04.zarr
    /tmp/r_omezarr/bin/python benchmarks/bench_plates.py read ome-zarr /tmp/plates/p05.zarr
    .venv/bin/python benchmarks/bench_plates.py read sklearn-deeploc /tmp/plates/p05.zarr
    ...

Readers: ``zarr`` (zarr-python with the metadata parsed by hand, as
``plates.py`` does), ``sklearn-deeploc`` (``plates.open_plate``, which checks
the metadata on the way), ``ome-zarr`` (``Reader`` on the field's URL and on the
plate), ``ngff-zarr`` (``from_hcs_zarr``), ``iohub`` (``open_ome_zarr``).
Printed per run: seconds to open the plate, to read the field (best of 5),
the resident memory before the read, its peak rise during the first
read and the peak of memory traced by ``tracemalloc`` (numpy's buffers) (MiB).

Results (2-core EPYC, shared and loaded; 2 wells x 4 fields x 2 channels x
2048 x 2048 uint16, one zstd chunk per field and level; field = 16 MiB; read
times are the best of 5 and varied 2-3x between runs with the load):

==================  =======  ==========  ===========  ==========  ========  ======
reader              NGFF     read (s)    peak (MiB)   import (s)  packages  MB
==================  =======  ==========  ===========  ==========  ========  ======
zarr 3.1.6          0.4/0.5  0.03-0.09   46           0.3-1.7     8         116
ome-zarr 0.18.0     0.4/0.5  0.04-0.10   46-54        2-5         55        420
ngff-zarr 0.50.0    0.4/0.5  0.05-0.14   37 (16 py)   1-2.6       31        269
iohub 0.2.3         fails    --          --           0.8-5       53        331
==================  =======  ==========  ===========  ==========  ========  ======

packages / MB: what ``pip install`` adds to an empty virtual environment
(site-packages less pip's). iohub pins zarr 2 (no Zarr v3, so no NGFF 0.5) and
failed on ome-zarr's 0.4 plate (``'Plate' object has no attribute
'_channel_names'``). ngff-zarr decodes in Rust (zarrista), outside
tracemalloc. ``plates.open_plate(...).read_field`` reads as fast as bare zarr
(0.03 s, 46 MiB) once it reads all channels as a slice (a list of all channel
indices cost a second copy: 62 MiB, 0.09 s). zarr 2.18 reads the 0.4 plate
the same way; plates.py refuses a Zarr v3 store under zarr 2 by name.
"""

import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

N_WELLS, N_FIELDS, N_CHANNELS, SIZE = 2, 4, 2, 2048
WELL_PATHS = ["A/1", "A/2"]


def _rss_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write(folder):
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    rng = np.random.default_rng(0)
    window = {"min": 0, "max": 65535, "start": 0, "end": 4095}
    omero = {
        "channels": [
            {"label": "GFP", "color": "00FF00", "window": window},
            {"label": "RFP", "color": "FF0000", "window": window},
        ]
    }
    for name, fmt in (("p04.zarr", FormatV04()), ("p05.zarr", FormatV05())):
        root = zarr.open_group(Path(folder) / name, mode="w", zarr_format=fmt.zarr_format)
        write_plate_metadata(root, ["A"], ["1", "2"], WELL_PATHS, fmt=fmt, name=name)
        for well_path in WELL_PATHS:
            well = root.require_group(well_path)
            write_well_metadata(well, [str(f) for f in range(N_FIELDS)], fmt=fmt)
            for field in range(N_FIELDS):
                image = rng.integers(0, 4096, (N_CHANNELS, SIZE, SIZE), dtype=np.uint16)
                write_image(
                    image,
                    well.require_group(str(field)),
                    axes="cyx",
                    fmt=fmt,
                    scale_factors=(2, 4),
                    omero=omero,
                )


def _attrs(group):
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)


def read_zarr(plate):
    import zarr

    root = zarr.open_group(plate, mode="r")
    well_path = _attrs(root)["plate"]["wells"][0]["path"]
    field = _attrs(root[well_path])["well"]["images"][0]["path"]
    image = root[f"{well_path}/{field}"]
    level0 = image[_attrs(image)["multiscales"][0]["datasets"][0]["path"]]
    return lambda: level0[...]


def read_ome_zarr_field(plate):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(f"{plate}/{WELL_PATHS[0]}/0"))())
    return lambda: np.asarray(nodes[0].data[0].compute())


def read_ome_zarr_plate(plate):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    nodes = list(Reader(parse_url(plate))())
    tile = nodes[0].data[0][..., :SIZE, :SIZE]  # the plate stitched lazily; one field's tile
    return lambda: np.asarray(tile.compute())


def read_ngff_zarr(plate):
    from ngff_zarr import from_hcs_zarr

    hcs = from_hcs_zarr(plate)
    well = hcs.get_well("A", "1")
    return lambda: np.asarray(well.get_image(0).images[0].data.compute())


def read_iohub(plate):
    from iohub import open_ome_zarr

    hcs = open_ome_zarr(plate, layout="hcs", mode="r")
    return lambda: hcs[f"{WELL_PATHS[0]}/0"]["0"][...]


def read_sklearn_deeploc(plate):
    from sklearn_deeploc.plates import open_plate

    opened = open_plate(plate)
    return lambda: opened.read_field(f"{WELL_PATHS[0]}/0")


READERS = {
    "sklearn-deeploc": read_sklearn_deeploc,
    "zarr": read_zarr,
    "ome-zarr": read_ome_zarr_field,
    "ome-zarr-plate": read_ome_zarr_plate,
    "ngff-zarr": read_ngff_zarr,
    "iohub": read_iohub,
}


def read(reader, plate):
    start = time.perf_counter()
    try:
        read_field = READERS[reader](plate)
    except Exception as error:  # a reader that cannot open this version is a result
        print(json.dumps({"reader": reader, "plate": plate, "error": repr(error)[:200]}))
        return
    opened = time.perf_counter() - start
    before = _rss_mib()
    tracemalloc.start()
    field = read_field()  # the first read, alone, for its memory
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    peak = _peak_mib()
    times = []
    for _ in range(5):
        del field
        start = time.perf_counter()
        field = read_field()
        times.append(time.perf_counter() - start)
    result = {
        "reader": reader,
        "plate": Path(plate).name,
        "shape": list(field.shape),
        "open_s": round(opened, 3),
        "read_s": round(min(times), 3),
        "rss_before_mib": round(before),
        "read_peak_rss_mib": round(peak - before),
        "read_traced_peak_mib": round(traced_peak),
        "field_mib": round(field.nbytes / 2**20),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        read(sys.argv[2], sys.argv[3])
