"""Figures: mismatched inputs are refused with a message, not an IndexError from matplotlib."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from sklearn_deeploc.plotting import (
    plot_class_visualizations,
    plot_head_comparison,
    plot_montage,
    plot_per_class_comparison,
    plot_precision_recall,
    plot_transfer_curve,
    plot_tsne,
)

matplotlib.use("Agg")
CROPS = np.random.default_rng(0).random((3, 2, 64, 64), dtype=np.float32)


def test_tsne_refuses_features_that_are_all_the_same():
    with pytest.raises(ValueError, match="features that differ between cells; all are the same"):
        plot_tsne(np.zeros((4, 2)), [0, 0, 1, 1])  # scikit-learn's PCA start would crash


@pytest.mark.parametrize(
    ("plot", "match"),
    [
        (lambda: plot_montage(CROPS, ["a", "b"]), "one label per cell; got 3 cells and 2 labels"),
        (lambda: plot_montage(CROPS[:, :1]), "channel indices from 0 to 0; got \\(0, 1\\)"),
        (lambda: plot_montage(CROPS, n_columns=0), "n_columns must be a positive integer"),
        (
            lambda: plot_head_comparison(pd.DataFrame({"head": ["svm"]})),
            "columns \\['head', 'mean_accuracy', 'std_accuracy'\\]",
        ),
        (lambda: plot_per_class_comparison(pd.DataFrame()), "got shape \\(0, 0\\)"),
        (lambda: plot_transfer_curve(pd.DataFrame()), "columns \\['head', 'cells_per_class'"),
        (lambda: plot_tsne(np.ones((5, 3)), ["a"] * 4), "one label per cell"),
        (lambda: plot_tsne(np.ones((1, 3)), ["a"]), "n_cells >= 3"),
        (
            lambda: plot_precision_recall(["a", "b"], [[0.5, 0.5], [0.2, 0.8]], ["a", "b", "c"]),
            "each of the 3 class names, shape \\(n_cells, 3\\); got shape \\(2, 2\\)",
        ),
        (
            lambda: plot_class_visualizations(list(CROPS[:, :, :60, :60]), ["a", "b"]),
            "one title per image; got 3 images and 2 titles",
        ),
    ],
    ids=range(10),
)
def test_mismatched_inputs_are_refused(plot, match):
    with pytest.raises(ValueError, match=match):
        plot()


def test_montage_draws_one_panel_per_cell_and_channel():
    fig = plot_montage(CROPS, ["a", "b", "c"], channels=(1,), n_columns=2)
    assert sum(ax.has_data() for ax in fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes if ax.has_data()] == ["a", "b", "c"]
