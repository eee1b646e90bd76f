"""
From a screen to its analyses
=============================

The paper's analyses after classification, on synthetic screens (and on the
real field of view of ``../shared/data`` beside the repository, when present):

- a t-SNE map of the last conv layer's features (max over space), coloured by class;
- class visualisation by activation maximisation;
- per-well mean probabilities, and localization changes between an untreated and
  a treated screen (Welch's t and a Gaussian + uniform mixture);
- cells found in a real micrograph by seeded watershed, then cropped.
"""

from pathlib import Path

import numpy as np
import torch

from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.plotting import plot_class_visualizations, plot_montage, plot_tsne
from sklearn_deeploc.preprocessing import percentile_stretch
from sklearn_deeploc.screen import aggregate, crop_cells, find_cells, localization_changes
from sklearn_deeploc.visualize import maximize_activation

# %%
# A small DeepLoc trained on a synthetic screen
# ---------------------------------------------
classes = ["NUCLEI", "VACUOLE", "CELLPERIPHERY", "ER", "MITOCHONDRIA", "PEROXISOME"]
X, y = make_yeast_cells(20, classes, random_state=0)
clf = DeepLocClassifier(
    conv_channels=(8, 8, 16, 16, 32, 32, 32, 32),
    fc_units=(64, 64),
    batch_size=32,
    max_iter=100,
    random_state=0,
).fit(X, y)

# %%
# t-SNE of conv8 features
# -----------------------
X_test, y_test = make_yeast_cells(15, classes, random_state=1)
conv8 = DeepLocFeaturizer(clf, layer="conv8").fit(X_test).transform(X_test)
plot_tsne(conv8, y_test)

# %%
# The classes as the network sees them
# ------------------------------------
# As in the paper's Fig 6, the marker channel is clamped to a real cell and the
# protein pattern is drawn inside it by gradient ascent on the class's output.
marker = percentile_stretch(torch.from_numpy(X_test[:1]))[0, 1, 2:62, 2:62].numpy()
images = [
    maximize_activation(
        clf.net_.module_, k, n_steps=50, marker=marker, blur_sigma=1.0, random_state=0
    )[0]
    for k in range(len(classes))
]
plot_class_visualizations(images, clf.classes_)

# %%
# Wells, and a localization change between two screens
# ----------------------------------------------------
# Each "protein" is one class here; in the treated screen, ER proteins move to
# the nucleus.
untreated, untreated_labels = make_yeast_cells(10, classes, random_state=2)
treated_labels = np.where(untreated_labels == "ER", "NUCLEI", untreated_labels)
treated = np.concatenate(
    [make_yeast_cells(1, [c], random_state=3 + i)[0] for i, c in enumerate(treated_labels)]
)
proba_a, proba_b = clf.predict_proba(untreated), clf.predict_proba(treated)
print(aggregate(proba_a, untreated_labels, clf.classes_).round(2))
changes = localization_changes(proba_a, untreated_labels, proba_b, untreated_labels, clf.classes_)
print(changes[changes["significant"]])

# %%
# A real micrograph: find cells, crop them
# ----------------------------------------
# Shown only where the project's real samples lie beside the repository.
try:
    examples = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs each example in its folder, without __file__
    examples = Path.cwd()
field = examples.parent.parent / "shared/data/field_r01c01f01"
if field.exists():
    from skimage.io import imread

    image = np.stack([imread(field / f"r01c01f01p01-ch{k}sk1fk1fl1.tiff") for k in (1, 3)])
    centres = find_cells(image, channel=1)
    crops = crop_cells(image, centres, border="drop")
    print(f"{len(centres)} cells found; {len(crops.crops)} cropped away from the border")
    plot_montage(crops.crops[:16], title="first 16 cells of the real field")
