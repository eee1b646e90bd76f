"""Matplotlib figures (optional extra: ``pip install sklearn-deeploc[plot]``)."""

import numpy as np
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, confusion_matrix

from .preprocessing import percentile_stretch
from .validation import check_crops, check_positive_int, check_proba_table


def _pyplot():
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Plotting needs matplotlib: pip install 'sklearn-deeploc[plot]'."
        ) from error
    return plt


def _axes(ax, figsize):
    """``ax``, or the axes of a new figure of ``figsize`` inches."""
    return _pyplot().subplots(figsize=figsize)[1] if ax is None else ax


def _check_columns(table, required, what):
    """Refuse a table that is empty or lacks a ``required`` column."""
    if len(table) == 0 or not set(required) <= set(getattr(table, "columns", ())):
        raise ValueError(
            f"{what} needs a non-empty table with columns {required}; got "
            f"{len(table)} rows with columns {list(getattr(table, 'columns', []))}."
        )


def _check_same_length(first, second, names):
    """Refuse unless there is one ``names[1]`` per ``names[0]``."""
    if len(first) != len(second):
        raise ValueError(
            f"Expected one {names[1]} per {names[0]}; got {len(first)} {names[0]}s and "
            f"{len(second)} {names[1]}s."
        )


def _check_channels(channels, n_channels):
    """Refuse channels that are not indices below ``n_channels``."""
    if not all(isinstance(c, (int, np.integer)) and 0 <= c < n_channels for c in channels):
        raise ValueError(
            f"channels must be channel indices from 0 to {n_channels - 1}; got {tuple(channels)}."
        )


def plot_montage(
    X, labels=None, *, channels=(0, 1), n_columns=8, title=None, ax_size=1.2, fig=None
):
    """A grid of crops, one column per cell, one row per channel (stretched for display).

    Parameters
    ----------
    X : array-like of shape (n, C, H, W) or flat DeepLoc layout
        Crops, raw or preprocessed.
    labels : sequence of str, optional
        One title per cell.
    channels : tuple of int, default=(0, 1)
        Channels to show, one row each (protein, marker).
    n_columns : int, default=8
        Cells per row of the grid.
    title : str, optional
        Figure title.
    ax_size : float, default=1.2
        Size of one panel in inches.
    fig : matplotlib Figure or SubFigure, optional
        Where to draw (for example one of ``figure.subfigures()``); a new figure by default.

    Returns
    -------
    matplotlib.figure.Figure or SubFigure

    Examples
    --------
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> from sklearn_deeploc.plotting import plot_montage
    >>> X, y = make_yeast_cells(1, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> fig = plot_montage(X, y)
    >>> len(fig.axes)
    4
    """
    crops = percentile_stretch(torch.from_numpy(check_crops(X))).numpy()
    if labels is not None:
        _check_same_length(crops, labels, ("cell", "label"))
        labels = np.asarray(labels)
    _check_channels(channels, crops.shape[1])
    n_columns = check_positive_int(n_columns, "n_columns")
    fig = _image_grid(crops, labels, channels, n_columns, ax_size, fig)
    if title:
        fig.suptitle(title)
    return fig


def _image_grid(images, titles, channels, n_columns, ax_size, fig=None):
    """Images in [0, 1], one column per image and one row per channel, wrapped at ``n_columns``."""
    rows, columns = -(-len(images) // n_columns) * len(channels), min(len(images), n_columns)
    if fig is None:
        fig = _pyplot().figure(figsize=(columns * ax_size, rows * ax_size), layout="constrained")
    # Axes by (block of grid rows, channel, column): one block per row of images.
    axes = fig.subplots(rows, columns, squeeze=False).reshape(-1, len(channels), columns)
    for ax in axes.ravel():
        ax.axis("off")
    for i, image in enumerate(images):
        block, column = divmod(i, n_columns)
        for ax, channel in zip(axes[block, :, column], channels):
            ax.imshow(image[channel], cmap="gray", vmin=0, vmax=1)
        if titles is not None:
            axes[block, 0, column].set_title(str(titles[i]), fontsize=7)
    return fig


def plot_head_comparison(table, *, score="accuracy", ax=None):
    """Bars of a head comparison (:func:`~sklearn_deeploc.model_selection.compare_heads`).

    Parameters
    ----------
    table : pandas.DataFrame
        With columns ``head``, ``mean_<score>`` and ``std_<score>``.
    score : str, default="accuracy"
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.plotting import plot_head_comparison
    >>> table = pd.DataFrame({"head": ["svm", "knn"], "mean_accuracy": [0.8, 0.7],
    ...                       "std_accuracy": [0.05, 0.02]})
    >>> plot_head_comparison(table).get_ylabel()
    'accuracy'
    """
    _check_columns(table, ["head", f"mean_{score}", f"std_{score}"], "plot_head_comparison")
    ax = _axes(ax, (1.1 * len(table) + 2, 3.5))
    mean, std = table[f"mean_{score}"], table[f"std_{score}"]
    ax.bar(table["head"], mean, yerr=std, capsize=4, color="tab:blue")
    ax.set(ylabel=score.replace("_", " "), ylim=(0, 1))
    ax.set_title("Cross-validated heads on pretrained DeepLoc")
    ax.tick_params(axis="x", rotation=30)
    return ax


def plot_per_class_comparison(table, *, ax=None):
    """Per-class average precision of two or more models side by side (the paper's Fig 1D).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`~sklearn_deeploc.model_selection.per_class_comparison`:
        one row per class (and ``"mean"``), one column per model.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.plotting import plot_per_class_comparison
    >>> table = pd.DataFrame({"DeepLoc": [0.9, 0.8], "classical": [0.6, 0.7]},
    ...                      index=["VACUOLE", "mean"])
    >>> len(plot_per_class_comparison(table).patches)
    4
    """
    if table.empty:
        raise ValueError(
            "plot_per_class_comparison needs a table of one row per class and one column per "
            f"model; got shape {table.shape}."
        )
    ax = _axes(ax, (5, 0.35 * len(table) * len(table.columns) + 1.5))
    table.fillna(0).plot.barh(ax=ax, width=0.8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="average precision")
    ax.legend(loc="lower right")
    return ax


def plot_transfer_curve(curve, *, score="accuracy", ax=None):
    """Score against cells per class, mean and standard deviation over draws (Fig 4C/5C).

    Parameters
    ----------
    curve : pandas.DataFrame
        Output of :func:`~sklearn_deeploc.model_selection.transfer_curve`.
    score : str, default="accuracy"
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn_deeploc.plotting import plot_transfer_curve
    >>> curve = pd.DataFrame({"head": ["finetune_all"] * 4, "cells_per_class": [1, 1, 5, 5],
    ...                       "accuracy": [0.5, 0.6, 0.8, 0.9]})
    >>> len(plot_transfer_curve(curve).lines) > 0
    True
    """
    _check_columns(curve, ["head", "cells_per_class", score], "plot_transfer_curve")
    ax = _axes(ax, (5, 3.5))
    summary = curve.groupby(["head", "cells_per_class"])[score].agg(["mean", "std"])
    for head, rows in summary.fillna({"std": 0}).groupby(level="head", sort=False):
        sizes = rows.index.get_level_values("cells_per_class")
        ax.errorbar(sizes, rows["mean"], yerr=rows["std"], marker="o", capsize=3, label=head)
    ax.set(xscale="log", xlabel="training cells per class", ylabel=score.replace("_", " "))
    ax.set_ylim(0, 1)
    ax.legend()
    return ax


def plot_confusion_matrix(y_true, y_pred, *, labels=None, ax=None):
    """Row-normalised confusion matrix with each class's accuracy in its row label.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
    labels : sequence, optional
        Class order; default the sorted union of both.
    ax : matplotlib Axes, optional

    Returns
    -------
    sklearn.metrics.ConfusionMatrixDisplay

    Examples
    --------
    >>> from sklearn_deeploc.plotting import plot_confusion_matrix
    >>> display = plot_confusion_matrix(["a", "a", "b"], ["a", "b", "b"])
    >>> display.ax_.get_yticklabels()[0].get_text()
    'a (50%)'
    """
    labels = np.unique(np.concatenate([y_true, y_pred])) if labels is None else labels
    matrix = confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    ax = _axes(ax, (0.45 * len(labels) + 2.5,) * 2)
    display = ConfusionMatrixDisplay(matrix, display_labels=labels)
    display.plot(
        ax=ax, cmap="viridis", values_format=".2f", colorbar=False, xticks_rotation="vertical"
    )
    ax.set_yticklabels([f"{label} ({matrix[i, i]:.0%})" for i, label in enumerate(labels)])
    return display


def plot_tsne(features, labels, *, ax=None, random_state=0, perplexity=30.0):
    """A t-SNE map of cell features coloured by class (the paper's Fig 3).

    Parameters
    ----------
    features : array-like of shape (n, d)
        For the paper's map, ``DeepLocFeaturizer(model, layer="conv8")`` output.
    labels : array-like of shape (n,)
    ax : matplotlib Axes, optional
    random_state : int, default=0
    perplexity : float, default=30.0
        Lowered automatically below the number of cells.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.plotting import plot_tsne
    >>> rng = np.random.default_rng(0)
    >>> ax = plot_tsne(rng.normal(size=(20, 8)), ["a"] * 10 + ["b"] * 10)
    >>> len(ax.collections)
    2
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    _check_same_length(features, labels, ("cell", "label"))
    if features.ndim != 2 or len(features) < 3:
        raise ValueError(
            f"plot_tsne needs features of shape (n_cells >= 3, n_features); got {features.shape}."
        )
    if not np.ptp(features, axis=0).any():  # scikit-learn's PCA start gives NaN (and may crash)
        raise ValueError("plot_tsne needs features that differ between cells; all are the same.")
    ax = _axes(ax, (6, 5))
    perplexity = min(perplexity, (len(features) - 1) / 3)
    tsne = TSNE(perplexity=perplexity, random_state=random_state, init="pca")
    embedding = tsne.fit_transform(features)
    for label in np.unique(labels):
        ax.scatter(*embedding[labels == label].T, s=6, label=str(label))
    ax.set(xticks=[], yticks=[], title="t-SNE of DeepLoc features")
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return ax


def plot_precision_recall(y_true, proba, classes, *, ax=None):
    """One precision-recall curve per class, average precision in the legend.

    Parameters
    ----------
    y_true : array-like of shape (n,)
    proba : array-like of shape (n, n_classes)
        Columns in the order of ``classes``.
    classes : sequence
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> from sklearn_deeploc.plotting import plot_precision_recall
    >>> ax = plot_precision_recall(["a", "b", "b"], [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]],
    ...                            ["a", "b"])
    >>> len(ax.get_lines()) >= 2
    True
    """
    proba, classes, y_true = check_proba_table(
        proba, classes, groups=y_true, groups_name="y_true", probabilities=False
    )
    ax = _axes(ax, (5, 4))
    for k, label in enumerate(classes):
        if (y_true == label).any():
            PrecisionRecallDisplay.from_predictions(
                y_true == label, proba[:, k], name=str(label), ax=ax, plot_chance_level=False
            )
    ax.legend(fontsize=6)
    return ax


def plot_class_visualizations(images, titles, *, channels=(0, 1), ax_size=1.6):
    """Activation-maximisation images, one column per class, one row per channel.

    Parameters
    ----------
    images : sequence of ndarray of shape (C, H, W)
        From :func:`~sklearn_deeploc.visualize.maximize_activation`.
    titles : sequence of str
    channels : tuple of int, default=(0, 1)
    ax_size : float, default=1.6

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_same_length(images, titles, ("image", "title"))
    for image in images:
        _check_channels(channels, len(image))
    return _image_grid(images, np.asarray(titles), channels, max(len(images), 1), ax_size)
