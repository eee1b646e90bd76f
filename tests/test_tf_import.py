"""Importing TensorFlow 1 DeepLoc checkpoints written by real TensorFlow.

The fixtures come from tests/fixtures/make_tf_checkpoint.py (tensorflow-cpu, not
needed here): a reduced-width graph with the reference naming, committed with
the logits and fc_2 activations TensorFlow computed; and, when the generator was
run with --full, a paper-width graph (not committed).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sklearn_deeploc import DeepLocFeaturizer, load_pretrained
from sklearn_deeploc.cli import main
from sklearn_deeploc.tf_checkpoint import read_checkpoint
from sklearn_deeploc.tf_import import CHONG_CLASSES, from_tf_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "tf_deeploc_small" / "model.ckpt-5000"
FULL = FIXTURES / "tf_deeploc_full" / "model.ckpt-5000"


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "tf_deeploc_small" / "expected.npz")


def test_imported_model_reproduces_tensorflow(expected):
    model = from_tf_checkpoint(SMALL)
    net = model.network.eval()
    x = torch.from_numpy(expected["inputs_nchw"])
    with torch.no_grad():
        logits = net(x).numpy()
        fc2 = net.forward_features(x, "fc2").numpy()
        fast = model.inference_network()(x.contiguous(memory_format=torch.channels_last)).numpy()
    assert np.abs(logits - expected["logits"]).max() < 1e-4
    assert np.abs(fc2 - expected["fc2"]).max() < 1e-4
    assert np.abs(fast - expected["logits"]).max() < 1e-4


def test_mapping_ignores_optimizer_slots_and_reports_every_parameter():
    model, mapping = from_tf_checkpoint(SMALL, return_mapping=True)
    assert not any("Adam" in name for name in mapping.values())
    assert mapping["features.conv1.conv.weight"] == "conv_1/weights/Variable"
    assert mapping["head_bn.running_var"].endswith("ExponentialMovingAverage")
    parameters = {k for k in model.network.state_dict() if "num_batches" not in k}
    assert set(mapping) == parameters


def test_model_folder_and_featurizer(tmp_path, expected):
    assert main(["import-tf", str(SMALL), "-o", str(tmp_path / "chong")]) == 0
    model = load_pretrained(tmp_path / "chong")
    assert model.model_.preprocessing["stretch_variant"] == "reference"
    assert model.model_.channel_names == ["GFP", "RFP"]
    assert list(model.classes_) == [f"class_{i}" for i in range(5)]
    crops = np.random.default_rng(0).random((3, 2, 64, 64)).astype(np.float32) * 1000
    features = DeepLocFeaturizer(tmp_path / "chong").fit(crops).transform(crops)
    assert features.shape == (3, 12)


def test_reader_handles_prefix_index_and_shard_paths():
    by_prefix = read_checkpoint(SMALL)
    by_index = read_checkpoint(str(SMALL) + ".index")
    assert by_prefix.keys() == by_index.keys()
    assert by_prefix["conv_1/weights/Variable"].shape == (3, 3, 2, 4)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="is not a TensorFlow checkpoint"):
        from_tf_checkpoint(tmp_path / "nothing")
    (tmp_path / "fake.index").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="bad table footer"):
        from_tf_checkpoint(tmp_path / "fake")
    shutil.copy(str(SMALL) + ".index", tmp_path / "lost.index")
    with pytest.raises(ValueError, match="data shard .* is missing"):
        from_tf_checkpoint(tmp_path / "lost")


def test_checkpoint_of_another_graph(monkeypatch):
    import sklearn_deeploc.tf_import as reader

    tensors = read_checkpoint(SMALL)
    missing_layer = {k: v for k, v in tensors.items() if "fc_2" not in k.split("/")[0]}
    monkeypatch.setattr(reader, "read_checkpoint", lambda path: missing_layer)
    with pytest.raises(
        ValueError, match=r"not the DeepLoc reference graph.*missing layers \['fc_2'\]"
    ):
        from_tf_checkpoint(SMALL)
    no_conv = {k: v for k, v in tensors.items() if "conv" not in k}
    monkeypatch.setattr(reader, "read_checkpoint", lambda path: no_conv)
    with pytest.raises(ValueError, match=r"missing layers \['conv_1', 'conv_2'"):
        from_tf_checkpoint(SMALL)
    no_beta = {k: v for k, v in tensors.items() if not (k.startswith("fc_2") and "beta" in k)}
    monkeypatch.setattr(reader, "read_checkpoint", lambda path: no_beta)
    with pytest.raises(ValueError, match="not a DeepLoc graph: layer 'fc_2' lacks"):
        from_tf_checkpoint(SMALL)


def test_checkpoint_without_conv_8_is_refused(monkeypatch):
    import sklearn_deeploc.tf_import as reader

    tensors = read_checkpoint(SMALL)
    seven_conv = {k: v for k, v in tensors.items() if not k.startswith("conv_8")}
    monkeypatch.setattr(reader, "read_checkpoint", lambda path: seven_conv)
    with pytest.raises(ValueError, match=r"missing layers \['conv_8'\]"):
        from_tf_checkpoint(SMALL)


def test_shape_mismatch():
    with pytest.raises(
        ValueError,
        match=r"fc_1/weights/Variable has shape \[512, 16\]; expected \[200, 16\] \(5x5 positions",
    ):
        from_tf_checkpoint(SMALL, crop_size=40)
    with pytest.raises(ValueError, match="6 class names for a model with 5 outputs"):
        from_tf_checkpoint(SMALL, classes=list("abcdef"))


@pytest.mark.skipif(
    not Path(str(FULL) + ".index").exists(),
    reason="run tests/fixtures/make_tf_checkpoint.py --full to create it",
)
def test_full_width_graph_converts():
    model = from_tf_checkpoint(FULL)
    assert model.architecture["conv_channels"] == [64, 64, 128, 128, 256, 256, 256, 256]
    assert model.architecture["fc_units"] == [512, 512]
    assert list(model.classes) == list(CHONG_CLASSES)
    assert model.network.fc.fc1.linear.weight.shape == (512, 8 * 8 * 256)


MOVING_VARIANCE = (
    "conv_2_batch_norm/conv_2/batch_norm/conv_2_batch_norm/moments/Squeeze_1/"
    "ExponentialMovingAverage"
)


def _tampered(name, value):
    return lambda tensors: tensors.update({name: np.asarray(value, dtype=np.float32)})


def _infinite_weight(tensors):
    tensors["fc_2/weights/Variable"][0, 0] = np.inf


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            _tampered("conv_3/weights/Variable", np.ones((3, 3, 5, 8))),
            r"conv_3/weights/Variable has shape \[3, 3, 5, 8\]; expected \[3, 3, 4, 8\] "
            r"\(3x3 kernels over 4 input channels\)",
        ),
        (
            _tampered("conv_1/weights/Variable", 1.0),
            r"conv_1/weights/Variable has shape \[\]; expected 4 non-empty dimensions",
        ),
        (
            _tampered("fc_2/weights/Variable", np.ones((12, 12))),
            r"fc_2/weights/Variable has shape \[12, 12\]; expected \[16, 12\]",
        ),
        (
            _tampered("conv_3/biases/Variable", np.ones(3)),
            r"conv_3/biases/Variable has shape \[3\]; expected \[8\] \(one value per output",
        ),
        (
            _tampered(MOVING_VARIANCE, -np.ones(4)),
            f"{MOVING_VARIANCE} holds negative variances",
        ),
        (_infinite_weight, "fc_2/weights/Variable holds NaN or infinite values"),
    ],
    ids=["conv inputs", "scalar weights", "fc inputs", "bias length", "variance", "infinity"],
)
def test_tensors_that_do_not_fit_are_refused_by_name(monkeypatch, tamper, message):
    import sklearn_deeploc.tf_import as reader

    tensors = read_checkpoint(SMALL)
    tamper(tensors)
    monkeypatch.setattr(reader, "read_checkpoint", lambda path: tensors)
    with pytest.raises(ValueError, match=message):
        from_tf_checkpoint(SMALL)


@pytest.mark.parametrize("crop_size", [0, 65, "60", True, 60.0])
def test_crop_size_is_checked(crop_size):
    with pytest.raises(ValueError, match=r"crop_size must be an integer from 1 to 64 .*; got"):
        from_tf_checkpoint(SMALL, crop_size=crop_size)
