"""
Synthetic yeast cells next to real ones
=======================================

:func:`~sklearn_deeploc.datasets.make_yeast_cells` draws a synthetic screen:
one budding cell per crop, a cytosolic marker, and a protein channel whose
pattern names the localization class. This example shows one cell of every
class in the "source" and "target" imaging styles, next to real crops of the
Schuldiner test set (RFP protein, brightfield), and writes the montages as PNG.

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
# One cell of every class, in both imaging styles
# -----------------------------------------------
for style in ("source", "target"):
    X, y = make_yeast_cells(1, style=style, shuffle=False, random_state=0)
    fig = plot_montage(X, y, n_columns=9, title=f"make_yeast_cells, style={style!r}")
    fig.savefig(output / f"synthetic_{style}.png", dpi=100)
    print(f"wrote {output / f'synthetic_{style}.png'}")

# %%
# Real crops: one per class of the Schuldiner test set
# ----------------------------------------------------
if Path(args.hdf5).exists():
    X_real, y_real = load_deeploc_hdf5(args.hdf5)
    _, first = np.unique(y_real, return_index=True)
    fig = plot_montage(X_real[first], y_real[first], n_columns=9, title="Schuldiner test set")
    fig.savefig(output / "real_schuldiner.png", dpi=100)
    print(f"wrote {output / 'real_schuldiner.png'}")
else:
    print(f"{args.hdf5} not found: skipping the real crops")
