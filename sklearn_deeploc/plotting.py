"""Matplotlib figures (optional extra: ``pip install sklearn-deeploc[plot]``)."""

import numpy as np
import torch

from .preprocessing import percentile_stretch
from .validation import check_crops


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Plotting needs matplotlib: pip install 'sklearn-deeploc[plot]'."
        ) from error
    return plt


def plot_montage(X, labels=None, *, channels=(0, 1), n_columns=8, title=None, ax_size=1.2):
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

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_deeploc.datasets import make_yeast_cells
    >>> from sklearn_deeploc.plotting import plot_montage
    >>> X, y = make_yeast_cells(1, ["NUCLEI", "VACUOLE"], random_state=0)
    >>> fig = plot_montage(X, y)
    >>> len(fig.axes)
    4
    """
    plt = _pyplot()
    crops = percentile_stretch(torch.from_numpy(check_crops(X))).numpy()
    n = len(crops)
    grid_rows = -(-n // n_columns)
    columns = min(n, n_columns)
    rows = grid_rows * len(channels)
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * ax_size, rows * ax_size), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        block, column = divmod(i, n_columns)
        for k, channel in enumerate(channels):
            ax = axes[block * len(channels) + k, column]
            ax.imshow(crops[i, channel], cmap="gray", vmin=0, vmax=1)
            if k == 0 and labels is not None:
                ax.set_title(str(np.asarray(labels)[i]), fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
