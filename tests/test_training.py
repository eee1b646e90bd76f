"""Training: checkpoints that resume exactly, mixed precision, batches on the device, progress."""

import io
import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import SOURCE_CLASSES, TINY_NET, tiny_classifier
from safetensors import safe_open

from sklearn_deeploc import checkpoints as checkpoints_module
from sklearn_deeploc import load_pretrained
from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import make_yeast_cells, save_deeploc_hdf5
from sklearn_deeploc.jobs import checkpoint_folder
from sklearn_deeploc.preprocessing import random_augment, stretch_as_stored
from sklearn_deeploc.training import CellBatches, TrainingInterrupted, place_crops

# Dropout and a validation split, so that torch's generator and keep-best are both resumed.
RUN = {"max_iter": 12, "validation_interval": 5, "checkpoint_interval": 2, "dropout": 0.3}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks train fastest on one thread, and never spin-wait on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def interrupt_after(monkeypatch, steps):
    """Ctrl-C while the training batch after ``steps`` steps is being prepared."""
    prepare = CellBatches.__getitem__
    served = {"batches": 0}

    def prepare_or_stop(self, indices):
        if self.augment:
            served["batches"] += 1
            if served["batches"] > steps:
                raise KeyboardInterrupt
        return prepare(self, indices)

    monkeypatch.setattr(CellBatches, "__getitem__", prepare_or_stop)


def history_without_durations(clf):
    return [{k: v for k, v in epoch.items() if k != "dur"} for epoch in clf.history_]


@pytest.fixture(scope="module")
def uninterrupted(cells, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    return tiny_classifier(**RUN, checkpoint_dir=str(folder)).fit(*cells), folder


@pytest.mark.parametrize(
    ("steps", "kept"),
    [(3, 2), (6, 6), (11, 10)],
    ids=["mid-epoch", "at-the-interrupted-step", "at-a-validation"],
)
def test_interrupted_run_resumes_to_the_uninterrupted_model(
    cells, make_tiny, uninterrupted, tmp_path, monkeypatch, steps, kept
):
    X, y = cells
    with monkeypatch.context() as patch:
        interrupt_after(patch, steps)
        with pytest.raises(TrainingInterrupted, match=f"after {steps} of 12 steps.*step {kept} "):
            make_tiny(**RUN, checkpoint_dir=str(tmp_path)).fit(X, y)
    resumed = make_tiny(**RUN, checkpoint_dir=str(tmp_path)).fit(X, y)
    reference, _ = uninterrupted
    np.testing.assert_allclose(resumed.predict_proba(X), reference.predict_proba(X), atol=1e-5)
    assert history_without_durations(resumed) == history_without_durations(reference)
    assert resumed.n_iter_ == 12


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(
    cells, make_tiny, uninterrupted, tmp_path, monkeypatch
):
    X, y = cells
    write = checkpoints_module.save_safetensors
    calls = {"n": 0}

    def write_or_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # inside the second checkpoint (step 4)
            raise KeyboardInterrupt
        write(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoints_module, "save_safetensors", write_or_die)
        with pytest.raises(TrainingInterrupted, match="checkpoint of step 2 "):
            make_tiny(**RUN, checkpoint_dir=str(tmp_path)).fit(X, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002"]
    resumed = make_tiny(**RUN, checkpoint_dir=str(tmp_path)).fit(X, y)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000012"]
    np.testing.assert_allclose(
        resumed.predict_proba(X), uninterrupted[0].predict_proba(X), atol=1e-5
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 0.01}, "parameters differ: lr: 0.001 -> 0.01"),
        ({"random_state": 1}, "random_state: 0 -> 1"),
        ({"sampling": "uniform"}, "balanced: true -> false"),
        ({"conv_channels": (4,) * 8}, "conv_channels"),
    ],
)
def test_a_checkpoint_of_other_parameters_is_refused(
    cells, make_tiny, uninterrupted, change, message
):
    with pytest.raises(ValueError, match=f"another training run.*{message}.*cross-validation"):
        make_tiny(**RUN, **change, checkpoint_dir=str(uninterrupted[1])).fit(*cells)


@pytest.mark.parametrize(
    ("other_data", "message"),
    [
        (lambda X, y: (X[:-1], y[:-1]), r'data differ: X: "shape \[24, 2, 64, 64\]'),
        (lambda X, y: (X, np.roll(y, 1)), "data differ: y: "),
    ],
    ids=["fewer-cells", "other-labels"],
)
def test_a_checkpoint_of_other_data_is_refused(
    cells, make_tiny, uninterrupted, other_data, message
):
    with pytest.raises(ValueError, match=message):
        make_tiny(**RUN, checkpoint_dir=str(uninterrupted[1])).fit(*other_data(*cells))


def test_a_finished_checkpoint_gives_the_model_back_whatever_the_device_or_verbosity(
    cells, make_tiny, uninterrupted, capsys
):
    reference, folder = uninterrupted
    again = make_tiny(**RUN, checkpoint_dir=str(folder), verbose=1, device="cpu").fit(*cells)
    assert f"resuming from {folder / 'step-000000012'} (step 12)" in capsys.readouterr().err
    # The same weights come back: exact, whichever device trained them.
    returned = again.model_.network.state_dict()
    for name, weights in reference.model_.network.state_dict().items():
        assert torch.equal(returned[name], weights.cpu()), name


def test_checkpoints_hold_no_pickle(uninterrupted):
    _, folder = uninterrupted
    (checkpoint,) = folder.iterdir()
    files = {path.name: path for path in checkpoint.iterdir()}
    assert sorted(files) == [
        "best.safetensors",
        "history.json",
        "optimizer.safetensors",
        "random.safetensors",
        "state.json",
        "weights.safetensors",
    ]
    for path in files.values():  # each file parses as what its name says: none is a pickle
        if path.suffix == ".json":
            json.loads(path.read_text())
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as tensors:
                assert all(tensors.get_tensor(name) is not None for name in tensors.keys())
    state = json.loads(files["state.json"].read_text())
    assert state["step"] == 12
    assert state["random"]["sampler"]["bit_generator"] == "PCG64"
    assert isinstance(state["random"]["augmentation"]["state"]["state"], int)


def test_a_killed_deeploc_train_resumes_when_run_again(cells, tmp_path):
    X, y = cells
    save_deeploc_hdf5(tmp_path / "cells.h5", X, y)
    arguments = [
        "train",
        str(tmp_path / "cells.h5"),
        "--conv-channels",
        *map(str, TINY_NET["conv_channels"]),
        "--fc-units",
        *map(str, TINY_NET["fc_units"]),
        "--max-iter",
        "60",
        "--batch-size",
        "8",
        "--checkpoint-every",
        "2",
    ]
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "sklearn_deeploc.cli", *arguments, "-o", str(killed)]
    # One thread, as in this process: the same arithmetic, so the same weights.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    checkpoints = checkpoint_folder(killed)
    while not list(checkpoints.glob("step-*")) and process.poll() is None:
        time.sleep(0.01)
    process.kill()  # SIGKILL; nothing to kill if the run has ended
    process.wait()
    assert not killed.exists(), "training finished before it could be killed"
    assert subprocess.run(command, capture_output=True, env=env).returncode == 0
    assert not checkpoints.exists()  # removed once the model folder is written
    assert main([*arguments, "-o", str(tmp_path / "uninterrupted")]) == 0
    np.testing.assert_allclose(
        load_pretrained(killed).predict_proba(X),
        load_pretrained(tmp_path / "uninterrupted").predict_proba(X),
        atol=1e-5,
    )


def test_deeploc_train_says_which_checkpoint_ctrl_c_kept(cells, tmp_path, monkeypatch, capsys):
    save_deeploc_hdf5(tmp_path / "cells.h5", *cells)
    interrupt_after(monkeypatch, 5)
    arguments = ["train", str(tmp_path / "cells.h5"), "-o", str(tmp_path / "model")]
    tiny = ["--conv-channels", "4", "4", "8", "8", "8", "8", "8", "8", "--fc-units", "16", "12"]
    code = main([*arguments, *tiny, "--max-iter", "8", "--checkpoint-every", "2"])
    assert code == 130
    assert "checkpoint of step 4 is kept in" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_bf16_training_reaches_the_accuracy_of_fp32(make_tiny):
    X, y = make_yeast_cells(12, SOURCE_CLASSES, random_state=0)
    X_new, y_new = make_yeast_cells(10, SOURCE_CLASSES, random_state=1)
    scores = {
        precision: make_tiny(max_iter=60, validation_fraction=0.0, precision=precision)
        .fit(X, y)
        .score(X_new, y_new)
        for precision in ("fp32", "bf16")
    }
    assert scores["fp32"] > 0.5  # well above chance (0.25)
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.15


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 trains on a GPU")
def test_fp16_training_needs_a_gpu(cells, make_tiny):
    with pytest.raises(ValueError, match="precision='fp16' needs a GPU"):
        make_tiny(precision="fp16", device="cpu").fit(*cells)


def test_a_training_batch_is_full_however_few_the_cells(cells, make_tiny):
    # Drawn with replacement: a batch of 10**11 from 24 cells holds 10**11 crops.
    with pytest.raises(ValueError, match="batch_size=100000000000 needs .* GB"):
        make_tiny(batch_size=10**11).fit(*cells)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("crops_on_host", [False, True])
def test_augmentation_on_the_device_equals_the_cpu_one(cells, device, crops_on_host):
    X, _ = cells
    preprocessing = {"stretch": [0.1, 99.9], "stretch_variant": "clip"}
    crops = place_crops(X, preprocessing, "cpu" if crops_on_host else device)
    batches = CellBatches(crops, np.zeros(len(X), int), 60, True, 7, device)
    indices = torch.tensor([3, 0, 3, 17, 9])
    x, _ = batches[indices]
    stretched = stretch_as_stored(torch.from_numpy(X), preprocessing)
    expected = random_augment(stretched[indices], 60, np.random.default_rng(7))
    assert x.device.type == device
    np.testing.assert_allclose(x.cpu().numpy(), expected.numpy(), atol=1e-6)


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_is_one_bar_on_a_terminal_and_plain_lines_elsewhere(
    cells, make_tiny, monkeypatch, terminal
):
    stream = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    make_tiny(max_iter=12, validation_interval=6, verbose=1).fit(*cells)
    output = stream.getvalue()
    assert ("\r" in output) == terminal
    validations = [line for line in output.splitlines() if "train loss" in line]
    assert [line.split()[1] for line in validations] == ["6/12", "12/12"]
    if not terminal:
        assert "step 3/12  loss " in output and " ETA " in output


def test_checkpoint_files_are_as_readable_as_the_umask_allows(cells, make_tiny, tmp_path):
    previous = os.umask(0o027)
    try:
        make_tiny(**RUN, checkpoint_dir=str(tmp_path)).fit(*cells)
    finally:
        os.umask(previous)
    (checkpoint,) = tmp_path.iterdir()
    modes = {stat.S_IMODE(path.stat().st_mode) for path in checkpoint.iterdir()}
    assert modes == {0o640}
