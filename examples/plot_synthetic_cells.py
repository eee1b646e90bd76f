"""
Synthetic yeast cells next to real ones
=======================================

:func:`~sklearn_deeploc.datasets.make_yeast_cells` draws a synthetic screen:
one budding cell per crop, a cytosolic marker, and a protein channel whose
pattern names the localization class. This example shows one cell of every
class in the "source" and "target" imaging styles, next to real crops of the
Schuldiner test set (RFP protein, brightfield), in one montage PNG.

Run: ``python examples/plot_synthetic_cells.py [path/to/deeploc.hdf5] [-o OUTDIR]``.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells  # noqa: E402
from sklearn_deeploc.plotting import plot_montage  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
parser.add_argument(
    "hdf5",
    nargs="?",
    default=Path(__file__).resolve().parents[2] / "shared/data/Schuldiner_test_set.hdf5",
)
parser.add_argument("-o", "--output", default="montages")
args = parser.parse_args()
output = Path(args.output)
output.mkdir(parents=True, exist_ok=True)

# %%
# One cell of every class, in both imaging styles, next to real crops
# -------------------------------------------------------------------
# The real crops are the Schuldiner test set's (RFP protein, brightfield), one per class.
import matplotlib.pyplot as plt  # noqa: E402

panels = []
for style in ("source", "target"):
    X, y = make_yeast_cells(1, style=style, shuffle=False, random_state=0)
    panels.append((X, y, f"make_yeast_cells, style={style!r}"))
if Path(args.hdf5).exists():
    X_real, y_real = load_deeploc_hdf5(args.hdf5)
    _, first = np.unique(y_real, return_index=True)
    panels.append((X_real[first], y_real[first], "real: Schuldiner test set"))
else:
    print(f"{args.hdf5} not found: the montage shows synthetic cells only")

rows = [2 * -(-len(X) // 9) + 0.4 for X, _, _ in panels]  # two channels a row, plus title
figure = plt.figure(figsize=(9 * 1.2, 1.2 * sum(rows)), layout="constrained")
for subfigure, (X, y, title) in zip(figure.subfigures(len(panels), 1, height_ratios=rows), panels):
    plot_montage(X, y, n_columns=9, title=title, fig=subfigure)
figure.savefig(output / "montage.png", dpi=80)
print(f"wrote {output / 'montage.png'}")
