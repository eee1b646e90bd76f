"""Class visualisation by activation maximisation (as in the paper's Fig 6)."""

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, validate_params
from torch.nn import functional as F

from .network import DeepLocNet
from .validation import PositiveInt


def gaussian_blur(x, sigma):
    """Separable Gaussian blur of each channel of a (n, C, H, W) tensor (edges replicated).

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc.visualize import gaussian_blur
    >>> x = torch.zeros(1, 1, 9, 9)
    >>> x[0, 0, 4, 4] = 1.0
    >>> blurred = gaussian_blur(x, 1.0)
    >>> round(float(blurred.sum()), 4), bool(blurred[0, 0, 4, 4] < 1)
    (1.0, True)
    """
    if sigma <= 0:
        return x
    # Three sigmas, at most the image's size (a wider kernel only weighs replicated edges more).
    pad = max(min(int(3 * sigma), max(x.shape[-2:])), 1)
    kernel = torch.exp(-(torch.arange(-pad, pad + 1).to(x) ** 2) / (2 * sigma**2))
    row = (kernel / kernel.sum()).expand(x.shape[1], 1, 1, -1)  # one filter per channel
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), row, groups=len(row))
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), row.mT, groups=len(row))


@validate_params(
    {
        "n_steps": [Interval(Integral, 0, None, closed="left")],
        "step_size": [Interval(Real, 0, None, closed="left")],
        "l2_decay": [Interval(Real, 0, 1, closed="both")],
        "blur_sigma": [Interval(Real, 0, None, closed="left")],
        "blur_every": [PositiveInt()],
        "clip_percentile": [Interval(Real, 0, 100, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def maximize_activation(
    network,
    target,
    *,
    n_steps=200,
    step_size=0.05,
    l2_decay=1e-3,
    blur_sigma=0.5,
    blur_every=4,
    clip_percentile=10.0,
    marker=None,
    marker_channel=1,
    random_state=None,
):
    """An input that maximises one output class: gradient ascent from uniform noise.

    Each step follows the gradient of the class's logit (``step_size`` per pixel on average),
    decays towards zero (L2) and clips to [0, 1]; every ``blur_every`` steps the image is blurred
    and pixels whose ``|x * grad|`` is below the ``clip_percentile`` percentile are zeroed. With
    ``marker``, the marker channel is clamped to a real cell and only pixels inside it change.

    Parameters
    ----------
    network : DeepLocNet, DeepLocModel or fitted DeepLocClassifier
        Not modified (a copy in eval mode is optimised against).
    target : int or class name
        Index of the output class, or its name when ``network`` is a model or a classifier.
    n_steps : int, default=200
    step_size : float, default=0.05
    l2_decay : float, default=1e-3
    blur_sigma : float, default=0.5
    blur_every : int, default=4
    clip_percentile : float, default=10.0
    marker : array-like of shape (crop, crop), optional
        The stretched marker channel (values in [0, 1]) of a real cell's crop.
    marker_channel : int, default=1
    random_state : int, optional
        Seed of the starting noise.

    Returns
    -------
    image : ndarray of shape (C, crop, crop), float32
    logits : ndarray of shape (n_steps + 1,)
        The target logit at the start and after every step.

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc import DeepLocNet
    >>> from sklearn_deeploc.visualize import maximize_activation
    >>> _ = torch.manual_seed(0)  # the network's initial weights
    >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8))
    >>> image, logits = maximize_activation(net, 1, n_steps=20, random_state=0)
    >>> image.shape, bool(logits[-1] > logits[0])
    ((2, 60, 60), True)
    """
    network, target = _network_and_target(network, target)
    crop, n_channels = network.architecture["crop_size"], network.architecture["n_channels"]
    net = copy.deepcopy(network).cpu().eval().requires_grad_(False)  # a GPU-trained one too
    generator = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    x = torch.rand(1, n_channels, crop, crop, generator=generator)
    update_mask = torch.ones_like(x)
    if marker is not None:
        marker = _check_marker(marker, marker_channel, crop, n_channels)
        cell = (marker > marker.mean()).float()
        update_mask[:, :] = cell
        update_mask[:, marker_channel] = 0
        x = x * cell
        x[:, marker_channel] = marker
    logits = []
    for step in range(n_steps + 1):
        objective = net(x.requires_grad_(True))[0, target]
        logits.append(objective.item())
        if step == n_steps:
            break
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            new = (x + step_size * grad / (grad.abs().mean() + 1e-12)) * (1 - l2_decay)
            if (step + 1) % blur_every == 0:
                new = gaussian_blur(new, blur_sigma)
                contribution = (new * grad).abs().sum(dim=1, keepdim=True)
                small = contribution < torch.quantile(contribution, clip_percentile / 100)
                new = new.masked_fill(small, 0)
            # Only the free pixels change: the clamped marker and outside the cell stay.
            x = torch.where(update_mask > 0, new.clamp(0, 1), x.detach())
    return x.detach()[0].numpy().astype(np.float32), np.asarray(logits)


def _network_and_target(network, target):
    """The ``DeepLocNet`` inside ``network`` and the index of ``target`` among its outputs."""
    model = getattr(network, "model_", network)
    net = getattr(model, "network", model)
    if not isinstance(net, DeepLocNet):
        raise TypeError(
            "network must be a DeepLocNet, a DeepLocModel or a fitted DeepLocClassifier; "
            f"got {type(network).__name__}."
        )
    n_classes = net.architecture["n_classes"]
    classes = list(getattr(model, "classes", range(n_classes)))
    if not isinstance(target, Integral) or isinstance(target, bool):
        if target not in classes:
            raise ValueError(
                f"target must be a class index (0 to {n_classes - 1}) or one of the classes "
                f"{classes}; got {target!r}."
            )
        return net, classes.index(target)
    if not 0 <= target < n_classes:
        raise ValueError(f"target must be a class index from 0 to {n_classes - 1}; got {target}.")
    return net, int(target)


def _check_marker(marker, marker_channel, crop, n_channels):
    """``marker`` as a tensor, refused unless it is a stretched crop for a real channel."""
    channel = isinstance(marker_channel, Integral) and not isinstance(marker_channel, bool)
    if not (channel and 0 <= marker_channel < n_channels):
        raise ValueError(
            f"marker_channel must be a channel index of the network (0 to {n_channels - 1}); "
            f"got {marker_channel!r}."
        )
    marker = np.asarray(marker, dtype=np.float32)
    if marker.shape != (crop, crop):
        raise ValueError(
            f"marker must be one channel of a crop of the network's size, ({crop}, {crop}); "
            f"got shape {marker.shape}."
        )
    if not np.isfinite(marker).all() or marker.min() < 0 or marker.max() > 1:
        raise ValueError(
            "marker must be a stretched crop, finite with values in [0, 1] (the network's "
            f"input); got values from {marker.min()} to {marker.max()}. Stretch it as the "
            "model does (sklearn_deeploc.preprocessing.percentile_stretch)."
        )
    if marker.min() == marker.max():  # the cell is where the marker is above its mean
        raise ValueError(
            f"marker is constant ({marker.min()}); expected a real cell's marker channel, "
            "brighter in the cell than around it."
        )
    return torch.from_numpy(marker)
