"""
Transfer learning against training from scratch
===============================================

The paper's learning curve (Figs 4C and 5C): training sets of a few cells per
class are drawn several times from a pool; DeepLoc fine-tuned from a
pretrained network and DeepLoc trained from scratch are scored on one fixed
test set. Error bars are the standard deviation over the draws.

With no arguments the example uses synthetic source and target screens. On your
data: ``python plot_transfer_curve.py --pretrained MODEL/ --data pool.h5 --test test.h5``.
"""

import argparse

import matplotlib

matplotlib.use("Agg")

from sklearn_deeploc import DeepLocClassifier  # noqa: E402
from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells  # noqa: E402
from sklearn_deeploc.model_selection import transfer_curve  # noqa: E402
from sklearn_deeploc.plotting import plot_transfer_curve  # noqa: E402

parser = argparse.ArgumentParser(description="Transfer-learning curve.")
parser.add_argument("--pretrained", help="a model folder (default: pretrain a small one)")
parser.add_argument("--data", help="DeepLoc HDF5 file to draw training sets from")
parser.add_argument("--test", help="DeepLoc HDF5 file of the fixed test set")
parser.add_argument("--sizes", type=int, nargs="+", default=[1, 3, 5, 10])
parser.add_argument("--draws", type=int, default=3)
parser.add_argument("--steps", type=int, default=80, help="training steps per fit")
parser.add_argument("-o", "--output", default="transfer_curve.png")
args = parser.parse_args()

# %%
# Pretrained network and target screen
# ------------------------------------
if args.pretrained:
    pretrained = args.pretrained
else:
    X_source, y_source = make_yeast_cells(25, random_state=0)
    pretrained = DeepLocClassifier(
        conv_channels=(16, 16, 32, 32, 64, 64, 64, 64),
        fc_units=(128, 128),
        batch_size=32,
        max_iter=200,
        random_state=0,
    ).fit(X_source, y_source)

classes = ["ER", "NUCLEI", "VACUOLE", "MITOCHONDRIA", "PEROXISOME", "CELLPERIPHERY"]
if args.data and args.test:
    X_pool, y_pool = load_deeploc_hdf5(args.data)
    X_test, y_test = load_deeploc_hdf5(args.test)
else:
    X_pool, y_pool = make_yeast_cells(max(args.sizes), classes, style="target", random_state=1)
    X_test, y_test = make_yeast_cells(20, classes, style="target", random_state=2)

# %%
# The curve
# ---------
curve = transfer_curve(
    X_pool,
    y_pool,
    X_test,
    y_test,
    pretrained,
    sizes=args.sizes,
    n_draws=args.draws,
    network_params={"max_iter": args.steps, "batch_size": 32},
    verbose=1,
)
print(curve.groupby(["head", "cells_per_class"])["accuracy"].agg(["mean", "std"]))
plot_transfer_curve(curve).figure.savefig(args.output, dpi=100, bbox_inches="tight")
print(f"wrote {args.output}")
