import matplotlib
import numpy as np
import pytest
import torch

from sklearn_deeploc import DeepLocNet
from sklearn_deeploc.metrics import evaluate, per_class_average_precision
from sklearn_deeploc.preprocessing import center_crop, percentile_stretch
from sklearn_deeploc.visualize import gaussian_blur, maximize_activation

matplotlib.use("Agg")


def test_evaluate_known_answers():
    y = np.array(["a", "a", "b", "c"])
    proba = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6]])
    result = evaluate(y, proba, ["a", "b", "c"])
    assert result["accuracy"] == 0.75
    np.testing.assert_allclose(result["confusion"].sum(axis=1), 1)
    assert result["confusion"].loc["a", "b"] == 0.5
    ap = per_class_average_precision(y, proba, ["a", "b", "c"])
    assert ap["a"] == 1.0 and ap["c"] == 1.0
    assert ap["b"] == pytest.approx(0.5)
    assert result["mean_average_precision"] == pytest.approx(ap.mean())


@pytest.fixture
def calibrated_net(cells):
    """A tiny network whose batch norm is calibrated on real (synthetic) cells."""
    torch.manual_seed(0)
    net = DeepLocNet(
        n_classes=4, conv_channels=(4, 4, 8, 8, 8, 8, 8, 8), fc_units=(16, 16), bn_momentum=1.0
    )
    crops = center_crop(percentile_stretch(torch.from_numpy(cells[0])), 60)
    net.train()
    net(crops)
    return net.eval(), crops


def test_activation_maximisation_raises_the_target_logit(calibrated_net):
    net, crops = calibrated_net
    with torch.no_grad():
        spread = net(crops)[:, 2].std().item()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    image, logits = maximize_activation(net, 2, n_steps=60, random_state=0)
    assert image.shape == (2, 60, 60) and 0 <= image.min() and image.max() <= 1
    # A clear margin: ten times the logit's spread over real cells.
    assert logits[-1] - logits[0] > 10 * spread
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_activation_maximisation_keeps_the_marker_cell(calibrated_net):
    net, _ = calibrated_net
    yy, xx = np.mgrid[:60, :60]
    marker = ((yy - 30) ** 2 + (xx - 30) ** 2 < 200).astype(np.float32)
    image, logits = maximize_activation(net, 0, n_steps=20, marker=marker, random_state=0)
    np.testing.assert_array_equal(image[1], marker)
    assert image[0][marker == 0].max() == 0
    assert logits[-1] > logits[0]


def test_gaussian_blur_preserves_constants():
    x = torch.full((1, 2, 10, 10), 3.0)
    torch.testing.assert_close(gaussian_blur(x, 1.0), x)


def test_activation_maximisation_takes_a_model_and_a_class_name(calibrated_net):
    from sklearn_deeploc import DeepLocModel

    net, _ = calibrated_net
    model = DeepLocModel(net, ["ER", "NUCLEI", "VACUOLE", "GOLGI"])
    by_name = maximize_activation(model, "VACUOLE", n_steps=5, random_state=0)
    by_index = maximize_activation(net, 2, n_steps=5, random_state=0)
    np.testing.assert_array_equal(by_name[0], by_index[0])


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"target": 4}, "class index from 0 to 3; got 4"),
        ({"target": "ER"}, "class index \\(0 to 3\\) or one of the classes"),
        ({"n_steps": -1}, r"'n_steps' .* int in the range \[0, inf\). Got -1"),
        ({"blur_every": 0}, "'blur_every' .* a positive integer. Got 0"),
        ({"step_size": float("nan")}, "'step_size' .* float in the range .* Got nan"),
        ({"marker": np.ones((40, 40))}, "crop of the network's size, \\(60, 60\\); got shape"),
        ({"marker": np.full((60, 60), 566.0)}, "stretched crop, finite with values in \\[0, 1\\]"),
        ({"marker": np.ones((60, 60)), "marker_channel": 2}, "marker_channel must be a channel"),
        ({"marker": np.eye(60), "marker_channel": True}, "marker_channel must be .* got True"),
        ({"marker": np.zeros((60, 60))}, "marker is constant \\(0.0\\); expected a real cell"),
    ],
    ids=repr,
)
def test_activation_maximisation_refuses_bad_arguments(calibrated_net, arguments, match):
    net, _ = calibrated_net
    arguments = {"target": 0, "n_steps": 2, **arguments}
    with pytest.raises(ValueError, match=match):
        maximize_activation(net, arguments.pop("target"), **arguments)


def test_a_blur_wider_than_the_crop_costs_no_more_than_the_crop():
    x = torch.rand(1, 2, 9, 9)
    blurred = gaussian_blur(x, 1e9)  # a kernel of 6e9 taps, were it not capped at the image
    assert blurred.shape == x.shape and torch.isfinite(blurred).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda x: percentile_stretch(x, (99.9, 0.1)), "percentiles must be two percentiles"),
        (lambda x: percentile_stretch(x, (0, 101)), "percentiles must be two percentiles"),
        (lambda x: percentile_stretch(x[0]), r"crops of shape \(n, C, H, W\); got shape \(2, 8"),
        (lambda x: center_crop(x, 10), "size must be a crop side from 1 to the image's 8 pixels"),
        (lambda x: center_crop(x, 0), "size must be a crop side .*; got 0"),
    ],
    ids=["reversed", "beyond-100", "3-D", "larger", "zero"],
)
def test_preprocessing_refuses_what_would_give_wrong_crops(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.rand(2, 2, 8, 8))


def test_activation_maximisation_refuses_what_is_not_a_network():
    with pytest.raises(TypeError, match="DeepLocNet, a DeepLocModel or a fitted"):
        maximize_activation("model folder", 0)
