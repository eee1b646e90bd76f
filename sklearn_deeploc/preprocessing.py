"""Batch preprocessing in torch (percentile stretch, augmentation, five crops), no per-cell loop."""

import math

import numpy as np
import torch

from .validation import PercentilePair

STRETCH_VARIANTS = ("clip", "reference")


def _percentile(flat, q):
    """Percentile ``q`` along the last axis, interpolated linearly as numpy does."""
    n = flat.shape[-1]
    position = q / 100 * (n - 1)
    lower, upper = math.floor(position), math.ceil(position)
    # topk from the nearer end costs far less than a sort for extreme percentiles.
    if lower >= n - 1 - upper:
        top = flat.topk(n - lower, dim=-1).values
        low, high = top[..., n - 1 - lower], top[..., n - 1 - upper]
    else:
        bottom = flat.topk(upper + 1, dim=-1, largest=False).values
        low, high = bottom[..., lower], bottom[..., upper]
    return low + (high - low) * (position - lower)


def percentile_stretch(x, percentiles=(0.1, 99.9), *, variant="clip"):
    """Stretch each cell's channels to [0, 1] between two percentiles.

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray of shape (n, C, H, W)
        Raw crops (a tensor keeps its float dtype; an array is stretched in float32).
    percentiles : tuple of float, default=(0.1, 99.9)
        Lower and upper percentiles, per cell and per channel.
    variant : {"clip", "reference"}, default="clip"
        ``"clip"`` (the paper's description) maps the percentiles to 0 and 1 and clips outside.
        ``"reference"`` reproduces the published code (for models trained that way): clip at the
        upper percentile, subtract the lower, and divide by the range only when it exceeds 1.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        As ``x``, of its shape. A constant channel becomes zeros, never NaN.

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc.preprocessing import percentile_stretch
    >>> x = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(1, 2, 64, 64)
    >>> y = percentile_stretch(x)
    >>> float(y.min()), float(y.max())
    (0.0, 1.0)
    """
    if variant not in STRETCH_VARIANTS:
        raise ValueError(f"variant must be one of {STRETCH_VARIANTS}; got {variant!r}.")
    if not (torch.is_tensor(x) or isinstance(x, np.ndarray)):
        raise TypeError(f"Expected a torch.Tensor or numpy array; got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(f"Expected crops of shape (n, C, H, W); got shape {tuple(x.shape)}.")
    if not PercentilePair().is_satisfied_by(percentiles):
        raise ValueError(f"percentiles must be {PercentilePair.description}; got {percentiles!r}.")
    if isinstance(x, np.ndarray):
        return _stretch(to_tensor(x), percentiles, variant).numpy()
    return _stretch(x, percentiles, variant)


def _stretch(x, percentiles, variant):
    """:func:`percentile_stretch` of checked arguments."""
    low, high = (_percentile(x.flatten(2), q)[..., None, None] for q in percentiles)
    value_range = high - low
    if variant == "clip":
        scale = torch.where(value_range > 0, value_range, torch.ones_like(value_range))
        return ((x - low) / scale).clamp_(0.0, 1.0)
    shifted = torch.minimum(x, high) - low
    return torch.where(value_range > 1, shifted / value_range, shifted)


def stretch_as_stored(x, preprocessing):
    """A batch stretched as a model's stored ``preprocessing`` says (``stretch`` None: as is)."""
    if preprocessing["stretch"] is None:
        return x
    return _stretch(x, tuple(preprocessing["stretch"]), preprocessing["stretch_variant"])


def center_crop(x, size):
    """The centred ``size`` x ``size`` window of a batch (a view, no copy)."""
    return five_crops(x, size)[0]


def five_crop_offsets(height, width, size):
    """(top, left) of the five crops: centre, top-left, top-right, bottom-left, bottom-right."""
    bottom, right = height - size, width - size
    return ((bottom // 2, right // 2), (0, 0), (0, right), (bottom, 0), (bottom, right))


def five_crops(x, size):
    """The five ``size`` x ``size`` prediction views (a tuple) of a batch ``x`` ``(n, C, H, W)``.

    Centre first, then the top-left, top-right, bottom-left and bottom-right corners.

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc.preprocessing import five_crops
    >>> [tuple(c.shape) for c in five_crops(torch.zeros(2, 2, 64, 64), 60)][:2]
    [(2, 2, 60, 60), (2, 2, 60, 60)]
    """
    if not 1 <= size <= min(x.shape[-2:]):
        raise ValueError(
            f"size must be a crop side from 1 to the image's {min(x.shape[-2:])} pixels; "
            f"got {size}."
        )
    return tuple(
        x[..., top : top + size, left : left + size]
        for top, left in five_crop_offsets(*x.shape[-2:], size)
    )


def random_augment(x, size, rng):
    """Each cell of a batch in its own random ``size`` window, flipped and rotated at random.

    A random transpose and horizontal and vertical flips give the square's 8 symmetries, equally
    likely. ``rng`` is a numpy Generator, so that samplers and datasets pickle.
    """
    n, _, height, width = x.shape
    tops = torch.from_numpy(rng.integers(0, height - size + 1, n)).to(x.device)
    lefts = torch.from_numpy(rng.integers(0, width - size + 1, n)).to(x.device)
    transpose, flip_h, flip_v = (
        torch.from_numpy(rng.random(n) < 0.5).to(x.device).view(n, 1, 1, 1) for _ in range(3)
    )
    # All windows as a strided view, then one gather of each cell's own window.
    windows = x.unfold(2, size, 1).unfold(3, size, 1)
    out = windows[torch.arange(n, device=x.device), :, tops, lefts]
    out = torch.where(transpose, out.transpose(-1, -2), out)
    out = torch.where(flip_h, out.flip(-1), out)
    return torch.where(flip_v, out.flip(-2), out)


def to_tensor(X):
    """A float32 torch view of a validated numpy batch (copies read-only arrays)."""
    if isinstance(X, torch.Tensor):
        return X
    return torch.from_numpy(np.require(X, np.float32, ["C", "W"]))
