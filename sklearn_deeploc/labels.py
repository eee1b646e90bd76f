"""Cells from label images: one cell per non-zero label, its centroid and area.

A label image is a 2-D integer array whose object ``k`` has pixels ``k`` and background 0,
as CellProfiler, Cellpose, StarDist and OME-Zarr ``labels/`` write them.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .fields import read_field


def check_label_image(labels, name="labels"):
    """Return ``labels`` as a 2-D integer array, dropping singleton axes, refusing anything else.

    Parameters
    ----------
    labels : array-like
        The label image.
    name : str, default="labels"
        What to call it in errors (a file name, a plate field).

    Returns
    -------
    numpy.ndarray of shape (H, W)
        The labels, unchanged in type.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.labels import check_label_image
    >>> check_label_image(np.zeros((1, 4, 5), dtype=np.uint16)).shape
    (4, 5)
    >>> check_label_image(np.zeros((4, 5)))
    Traceback (most recent call last):
    ...
    ValueError: labels holds float64 values; expected integer labels (0 = background).
    """
    labels = np.asarray(labels)
    if labels.ndim > 2:
        labels = labels.reshape([n for n in labels.shape if n != 1] or [1, 1])
    if labels.ndim != 2:
        colour = labels.ndim == 3 and {3, 4} & {labels.shape[0], labels.shape[-1]}
        hint = " (a colour or palette image: save the labels as one integer plane)" * bool(colour)
        raise ValueError(
            f"{name} has shape {labels.shape}; expected one 2-D label image (H, W){hint}."
        )
    if labels.dtype == bool:
        raise ValueError(
            f"{name} is a boolean mask; expected integer labels, one value per cell "
            "(label its connected components first, e.g. skimage.measure.label)."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{name} holds {labels.dtype} values; expected integer labels (0 = background)."
        )
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
        raise ValueError(
            f"{name} holds negative labels (down to {labels.min()}); expected 0 for the "
            "background and positive cell labels."
        )
    regions = _regions_of_one_value(labels)
    if regions > 1:
        raise ValueError(
            f"{name} holds one label value ({labels.max()}) over {regions} separate regions: "
            "a binary mask, not a label image; expected one value per cell (label its "
            "connected components first, e.g. skimage.measure.label)."
        )
    return labels


def _regions_of_one_value(labels):
    """How many separate regions the non-zero pixels form when they all hold a mask's value
    (1, 255 or the type's largest), else 0."""
    top = labels.max(initial=0)
    if top not in (1, 255, np.iinfo(labels.dtype).max):
        return 0
    if np.min(labels, where=labels > 0, initial=top) != top:
        return 0
    return ndimage.label(labels == top, structure=np.ones((3, 3)))[1]


def cells_from_labels(labels, image=None):
    """One row per cell of a label image: its label, centroid and area.

    Parameters
    ----------
    labels : array-like of shape (H, W)
        Integer label image, 0 the background (see :func:`check_label_image`).
    image : ndarray of shape (C, H, W), optional
        The field the labels segment: each cell's mean intensity in each channel too.

    Returns
    -------
    pandas.DataFrame
        ``ObjectNumber`` (the label value), ``center_x`` (mean column), ``center_y`` (mean
        row), as ``skimage.measure.regionprops`` gives them, ``area`` (pixels), and with
        ``image`` ``mean_intensity_<k>`` per channel k, sorted by ``ObjectNumber``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.labels import cells_from_labels
    >>> labels = np.zeros((6, 8), dtype=np.uint8)
    >>> labels[1:3, 1:4] = 1
    >>> labels[4, 5:8] = 7
    >>> cells_from_labels(labels)
       ObjectNumber  center_x  center_y  area
    0             1       2.0       1.5     6
    1             7       6.0       4.0     3
    >>> cells_from_labels(labels, np.full((1, 6, 8), 5.0))["mean_intensity_0"].tolist()
    [5.0, 5.0]
    """
    labels = check_label_image(labels)
    if image is not None and (np.ndim(image) != 3 or np.shape(image)[1:] != labels.shape):
        raise ValueError(
            f"image has shape {np.shape(image)}; expected (channels, {labels.shape[0]}, "
            f"{labels.shape[1]}), the field its labels segment."
        )
    flat = labels.ravel()
    pixels = np.flatnonzero(flat)  # the background is most pixels: skip it early
    rows, cols = np.divmod(pixels, labels.shape[1])
    numbers, values = None, flat[pixels]
    if values.size and int(values.max()) > 4 * values.size:  # too sparse for a bincount
        numbers, values = np.unique(values, return_inverse=True)
    values = values.astype(np.intp)
    area = np.bincount(values)
    present = np.flatnonzero(area)  # label values, or indices into numbers where sparse
    cells = {
        # One type for every field, whatever its labels' type: uint64 holds them all
        "ObjectNumber": (present if numbers is None else numbers[present]).astype(np.uint64),
        "center_x": np.bincount(values, cols)[present] / area[present],
        "center_y": np.bincount(values, rows)[present] / area[present],
        "area": area[present],
    }
    for k, channel in enumerate([] if image is None else image):
        intensity = np.bincount(values, channel.ravel()[pixels], minlength=len(area))
        cells[f"mean_intensity_{k}"] = intensity[present] / area[present]
    return pd.DataFrame(cells)


def read_label_image(path):
    """Read a label image file (TIFF, PNG, palette PNG or ``.npy``) as a 2-D integer array.

    Parameters
    ----------
    path : path-like
        The file; singleton axes are dropped (see :func:`check_label_image`).

    Returns
    -------
    numpy.ndarray of shape (H, W)
        The labels in the file's integer type.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from sklearn_deeploc.labels import read_label_image
    >>> path = Path(tempfile.mkdtemp()) / "field.npy"
    >>> np.save(path, np.arange(12, dtype=np.uint16).reshape(3, 4))
    >>> read_label_image(path).shape
    (3, 4)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label image {path} not found.")
    # Headers are checked first (read_field's, PIL's, or a memory map's): a small file cannot
    # claim GBs
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            pixels = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
        except (ValueError, OSError, MemoryError) as error:  # numpy does not name the file
            raise ValueError(f"Cannot read label image {path}: {error}.") from None
    else:
        pixels = _palette_indices(path) if suffix == ".png" else None
        pixels = read_field(path) if pixels is None else pixels
    return check_label_image(pixels, f"Label image {path}")


def _palette_indices(path):
    """A palette PNG's indices, its labels as annotation tools save them (read as colours, they
    would be refused), or None for another PNG (read_field reads it, or says what is wrong)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image) if image.mode == "P" else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
