import pytest
import torch

from sklearn_deeploc import DeepLocNet
from sklearn_deeploc.network import pooled_size

TINY = {"conv_channels": (4, 4, 8, 8, 8, 8, 8, 8), "fc_units": (16, 12)}


@pytest.mark.parametrize("crop_size", [60, 64])
def test_output_shape_follows_crop_size(crop_size):
    net = DeepLocNet(n_classes=5, crop_size=crop_size, **TINY).eval()
    assert net(torch.rand(3, 2, crop_size, crop_size)).shape == (3, 5)
    assert net.fc.fc1.linear.in_features == 8 * pooled_size(crop_size) ** 2


def test_same_pooling_sizes():
    assert [pooled_size(60, k) for k in (1, 2, 3)] == [30, 15, 8]


def test_paper_configuration_parameter_count():
    net = DeepLocNet()
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert n_params == 10_988_947
    assert n_params > 10_000_000
    assert net.fc.fc1.linear.in_features == 8 * 8 * 256
    assert [b.conv.out_channels for n, b in net.features.named_children() if "conv" in n] == [
        64,
        64,
        128,
        128,
        256,
        256,
        256,
        256,
    ]


def test_forward_features_sizes():
    net = DeepLocNet(n_classes=3, **TINY).eval()
    x = torch.rand(2, 2, 60, 60)
    assert net.forward_features(x, "conv8").shape == (2, 8)
    assert net.forward_features(x, "fc1").shape == (2, 16)
    assert net.forward_features(x, "fc2").shape == (2, 12)
    with pytest.raises(ValueError, match="layer must be one of"):
        net.forward_features(x, "fc3")


def test_batch_norm_before_every_relu_and_truncated_init():
    torch.manual_seed(0)  # the std bound below holds for most draws of so few weights, not all
    net = DeepLocNet(**TINY)
    blocks = [*net.features.children(), *net.fc.children()]
    for block in (b for b in blocks if isinstance(b, torch.nn.Sequential)):
        names = [name for name, _ in block.named_children()]
        assert names.index("bn") == names.index("relu") - 1
    weights = net.features.conv1.conv.weight
    assert weights.abs().max() <= 0.2 + 1e-6
    assert 0.05 < weights.std() < 0.1


def test_empty_configuration_is_rejected():
    with pytest.raises(ValueError, match="at least one conv layer"):
        DeepLocNet(conv_channels=())
