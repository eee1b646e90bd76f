"""
Feature heads against fine-tuning, in one cross-validated search
================================================================

The paper's comparison (Kraus et al. 2017, transfer learning): pretrained
DeepLoc features (``fc2``) feed a linear SVM, k-nearest neighbours and a
random forest; the network is also fine-tuned with its conv layers frozen,
fine-tuned whole, and trained from scratch; and the classical pipeline
(CellProfiler-style features into an ensemble of SVMs, as ensLOC) runs
beside them. All seven run on the same folds of one
scikit-learn ``GridSearchCV``, and every cell is featurised
once.

Here a tiny DeepLoc is pretrained on a synthetic source screen and the heads
are compared on a differently imaged synthetic target screen, with few cells
and few steps so that the example runs in about a minute. On your data, pass
the published model (``"deeploc-chong"``) or your model folder as
``pretrained`` and your crops from
:func:`~sklearn_deeploc.datasets.load_deeploc_hdf5`, with more steps.
"""

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.model_selection import compare_heads
from sklearn_deeploc.plotting import plot_head_comparison

classes = ["ER", "NUCLEI", "VACUOLE", "MITOCHONDRIA", "PEROXISOME", "CELLPERIPHERY"]

# %%
# The pretrained network
# ----------------------
# A small DeepLoc trained on the "source" imaging style.
X_source, y_source = make_yeast_cells(20, classes, random_state=0)
pretrained = DeepLocClassifier(
    conv_channels=(8, 8, 16, 16, 32, 32, 32, 32),
    fc_units=(64, 64),
    batch_size=32,
    max_iter=80,
    random_state=0,
).fit(X_source, y_source)

# %%
# The target screen
# -----------------
# Other cells of the same classes, imaged in the "target" style (another
# camera offset, noise and marker).
X, y = make_yeast_cells(8, classes, style="target", random_state=1)

# %%
# One search over all heads
# -------------------------
# Two folds; the network heads train for 20 steps per fold here; the paper fine-tunes for
# thousands.
search, table = compare_heads(
    X, y, pretrained, cv=2, network_params={"max_iter": 20, "batch_size": 32}
)
print(table.to_string(index=False, float_format="%.3f"))
plot_head_comparison(table)
