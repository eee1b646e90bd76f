"""DeepLocModel: folders, predictions, pickling, and folders that must be refused."""

import inspect
import itertools
import json
import os
import pickle
import resource
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import assert_same_float32
from safetensors.torch import load_file, save_file

import sklearn_deeploc.model as model_module
from sklearn_deeploc import DeepLocClassifier, DeepLocModel, DeepLocNet, load_pretrained
from sklearn_deeploc.model import ModelFolderError


@pytest.fixture
def tiny_model():
    net = DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 6))
    return DeepLocModel(net, ["ER", "NUCLEI", "VACUOLE"])


def _edit_config(folder, edit):
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_folder_round_trip_keeps_everything(tiny_model, tmp_path, rng):
    X = rng.random((4, 2, 64, 64)) * 1000
    tiny_model.preprocessing["tta"] = False
    folder = tiny_model.save(tmp_path / "model")
    loaded = DeepLocModel.load(folder)
    assert_same_float32(loaded.predict_proba(X), tiny_model.predict_proba(X))
    assert_same_float32(loaded.features(X, "fc1"), tiny_model.features(X, "fc1"))
    assert loaded.config() == tiny_model.config()
    assert loaded.preprocessing["tta"] is False
    assert loaded.digest() == tiny_model.digest()


def test_predictions_equal_the_classifiers(source_model, cells):
    X, _ = cells
    # The classifier predicts in batches of its batch_size, the model in 128s.
    assert_same_float32(source_model.model_.predict_proba(X), source_model.predict_proba(X))
    assert source_model.net_.module_ is source_model.model_.network


def test_classifier_tta_survives_save_and_load(source_folder, source_model, tmp_path, cells):
    X, _ = cells
    centre_only = load_pretrained(source_folder).set_params(tta=False)
    loaded = load_pretrained(centre_only.save_pretrained(tmp_path / "model"))
    assert loaded.tta is False
    expected = source_model.model_.to("cpu").predict_proba(X, tta=False)
    assert_same_float32(loaded.predict_proba(X), expected)


def test_pickle_loads_in_a_fresh_process(tiny_model, tmp_path, rng):
    X = rng.random((3, 2, 64, 64)).astype(np.float32)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(tiny_model))
    np.save(tmp_path / "X.npy", X)
    script = (
        "import pickle, sys, numpy as np\n"
        "folder = sys.argv[1]\n"
        "m = pickle.load(open(folder + '/model.pkl', 'rb'))\n"
        "np.save(folder + '/p.npy', m.predict_proba(np.load(folder + '/X.npy')))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), tiny_model.predict_proba(X), atol=1e-6)


def test_a_gpu_model_pickles_as_a_cpu_model(tiny_model, monkeypatch):
    # No GPU here: pretend the network sits on one, as after training on CUDA.
    monkeypatch.setattr(model_module, "network_device", lambda net: torch.device("cuda", 0))
    state = tiny_model.__getstate__()
    assert state["network"] is not tiny_model.network
    assert state["_inference"] == {}
    assert all(t.device.type == "cpu" for t in state["network"].state_dict().values())


def test_inference_copy_is_built_once(tiny_model, rng):
    X = rng.random((2, 2, 64, 64))
    tiny_model.predict_proba(X)
    first = tiny_model.inference_network()
    tiny_model.features(X)
    assert tiny_model.inference_network() is first


def test_to_returns_a_new_model_and_leaves_the_source(tiny_model):
    moved = tiny_model.to("cpu")
    assert moved is not tiny_model and moved.network is tiny_model.network


def test_missing_or_not_a_folder(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DeepLocModel.load(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFolderError, match="file is a file, not a model folder"):
        DeepLocModel.load(tmp_path / "file")
    with pytest.raises(ModelFolderError, match="got an empty path"):
        load_pretrained("")
    folder = tiny_model.save(tmp_path / "model")
    with pytest.raises(ModelFolderError, match=rf"give the folder .* \({folder}\)"):
        DeepLocModel.load(folder / "config.json")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["classes"].append("EXTRA"), "classes: expected a list of 3 distinct"),
        (lambda c: c["classes"].pop(), "classes: expected a list of 3 distinct"),
        (lambda c: c.update(classes=[]), "classes: expected a list of 3"),
        (lambda c: c.update(format_version=99), "format_version"),
        (lambda c: c.update(format_version=True), "format_version: .* got True"),
        (lambda c: c.pop("format_version"), "expected the key 'format_version'"),
        (lambda c: c.update(format_version=1, more=0), "format_version: expected 2.* got 1"),
        (lambda c: c.update(more=0), r"expected only the keys \[.*\]; got \['more'\]"),
        (lambda c: c.update(classes=[10**400, 1, 2]), "classes: expected .* within int64"),
        (lambda c: c.pop("architecture"), "the key 'architecture'"),
        (lambda c: c["architecture"].update(fc_units=[0, 8]), "fc_units"),
        (lambda c: c["architecture"].update(conv_channels="64"), "conv_channels"),
        (lambda c: c["architecture"].update(n_channels=True), "n_channels"),
        (lambda c: c["architecture"].update(dropout=2.0), "dropout"),
        (lambda c: c["architecture"].update(bn_eps=0), r"bn_eps: expected a number in \(0, 1\]"),
        (lambda c: c["architecture"].update(n_classes=2**70), r"n_classes: .* \[1, 65536\]"),
        (
            lambda c: c["architecture"].update(conv_channels=[10**9] * 8),
            r"conv_channels: expected a list of 1 to 64 integers in \[1, 65536\]",
        ),
        (
            lambda c: (
                c["architecture"].update(crop_size=10**10),
                c["preprocessing"].update(image_size=10**10),
            ),
            r"crop_size: expected an integer in \[1, 4096\]",
        ),
        (lambda c: c["architecture"].update(magic=1), "only DeepLocNet arguments"),
        (lambda c: c["preprocessing"].update(stretch=[99, 1]), "stretch"),
        (lambda c: c["preprocessing"].update(stretch_variant="x"), "stretch_variant"),
        (lambda c: c["preprocessing"].update(image_size=32), "crop_size"),
        (lambda c: c["preprocessing"].update(image_size=10**12), "image_size: expected an integer"),
        (lambda c: c["preprocessing"].update(tta="yes"), "tta"),
        (lambda c: c.update(channel_names=["one"]), "channel_names"),
        (lambda c: c["preprocessing"].pop("stretch_variant"), "the key 'stretch_variant'"),
        (lambda c: c.update(preprocessing={}), "preprocessing: expected the key"),
    ],
)
def test_tampered_config_is_refused_by_name(tiny_model, tmp_path, edit, message):
    folder = tiny_model.save(tmp_path / "model")
    _edit_config(folder, edit)
    with pytest.raises(ModelFolderError, match=message):
        DeepLocModel.load(folder)


def test_the_architecture_schema_has_every_network_argument():
    assert set(model_module.ARCHITECTURE_SCHEMA) == set(inspect.signature(DeepLocNet).parameters)


def test_inference_options_take_the_stored_tta_and_count_only_the_cells(tiny_model):
    tiny_model.preprocessing["tta"] = False
    options = tiny_model.check_inference_options(None, 10**12, "fp32", n_items=3)
    assert options == (False, 10**12, "fp32")


def test_a_bad_constructor_argument_is_named():
    net = DeepLocNet(n_classes=2, conv_channels=(4,) * 8, fc_units=(8, 8))
    with pytest.raises(ModelFolderError, match=r"DeepLocModel.preprocessing.stretch: .*\[99, 1\]"):
        DeepLocModel(net, ["a", "b"], preprocessing={"stretch": [99, 1]})
    with pytest.raises(ModelFolderError, match=r"DeepLocModel.classes: expected a list of 2"):
        DeepLocModel(net, ["a", "b", "c"])
    with pytest.raises(ModelFolderError, match=r"DeepLocModel.classes: .* all strings or all"):
        DeepLocModel(net, [1, "a"])  # numpy would make them two strings
    with pytest.raises(ModelFolderError, match=r"DeepLocModel.classes: expected a list of 2"):
        DeepLocModel(net, [])
    with pytest.raises(ModelFolderError, match=r"DeepLocModel.channel_names: .* got 'xy'"):
        DeepLocModel(net, ["a", "b"], channel_names="xy")
    with pytest.raises(TypeError, match="network must be a DeepLocNet; got str"):
        DeepLocModel("net", ["a", "b"])
    model = DeepLocModel(net, np.array(["a", "b"]), channel_names=np.array(["GFP", "RFP"]))
    assert model.config()["channel_names"] == ["GFP", "RFP"]


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"format": ' + "9" * 5000 + "}", b"\xff\xfe{}"],
    ids=["nested too deeply", "5000-digit integer", "not UTF-8"],
)
def test_unreadable_config_is_refused_naming_the_file(tiny_model, tmp_path, text):
    folder = tiny_model.save(tmp_path / "model")
    config = folder / "config.json"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ModelFolderError, match=f"{config} is not readable JSON"):
        DeepLocModel.load(folder)


@pytest.mark.parametrize(
    "architecture",
    [{"fc_units": [30_000, 30_000]}, {"conv_channels": [65536] * 8}],
)
def test_huge_config_is_refused_fast_without_allocating(tiny_model, tmp_path, architecture):
    folder = tiny_model.save(tmp_path / "model")
    _edit_config(folder, lambda c: c["architecture"].update(architecture))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(ModelFolderError, match="has shape"):
        DeepLocModel.load(folder)
    assert time.perf_counter() - start < 1.0  # a bound on work done, not a benchmark
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown < 100 * 1024


def test_weights_that_do_not_fit_are_refused(tiny_model, tmp_path):
    folder = tiny_model.save(tmp_path / "model")
    state = load_file(folder / "weights.safetensors")
    del state["head.weight"]
    save_file(state, str(folder / "weights.safetensors"))
    with pytest.raises(ModelFolderError, match=r"missing tensors \['head.weight'\]"):
        DeepLocModel.load(folder)


def test_integer_weights_are_refused(tiny_model, tmp_path):
    folder = tiny_model.save(tmp_path / "model")
    state = load_file(folder / "weights.safetensors")
    state["head.weight"] = state["head.weight"].to(torch.int32)
    save_file(state, str(folder / "weights.safetensors"))
    with pytest.raises(ModelFolderError, match=r"head.weight is I32; expected F32"):
        DeepLocModel.load(folder)


def test_double_or_non_finite_weights_are_refused(tiny_model, tmp_path):
    folder = tiny_model.save(tmp_path / "model")
    state = load_file(folder / "weights.safetensors")
    save_file(
        {**state, "head.weight": state["head.weight"].double()}, str(folder / "weights.safetensors")
    )
    with pytest.raises(ModelFolderError, match=r"head.weight is F64; expected F32"):
        DeepLocModel.load(folder)
    state["head.weight"][0, 0] = float("nan")
    save_file(state, str(folder / "weights.safetensors"))
    with pytest.raises(ModelFolderError, match="head.weight holds NaN or infinite values"):
        DeepLocModel.load(folder)


def test_negative_batch_norm_variance_is_refused(tiny_model, tmp_path):
    folder = tiny_model.save(tmp_path / "model")
    state = load_file(folder / "weights.safetensors")
    state["features.conv3.bn.running_var"][1] = -1.0
    save_file(state, str(folder / "weights.safetensors"))
    with pytest.raises(ModelFolderError, match="conv3.bn.running_var holds negative variances"):
        DeepLocModel.load(folder)


def test_damaged_weights_file_is_refused(tiny_model, tmp_path):
    folder = tiny_model.save(tmp_path / "model")
    (folder / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ModelFolderError, match="not a readable safetensors file"):
        DeepLocModel.load(folder)


def test_pretrained_accepts_a_model(tiny_model, make_tiny):
    from sklearn_deeploc.datasets import make_yeast_cells

    X, y = make_yeast_cells(3, ["ER", "GOLGI"], random_state=0)
    clf = make_tiny(pretrained=tiny_model, max_iter=2).fit(X, y)
    assert isinstance(clf, DeepLocClassifier) and list(clf.classes_) == ["ER", "GOLGI"]
    assert clf.model_.channel_names == tiny_model.channel_names


def _two_models():
    torch.manual_seed(0)
    nets = [DeepLocNet(n_classes=3, conv_channels=(4,) * 8, fc_units=(8, 6)) for _ in range(2)]
    return DeepLocModel(nets[0], ["ER", "NUCLEI", "VACUOLE"]), DeepLocModel(nets[1], list("abc"))


def _interrupt_rename(monkeypatch, n):
    """Make the n-th rename (os.rename or os.replace) raise KeyboardInterrupt, as Ctrl-C would."""
    count = itertools.count(1)

    def interrupting(real):
        def rename(*args, **kwargs):
            if next(count) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        return rename

    monkeypatch.setattr(os, "rename", interrupting(os.rename))
    monkeypatch.setattr(os, "replace", interrupting(os.replace))


def test_an_interrupted_save_leaves_one_whole_model(tmp_path, monkeypatch):
    old, new = _two_models()
    folder = tmp_path / "model"
    for step in itertools.count(1):
        shutil.rmtree(folder, ignore_errors=True)
        old.save(folder)
        with monkeypatch.context() as patch:
            _interrupt_rename(patch, step)
            try:
                new.save(folder)
                finished = True
            except KeyboardInterrupt:
                finished = False
        assert DeepLocModel.load(folder).digest() in (old.digest(), new.digest())
        if finished:
            break
    assert step > 2 and DeepLocModel.load(folder).digest() == new.digest()


def test_saving_over_a_folder_keeps_its_other_files(tmp_path):
    old, new = _two_models()
    folder = old.save(tmp_path / "model")
    (folder / "notes.txt").write_text("keep me")
    (folder / "plots").mkdir()
    (folder / "plots" / "curve.svg").write_text("<svg/>")
    new.save(folder)
    assert DeepLocModel.load(folder).digest() == new.digest()
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (folder / "plots" / "curve.svg").read_text() == "<svg/>"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # nothing left beside it


def test_saved_files_are_as_readable_as_the_umask_allows(tiny_model, tmp_path):
    previous = os.umask(0o027)
    try:
        folder = tiny_model.save(tmp_path / "model")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}
    assert modes == {"model": 0o750, "config.json": 0o640, "weights.safetensors": 0o640}


def test_save_refuses_a_file_and_the_working_directory(tiny_model, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="a file is there"):
        tiny_model.save(tmp_path / "file")
    folder = tiny_model.save(tmp_path / "model")
    monkeypatch.chdir(folder)
    with pytest.raises(ValueError, match="holds the current working directory"):
        tiny_model.save(".")
    assert DeepLocModel.load(folder).digest() == tiny_model.digest()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, X: m.calibrate(X, n_cells=-1), "n_cells must be a positive integer; got -1"),
        (lambda m, X: m.calibrate(X, n_cells=2.5), "n_cells must be a positive integer"),
        (lambda m, X: m.calibrate(X, n_cells=0), "n_cells must be a positive integer; got 0"),
        (lambda m, X: m.predict_proba(X, tta="no"), "tta must be True, False or None"),
        (lambda m, X: m.check_inference_options(1, 8, "fp32"), "tta must be True, False or None"),
        (lambda m, X: m.features(X, batch_size=0), "batch_size must be a positive integer"),
        (lambda m, X: m.agreement(X, "fp64"), "precision must be one of"),
        (lambda m, X: m.to("meta"), "device must be 'auto', 'cpu', .*; got 'meta'"),
    ],
    ids=[
        "negative",
        "fraction",
        "zero",
        "tta-string",
        "tta-int",
        "batch-zero",
        "precision",
        "meta",
    ],
)
def test_model_arguments_are_checked(tiny_model, rng, call, match):
    X = rng.random((3, 2, 64, 64), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        call(tiny_model, X)
