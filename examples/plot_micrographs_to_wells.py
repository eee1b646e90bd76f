"""
From micrographs to per-well calls
==================================

A screen is a plate of wells, each imaged in fields of view that hold many
cells; DeepLoc classifies single cells, and a well's call is the mean of its
cells' class probabilities. This example walks that path on synthetic
micrographs:

1. fields of yeast-like cells are assembled from
   :func:`~sklearn_deeploc.datasets.make_yeast_cells` crops, one tagged
   protein (localization class) per well;
2. cells are found in the marker channel by a seeded watershed
   (:func:`~sklearn_deeploc.screen.find_cells`) and cropped
   (:func:`~sklearn_deeploc.screen.crop_cells`);
3. a tiny DeepLoc, trained here in seconds, predicts every cell;
4. :func:`~sklearn_deeploc.screen.aggregate` averages the probabilities per well.

On a real screen, ``deeploc screen`` (or :func:`sklearn_deeploc.jobs.run_screen`)
runs steps 2 to 4 over a folder of fields, resumably.
"""

import matplotlib.pyplot as plt
import numpy as np

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.screen import aggregate, crop_cells, find_cells

# %%
# Synthetic fields of view
# ------------------------
# Each field is a 3 x 4 grid of 64 x 64 crops of one class, so every well
# shows one localization. The crops keep their camera offset and noise, and
# their neighbours cut by the crop's edge, as in a real field.
wells = {"A01": "NUCLEI", "A02": "VACUOLE", "B01": "CELLPERIPHERY", "B02": "ER"}
classes = sorted(wells.values())


def make_field(localization, seed, rows=3, columns=4):
    """A (2, 64 * rows, 64 * columns) field tiled with crops of one class."""
    crops, _ = make_yeast_cells(rows * columns, [localization], random_state=seed)
    grid = crops.reshape(rows, columns, 2, 64, 64)
    return grid.transpose(2, 0, 3, 1, 4).reshape(2, 64 * rows, 64 * columns)


fields = {
    well: make_field(localization, seed) for seed, (well, localization) in enumerate(wells.items())
}

# %%
# Find and crop the cells
# -----------------------
# Channel 1 is the cytosolic marker; channel 0 the tagged protein. Cells whose
# 64 x 64 box crosses the field's edge are dropped.
crops, cell_wells, centres = [], [], {}
for well, field in fields.items():
    centres[well] = find_cells(field, channel=1)
    found = crop_cells(field, centres[well], size=64, border="drop")
    crops.append(found.crops)
    cell_wells += [well] * len(found.crops)
X_cells = np.concatenate(crops)
print(f"{len(X_cells)} cells cropped from {len(fields)} fields")

figure, axes = plt.subplots(2, 2, figsize=(9, 7), layout="constrained")
for ax, (well, field) in zip(axes.flat, fields.items()):
    protein = field[0] - np.percentile(field[0], 1)
    ax.imshow(protein / np.percentile(protein, 99.9), cmap="gray", vmin=0, vmax=1)
    ax.plot(centres[well][:, 1], centres[well][:, 0], "r+", markersize=8)
    ax.set_title(f"well {well}: protein channel, cells found (+)")
    ax.set_axis_off()

# %%
# A tiny DeepLoc
# --------------
# A network with a few channels per layer, trained for 100 steps on other
# synthetic cells of the same four classes: enough for this example, not a
# model for real cells (use the published one, ``"deeploc-chong"``, or fine-tune it).
X_train, y_train = make_yeast_cells(20, classes, random_state=10)
clf = DeepLocClassifier(
    conv_channels=(8, 8, 16, 16, 32, 32, 32, 32),
    fc_units=(64, 64),
    batch_size=32,
    max_iter=100,
    random_state=0,
).fit(X_train, y_train)

# %%
# Per-well calls
# --------------
# Each well's row is the mean of its cells' probabilities; the call is the
# class with the highest mean.
per_well = aggregate(clf.predict_proba(X_cells), cell_wells, clf.classes_)
per_well["call"] = per_well[list(clf.classes_)].idxmax(axis=1)
per_well["expected"] = [wells[well] for well in per_well.index]
print(per_well.round(2).to_string())

figure, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
image = ax.imshow(per_well[list(clf.classes_)].to_numpy(float), cmap="viridis", vmin=0, vmax=1)
ax.set_xticks(range(len(clf.classes_)), clf.classes_, rotation=30, ha="right")
ax.set_yticks(
    range(len(per_well)),
    [f"{well} ({row.n_cells} cells)" for well, row in per_well.iterrows()],
)
ax.set_title("Mean class probability per well")
figure.colorbar(image, ax=ax, label="probability")
