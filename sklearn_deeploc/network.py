"""The DeepLoc convolutional network (Kraus et al. 2017) as a plain PyTorch module."""

from collections import OrderedDict

import torch
from torch import nn

PAPER_CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 256)
PAPER_FC_UNITS = (512, 512)


def _block(name, layer, norm):
    """``layer`` (as ``name``), batch norm and ReLU: the unit every hidden layer is."""
    return nn.Sequential(OrderedDict({name: layer, "bn": norm, "relu": nn.ReLU(inplace=True)}))


def pooled_size(size, n_pools=3):
    """Side length after ``n_pools`` 2x2 "same" max poolings (60 -> 30 -> 15 -> 8)."""
    return -(-size // 2**n_pools)  # n halvings rounded up are one division by 2**n rounded up


class DeepLocNet(nn.Module):
    """DeepLoc: 8 convolutional and 3 fully connected layers with batch normalisation.

    Every 3x3 convolution and hidden fully connected layer is followed by batch normalisation
    and ReLU; 2x2 "same" max pooling follows conv layers 2, 4 and 8 (60x60 crops: 30, 15, then
    8 pixels). The paper configuration (2 channels, 19 classes) has 10,988,947 parameters.

    Parameters
    ----------
    n_channels : int, default=2
        Input channels (protein, cytosolic marker).
    n_classes : int, default=19
        Output classes (the Chong et al. 2015 training set has 19).
    conv_channels : tuple of int, default=(64, 64, 128, 128, 256, 256, 256, 256)
        Feature maps of the conv layers (any length >= 1; pooling follows 2, 4 and the last).
    fc_units : tuple of int, default=(512, 512)
        Units of the hidden fully connected layers (``fc1``, ``fc2``, ...).
    crop_size : int, default=60
        Side of the square input crop (it sets the size of the first fully connected layer).
    dropout : float, default=0.0
        Dropout before the output layer (used when fine-tuning).
    bias : bool, default=False
        A bias before each batch normalisation, as in the reference code (redundant there).
    bn_eps : float, default=1e-3
        Batch normalisation epsilon (the reference code's value).
    bn_momentum : float, default=0.1
        PyTorch momentum of the running statistics (the reference code's decay 0.5 equals ``0.5``).
    normalize_logits : bool, default=False
        Batch-normalise the output logits, as the reference code does.
    init_std : float, default=0.1
        Standard deviation of the truncated-normal weight initialisation.

    Examples
    --------
    >>> import torch
    >>> from sklearn_deeploc import DeepLocNet
    >>> net = DeepLocNet(n_classes=4, conv_channels=(8,) * 8, fc_units=(16, 16))
    >>> x = torch.rand(3, 2, 60, 60)
    >>> net(x).shape
    torch.Size([3, 4])
    >>> net.forward_features(x, "conv8").shape
    torch.Size([3, 8])
    """

    def __init__(
        self,
        n_channels=2,
        n_classes=19,
        conv_channels=PAPER_CONV_CHANNELS,
        fc_units=PAPER_FC_UNITS,
        crop_size=60,
        dropout=0.0,
        bias=False,
        bn_eps=1e-3,
        bn_momentum=0.1,
        normalize_logits=False,
        init_std=0.1,
    ):
        super().__init__()
        self.architecture = {  # as model folders store them: plain JSON types
            "n_channels": int(n_channels),
            "n_classes": int(n_classes),
            "conv_channels": [int(c) for c in conv_channels],
            "fc_units": [int(u) for u in fc_units],
            "crop_size": int(crop_size),
            "dropout": float(dropout),
            "bias": bool(bias),
            "bn_eps": float(bn_eps),
            "bn_momentum": float(bn_momentum),
            "normalize_logits": bool(normalize_logits),
            "init_std": float(init_std),
        }
        if not conv_channels or not fc_units:
            raise ValueError(
                "DeepLocNet needs at least one conv layer and one FC layer; got "
                f"conv_channels={conv_channels!r}, fc_units={fc_units!r}."
            )
        self.features_frozen = False
        norm = {"eps": bn_eps, "momentum": bn_momentum}

        # Pool after conv 2, 4 and the last conv; ceil_mode gives TF's "same" pooling.
        n_conv = len(conv_channels)
        pool_after = sorted({min(2, n_conv), min(4, n_conv), n_conv})
        self.last_conv = f"conv{n_conv}"
        layers, in_channels = OrderedDict(), n_channels
        for i, out_channels in enumerate(conv_channels, start=1):
            conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
            layers[f"conv{i}"] = _block("conv", conv, nn.BatchNorm2d(out_channels, **norm))
            if i in pool_after:
                layers[f"pool{pool_after.index(i) + 1}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
            in_channels = out_channels
        self.features = nn.Sequential(layers)

        side = pooled_size(crop_size, len(pool_after))
        in_features = in_channels * side * side
        fc = OrderedDict()
        for i, units in enumerate(fc_units, start=1):
            linear = nn.Linear(in_features, units, bias=bias)
            fc[f"fc{i}"] = _block("linear", linear, nn.BatchNorm1d(units, **norm))
            in_features = units
        self.fc = nn.Sequential(fc)

        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_features, n_classes, bias=bias or not normalize_logits)
        self.head_bn = nn.BatchNorm1d(n_classes, **norm) if normalize_logits else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        """Truncated-normal weights (std ``init_std``, cut at 2 std), zero biases."""
        std = self.architecture["init_std"]
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def freeze_features(self):
        """Freeze the conv layers: no gradients, and eval mode even while the rest trains."""
        self.features.requires_grad_(False)
        self.features_frozen = True
        return self.train(self.training)

    def train(self, mode=True):
        """Set train/eval mode; frozen conv layers (:meth:`freeze_features`) stay in eval."""
        super().train(mode)
        if self.features_frozen:
            self.features.eval()
        return self

    def _activations(self, x):
        """``(layer, activations)`` for each of :attr:`feature_layers`, computed as far as asked."""
        for name, module in self.features.named_children():
            x = module(x)
            if name == self.last_conv:
                # Max over space: pooling after the last conv does not change it.
                yield "conv8", torch.amax(x, dim=(2, 3))
        x = torch.flatten(x, 1)
        for name, module in self.fc.named_children():
            x = module(x)
            yield name, x

    def forward_features(self, x, layer="fc2"):
        """Activations ``(n, n_features)`` of ``layer`` for preprocessed crops ``x``.

        ``layer`` is ``"conv8"`` (the last conv layer, max over space: ``conv_channels[-1]``
        values) or ``"fcK"`` (the K-th hidden FC layer after ReLU).
        """
        for name, activations in self._activations(x):
            if name == layer:
                return activations
        raise ValueError(f"layer must be one of {self.feature_layers}; got {layer!r}.")

    @property
    def feature_layers(self):
        """Names accepted by :meth:`forward_features`."""
        return ("conv8", *(name for name, _ in self.fc.named_children()))

    def forward(self, x):
        """Logits of shape (n, n_classes) for crops of shape (n, C, crop, crop)."""
        x = self.fc(torch.flatten(self.features(x), 1))
        return self.head_bn(self.head(self.dropout(x)))
