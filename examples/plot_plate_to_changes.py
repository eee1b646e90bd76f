"""
From OME-Zarr plates to profiles and localization changes
=========================================================

Screens today arrive as OME-Zarr HCS plates (plate -> wells -> fields, with
label images from a segmentation), and their results go on to pycytominer or
AnnData. This example runs that journey on two small synthetic plates, an
untreated and a treated one, where the proteins of two wells move from the
nucleus to the vacuole:

1. the plates are written in the NGFF 0.5 layout (Zarr v3), each field with a
   label image ``labels/cells``, one object per cell;
2. :func:`~sklearn_deeploc.jobs.run_screen` reads one field at a time, crops
   each labelled cell, predicts it and writes ``cells.parquet``,
   ``wells.parquet`` and ``cells.h5ad``
   (``deeploc screen MODEL --plate P.zarr --labels cells -o OUT``);
3. :func:`~sklearn_deeploc.jobs.write_changes` compares the two screens
   per well with the paper's localization-change statistics
   (``deeploc changes A B -o changes.parquet``).
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import zarr

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.jobs import run_screen, write_changes

# %%
# Two plates
# ----------
# Eight wells in row A, one field each: a 3 x 4 grid of 64 x 64 cells of one
# localization, and a label image with one disc per cell. In the treated
# plate, the proteins of wells A03 and A06 are in the vacuole.
untreated = {f"A{k:02d}": "NUCLEI" if k % 2 else "VACUOLE" for k in range(1, 9)}
treated = {**untreated, "A03": "VACUOLE", "A06": "VACUOLE"}
untreated["A06"] = "NUCLEI"
ROWS, COLUMNS = 3, 4


def make_field(localization, seed):
    """A (2, 192, 256) field of one class's cells, and its label image."""
    crops, _ = make_yeast_cells(ROWS * COLUMNS, [localization], random_state=seed)
    grid = crops.reshape(ROWS, COLUMNS, 2, 64, 64).transpose(2, 0, 3, 1, 4)
    image = grid.reshape(2, 64 * ROWS, 64 * COLUMNS).astype(np.uint16)
    rows, columns = np.indices(image.shape[1:])
    distance = np.hypot(rows % 64 - 31.5, columns % 64 - 31.5)
    labels = np.where(distance < 24, 1 + (rows // 64) * COLUMNS + columns // 64, 0)
    return image, labels.astype(np.uint16)


def ome(group, **metadata):
    group.attrs["ome"] = {"version": "0.5", **metadata}


def image_metadata(axes):
    kinds = {"c": "channel", "y": "space", "x": "space"}
    scale = {"type": "scale", "scale": [1.0] * len(axes)}
    return [
        {
            "axes": [{"name": axis, "type": kinds[axis]} for axis in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [scale]}],
        }
    ]


def write_plate(path, localizations, seed):
    """An NGFF 0.5 plate: row A, one field per well, channels GFP and RFP, labels/cells."""
    root = zarr.open_group(path, mode="w", zarr_format=3)
    columns = [str(int(well[1:])) for well in localizations]
    wells = [
        {"path": f"A/{column}", "rowIndex": 0, "columnIndex": k} for k, column in enumerate(columns)
    ]
    plate = {"name": Path(path).stem, "rows": [{"name": "A"}], "wells": wells}
    ome(root, plate={**plate, "columns": [{"name": column} for column in columns]})
    for k, (column, localization) in enumerate(zip(columns, localizations.values())):
        image, labels = make_field(localization, seed + k)
        ome(root.create_group(f"A/{column}"), well={"images": [{"path": "0"}]})
        field = root.create_group(f"A/{column}/0")
        channels = {"channels": [{"label": "GFP"}, {"label": "RFP"}]}
        ome(field, multiscales=image_metadata("cyx"), omero=channels)
        field.create_array("0", data=image, chunks=image.shape)
        ome(field.create_group("labels"), labels=["cells"])
        cells = field.create_group("labels/cells")
        ome(cells, multiscales=image_metadata("yx"), **{"image-label": {}})
        cells.create_array("0", data=labels, chunks=labels.shape)
    return path


folder = Path(tempfile.mkdtemp())
plates = {
    "untreated": write_plate(folder / "untreated.zarr", untreated, seed=0),
    "treated": write_plate(folder / "treated.zarr", treated, seed=100),
}

# %%
# A tiny DeepLoc
# --------------
# Trained here in seconds on other synthetic cells; on real plates use the
# published model (``"deeploc-chong"``) or a fine-tuned one.
X_train, y_train = make_yeast_cells(20, ["NUCLEI", "VACUOLE"], random_state=10)
clf = DeepLocClassifier(
    conv_channels=(8, 8, 16, 16, 32, 32, 32, 32),
    fc_units=(64, 64),
    batch_size=32,
    max_iter=100,
    random_state=0,
).fit(X_train, y_train)

# %%
# Plate -> profiles
# -----------------
# One row per labelled cell, with the metadata pycytominer expects; the
# channels are taken in the model's order (here all of them: the plate's
# names GFP and RFP are not the model's).
for name, plate in plates.items():
    cells, wells = run_screen(clf, folder / name, plate=plate, labels="cells", verbose=0)
    print(f"{name}: {len(cells)} cells in {len(wells)} wells")
print(cells.iloc[:3, :8].to_string())
print(sorted(p.name for p in (folder / "treated").iterdir()))

# %%
# Profiles -> changes
# -------------------
# Per well, the cells' class probabilities in the two screens are compared
# (Welch's t per class) and a mixture model calls the wells that moved.
changes = write_changes(folder / "untreated", folder / "treated", folder / "changes.parquet")
moved = sorted(set(changes.loc[changes["significant"].fillna(False), "Metadata_Well"]))
print(f"wells whose localization changed: {moved}")

figure, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
for offset, name in ((-0.2, "untreated"), (0.2, "treated")):
    wells = pd.read_parquet(folder / name / "wells.parquet")
    positions = np.arange(len(wells)) + offset
    ax.bar(positions, wells["Cells_DeepLoc_Prob_VACUOLE"], width=0.4, label=name)
ax.set_xticks(range(len(wells)), wells["Metadata_Well"])
ax.set_ylabel("mean P(VACUOLE)")
ax.set_title(f"Per-well vacuole probability; changed: {', '.join(moved) or 'none'}")
ax.legend()
