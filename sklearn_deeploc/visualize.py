"""Class visualisation by activation maximisation (as in the paper's Fig 6)."""

import copy

import numpy as np
import torch
from torch.nn import functional as F


def _gaussian_kernel(sigma):
    radius = max(int(3 * sigma), 1)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    return kernel / kernel.sum()


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
    kernel = _gaussian_kernel(sigma).to(x)
    channels, pad = x.shape[1], len(kernel) // 2
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), horizontal, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), vertical, groups=channels)


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

    Each step moves the input along the gradient of the class's logit
    (normalised to ``step_size`` per pixel on average), decays it towards
    zero (L2), and clips to [0, 1]; every ``blur_every`` steps the image is
    blurred (Gaussian, ``blur_sigma``) and pixels whose contribution
    ``|x * grad|`` is below the ``clip_percentile`` percentile are set to 0.
    With ``marker``, the marker channel is clamped to a real (stretched) cell
    and updates outside that cell are masked, so the protein pattern is drawn
    inside a real cell.

    Parameters
    ----------
    network : DeepLocNet
        Not modified (a copy in eval mode is optimised against).
    target : int
        Index of the output class (position in ``classes_``).
    n_steps : int, default=200
    step_size : float, default=0.05
    l2_decay : float, default=1e-3
    blur_sigma : float, default=0.5
    blur_every : int, default=4
    clip_percentile : float, default=10.0
    marker : array-like of shape (crop, crop), optional
        A stretched marker-channel crop of a real cell; its side sets the
        input size (60 without a marker, the paper network's crop).
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
    >>> from sklearn_deeploc import DeepLocNet
    >>> from sklearn_deeploc.visualize import maximize_activation
    >>> net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 8))
    >>> image, logits = maximize_activation(net, 1, n_steps=20, random_state=0)
    >>> image.shape, bool(logits[-1] > logits[0])
    ((2, 60, 60), True)
    """
    net = copy.deepcopy(network).eval().requires_grad_(False)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    crop = 60 if marker is None else np.asarray(marker).shape[-1]
    generator = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    x = torch.rand(1, first_conv.in_channels, crop, crop, generator=generator)
    update_mask = torch.ones_like(x)
    if marker is not None:
        marker = torch.as_tensor(np.asarray(marker), dtype=torch.float32)
        cell = (marker > marker.mean()).float()
        update_mask[:, :] = cell
        update_mask[:, marker_channel] = 0
        x = x * cell
        x[:, marker_channel] = marker
    logits = []
    for step in range(n_steps + 1):
        x.requires_grad_(True)
        objective = net(x)[0, target]
        logits.append(objective.item())
        if step == n_steps:
            break
        (grad,) = torch.autograd.grad(objective, x)
        with torch.no_grad():
            new = x + step_size * grad / (grad.abs().mean() + 1e-12)
            new = new * (1 - l2_decay)
            if (step + 1) % blur_every == 0:
                new = gaussian_blur(new, blur_sigma)
                contribution = (new * grad).abs().sum(dim=1, keepdim=True)
                small = contribution < torch.quantile(contribution, clip_percentile / 100)
                new = torch.where(small, torch.zeros_like(new), new)
            # Only the free pixels change: the clamped marker and outside the cell stay.
            x = torch.where(update_mask > 0, new.clamp(0, 1), x.detach())
    return x.detach()[0].numpy().astype(np.float32), np.asarray(logits)
