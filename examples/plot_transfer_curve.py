"""
Transfer learning against training from scratch
===============================================

The paper's learning curve (Figs 4C and 5C): training sets of a few cells per
class are drawn several times from a pool; DeepLoc fine-tuned from a
pretrained network and DeepLoc trained from scratch are scored on one fixed
test set. Error bars are the standard deviation over the draws.

Here the pretrained network is a tiny DeepLoc trained on a synthetic source
screen, and the pool and test set come from a differently imaged synthetic
target screen; sizes, draws and steps are kept small so that the example runs
in about a minute. On your data: the published model (``"deeploc-chong"``)
as ``pretrained``, a pool and a test set read with
:func:`~sklearn_deeploc.datasets.load_deeploc_hdf5`, the paper's sizes (the
default of :func:`~sklearn_deeploc.model_selection.transfer_curve`) and more
steps.
"""

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.model_selection import transfer_curve
from sklearn_deeploc.plotting import plot_transfer_curve

classes = ["ER", "NUCLEI", "VACUOLE", "MITOCHONDRIA", "PEROXISOME", "CELLPERIPHERY"]

# %%
# Pretrained network and target screen
# ------------------------------------
X_source, y_source = make_yeast_cells(20, classes, random_state=0)
pretrained = DeepLocClassifier(
    conv_channels=(8, 8, 16, 16, 32, 32, 32, 32),
    fc_units=(64, 64),
    batch_size=32,
    max_iter=80,
    random_state=0,
).fit(X_source, y_source)

X_pool, y_pool = make_yeast_cells(12, classes, style="target", random_state=1)
X_test, y_test = make_yeast_cells(10, classes, style="target", random_state=2)

# %%
# The curve
# ---------
# Every fit, fine-tuned or from scratch, takes the same 15 steps.
curve = transfer_curve(
    X_pool,
    y_pool,
    X_test,
    y_test,
    pretrained,
    sizes=[2, 8],
    n_draws=2,
    network_params={"max_iter": 15, "batch_size": 32},
)
print(curve.groupby(["head", "cells_per_class"])["accuracy"].agg(["mean", "std"]))
plot_transfer_curve(curve)
