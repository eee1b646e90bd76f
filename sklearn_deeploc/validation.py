"""The one input check shared by every estimator and command: crops in, float32 crops out."""

import numbers

import numpy as np

IMAGE_SIZE = 64


def _as_numeric_array(X):
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            "Sparse input is not supported: DeepLoc expects dense image crops; "
            f"got {type(X).__name__}. Convert it with X.toarray() first."
        )
    if hasattr(X, "iloc"):  # pandas DataFrame of the flat layout
        X = X.to_numpy()
    X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ValueError("Complex data not supported: expected real pixel values.")
    if X.dtype.kind == "O":
        X = X.astype(np.float64)  # a non-number raises TypeError here, which says which
    elif X.dtype.kind not in "biuf":
        raise TypeError(f"Expected numeric pixel values (integer or float); got dtype {X.dtype}.")
    return X


def _check_finite(X):
    bad = ~np.isfinite(X)
    n_bad = int(bad.sum())
    if n_bad:
        cell, channel, row, col = np.unravel_index(int(np.argmax(bad.ravel())), X.shape)
        raise ValueError(
            f"Input X contains NaN or infinity: {n_bad} non-finite pixel(s); the first "
            f"is cell {cell}, channel {channel}, row {row}, column {col}. Expected "
            "finite pixel values."
        )


def check_crops(X, *, n_channels=None, image_size=IMAGE_SIZE, min_size=None):
    """Validate single-cell crops and return them as a float32 array (n, C, H, W).

    Parameters
    ----------
    X : array-like or pandas.DataFrame
        Either crops of shape ``(n, C, H, W)`` or the DeepLoc HDF5 layout
        ``(n, C * image_size * image_size)``: each row holds the channels one
        after another, each channel row-major. Integer or float dtypes.
    n_channels : int, optional
        Expected channel count. For the flat layout it also fixes how a row is
        split; when None, ``C = width // image_size**2``.
    image_size : int, default=64
        Side of the square crops in the flat layout.
    min_size : int, optional
        Smallest accepted crop side (the network's crop size).

    Returns
    -------
    ndarray of shape (n, C, H, W), dtype float32
        C-contiguous and writable (a new array unless ``X`` already was one).

    Raises
    ------
    ValueError
        Wrong number of dimensions, a flat width that is not
        ``C * image_size**2``, a channel count other than ``n_channels``, crops
        smaller than ``min_size``, no cells, or NaN/inf pixels.
    TypeError
        Non-numeric or sparse input.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.validation import check_crops
    >>> flat = np.zeros((5, 2 * 64 * 64), dtype=np.uint16)
    >>> check_crops(flat).shape
    (5, 2, 64, 64)
    >>> check_crops(np.zeros((5, 2, 64, 64)), n_channels=2).dtype
    dtype('float32')
    """
    X = _as_numeric_array(X)
    if X.ndim == 2:
        X = _unflatten(X, n_channels, image_size)
    elif X.ndim != 4:
        hint = " Reshape your data with X.reshape(1, -1) if it is one cell." if X.ndim == 1 else ""
        raise ValueError(
            "Expected crops of shape (n_cells, n_channels, height, width) or the flat "
            f"DeepLoc layout (n_cells, n_channels * {image_size} * {image_size}); got a "
            f"{X.ndim}-D array of shape {X.shape}.{hint}"
        )
    n, channels, height, width = X.shape
    if n == 0:
        raise ValueError(f"Expected at least one cell; got X of shape {X.shape}.")
    if n_channels is not None and channels != n_channels:
        raise ValueError(f"Expected {n_channels} channel(s); got {channels} (X shape {X.shape}).")
    if min_size is not None and min(height, width) < min_size:
        raise ValueError(
            f"Crops of {height}x{width} pixels are smaller than the network's crop size "
            f"{min_size}x{min_size}; expected at least {min_size} pixels per side."
        )
    X = np.require(X, dtype=np.float32, requirements=["C", "W"])
    _check_finite(X)
    return X


def _unflatten(X, n_channels, image_size):
    n, width = X.shape
    if width == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 "
            "is required: expected pixel columns."
        )
    pixels = image_size * image_size
    channels = n_channels if n_channels is not None else max(width // pixels, 1)
    if width != channels * pixels:
        raise ValueError(
            f"A flat X must have n_channels * {image_size} * {image_size} = "
            f"{channels * pixels} columns ({channels} channel(s) of {image_size}x"
            f"{image_size}, channel-major); got {width} columns."
        )
    return X.reshape(n, channels, image_size, image_size)


def check_positive_int(value, name):
    """Raise a ValueError unless ``value`` is an integer >= 1."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)
