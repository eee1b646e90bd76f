"""
Synthetic yeast cells next to real ones
=======================================

:func:`~sklearn_deeploc.datasets.make_yeast_cells` draws a synthetic screen:
one budding cell per crop, a cytosolic marker, and a protein channel whose
pattern names the localization class. This example shows one cell of every
class in the "source" and "target" imaging styles, next to real crops of the
Schuldiner test set (RFP protein, brightfield) when the project's real samples
lie in ``../shared/data`` beside the repository.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells
from sklearn_deeploc.plotting import plot_montage

try:
    examples = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs each example in its folder, without __file__
    examples = Path.cwd()
real_crops = examples.parent.parent / "shared/data/Schuldiner_test_set.hdf5"

# %%
# One cell of every class, in both imaging styles, next to real crops
# -------------------------------------------------------------------
# Each panel shows two rows per line of cells: the protein channel, then the marker.
panels = []
for style in ("source", "target"):
    X, y = make_yeast_cells(1, style=style, shuffle=False, random_state=0)
    panels.append((X, y, f"make_yeast_cells, style={style!r}"))
if real_crops.exists():
    X_real, y_real = load_deeploc_hdf5(real_crops)
    _, first = np.unique(y_real, return_index=True)
    panels.append((X_real[first], y_real[first], "real: Schuldiner test set"))
else:
    print(f"{real_crops} not found: the montage shows synthetic cells only")

rows = [2 * -(-len(X) // 9) + 0.4 for X, _, _ in panels]  # two channels a row, plus title
figure = plt.figure(figsize=(9 * 1.2, 1.2 * sum(rows)), layout="constrained")
for subfigure, (X, y, title) in zip(figure.subfigures(len(panels), 1, height_ratios=rows), panels):
    plot_montage(X, y, n_columns=9, title=title, fig=subfigure)
