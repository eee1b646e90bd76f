"""
Feature heads against fine-tuning, in one cross-validated search
================================================================

The paper's comparison (Kraus et al. 2017, transfer learning): pretrained
DeepLoc features (``fc2``, 512-d) feed a linear SVM, k-nearest neighbours and a
random forest; the network is also fine-tuned with its conv layers frozen,
fine-tuned whole, and trained from scratch. All six run on the same folds of
one :class:`~sklearn.model_selection.GridSearchCV`, and every cell is
featurised once.

With no arguments the example pretrains a small DeepLoc on a synthetic source
screen and compares heads on a differently imaged synthetic target screen.
On your data: ``python plot_compare_heads.py --pretrained MODEL/ --data target.h5``
(a DeepLoc-format HDF5 file).
"""

import argparse

import matplotlib

matplotlib.use("Agg")

from sklearn_deeploc import DeepLocClassifier  # noqa: E402
from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells  # noqa: E402
from sklearn_deeploc.model_selection import compare_heads  # noqa: E402
from sklearn_deeploc.plotting import plot_head_comparison  # noqa: E402

parser = argparse.ArgumentParser(description="Compare heads on pretrained DeepLoc.")
parser.add_argument("--pretrained", help="a model folder (default: pretrain a small one)")
parser.add_argument("--data", help="a DeepLoc HDF5 file of the target screen")
parser.add_argument("--steps", type=int, default=60, help="fine-tuning steps per fit")
parser.add_argument("-o", "--output", default="heads.png")
args = parser.parse_args()

# %%
# The pretrained network
# ----------------------
# A saved model folder, or a small DeepLoc trained here on a synthetic source screen.
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

# %%
# The target screen
# -----------------
if args.data:
    X, y = load_deeploc_hdf5(args.data)
else:
    X, y = make_yeast_cells(
        10,
        ["ER", "NUCLEI", "VACUOLE", "MITOCHONDRIA", "PEROXISOME", "CELLPERIPHERY"],
        style="target",
        random_state=1,
    )

# %%
# One search over all heads
# -------------------------
search, table = compare_heads(
    X, y, pretrained, cv=3, network_params={"max_iter": args.steps, "batch_size": 32}
)
print(table.to_string(index=False, float_format="%.3f"))
plot_head_comparison(table).figure.savefig(args.output, dpi=100, bbox_inches="tight")
print(f"wrote {args.output}")
