"""Training checkpoints that cannot be resumed, and checkpoint folders in use, are refused."""

import json
import multiprocessing
import shutil
import time
from functools import partial

import pytest
import torch
from conftest import TINY_NET, tiny_classifier
from safetensors.torch import load_file, save_file

from sklearn_deeploc.blocks import OutputLockedError
from sklearn_deeploc.cli import main
from sklearn_deeploc.datasets import save_deeploc_hdf5
from sklearn_deeploc.jobs import checkpoint_folder
from sklearn_deeploc.training import CellBatches, TrainingInterrupted

RUN = {"max_iter": 4, "validation_interval": 2, "checkpoint_interval": 2}
# Longer than any test waits: the first run is killed, never finishes, never checkpoints.
ENDLESS = 10**6


@pytest.fixture(scope="module")
def interrupted(cells, tmp_path_factory):
    """A checkpoint folder holding step 2 of a 4-step run (Ctrl-C at the third step)."""
    folder = tmp_path_factory.mktemp("interrupted")
    prepare = CellBatches.__getitem__
    served = {"batches": 0}

    def prepare_or_stop(self, indices):
        served["batches"] += self.augment
        if served["batches"] > 2:
            raise KeyboardInterrupt
        return prepare(self, indices)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CellBatches, "__getitem__", prepare_or_stop)
        with pytest.raises(TrainingInterrupted, match="checkpoint of step 2 "):
            tiny_classifier(**RUN, checkpoint_dir=str(folder)).fit(*cells)
    return folder


def _without(key):
    def edit(state):
        del state[key]
        return state

    return edit


def _with(key, value):
    return lambda state: {**state, key: value}


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (_without("random"), r"state\.json has no entry 'random' \(expected an object\)"),
        (lambda s: {**s, "random": {}}, r"no entry 'random\.sampler'"),
        (_with("step", "2"), r'entry .step. is "2", expected an integer'),
        (_with("step", 4), r"says step 4 but .*history\.json records 2 training steps"),
        (_with("step", 1), r"says step 1 but .*history\.json records 2 training steps"),
        (_with("seeds", [1]), r"entry 'seeds' is \[1\], expected a list of 4 integers"),
        (_with("seeds", [2**70] * 4), r"entry 'seeds' is .*, expected a list of 4 integers in"),
        (lambda state: list(state), r"state\.json holds a JSON list, expected an object"),
    ],
    ids=[
        "no-random",
        "no-sampler-state",
        "text-step",
        "later",
        "earlier",
        "one-seed",
        "huge-seeds",
        "a-list",
    ],
)
def test_a_damaged_state_json_is_one_line_naming_it(cells, interrupted, tmp_path, edit, refusal):
    folder = tmp_path / "checkpoints"
    shutil.copytree(interrupted, folder)
    (state_file,) = folder.glob("step-*/state.json")
    state_file.write_text(json.dumps(edit(json.loads(state_file.read_text()))))
    with pytest.raises(ValueError, match=refusal) as refused:
        tiny_classifier(**RUN, checkpoint_dir=str(folder)).fit(*cells)
    message = str(refused.value)
    assert "\n" not in message and f"delete {state_file.parent} to start over" in message


def _nan_weight(folder, kind="weights"):
    weights = load_file(folder / f"{kind}.safetensors")
    weights["head.weight"][0, 0] = float("nan")
    save_file(weights, folder / f"{kind}.safetensors")


@pytest.mark.parametrize(
    ("damage", "refusal"),
    [
        (
            lambda folder: (folder / "history.json").write_text("[1, 2]"),
            r"cannot be restored: its history.json holds \[1, 2\], expected a list of epochs",
        ),
        (_nan_weight, r"cannot be resumed: its weights head.weight holds NaN"),
        (partial(_nan_weight, kind="best"), r"cannot be resumed: its best head.weight holds NaN"),
    ],
    ids=["history-of-numbers", "nan-weight", "nan-best-weight"],
)
def test_a_damaged_checkpoint_file_is_refused_naming_it(
    cells, interrupted, tmp_path, damage, refusal
):
    folder = tmp_path / "checkpoints"
    shutil.copytree(interrupted, folder)
    (step,) = folder.glob("step-*")
    damage(step)
    with pytest.raises(ValueError, match=refusal) as refused:
        tiny_classifier(**RUN, checkpoint_dir=str(folder)).fit(*cells)
    assert f"delete {step} to start over" in str(refused.value)


def test_an_empty_checkpoint_dir_is_refused(cells, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="checkpoint_dir is an empty path"):
        tiny_classifier(**RUN, checkpoint_dir="").fit(*cells)
    assert not list(tmp_path.iterdir())


def test_an_intact_copy_of_the_checkpoint_resumes(cells, interrupted, tmp_path):
    """The refusals above come from the edits, not from copying the folder."""
    folder = tmp_path / "checkpoints"
    shutil.copytree(interrupted, folder)
    assert tiny_classifier(**RUN, checkpoint_dir=str(folder)).fit(*cells).n_iter_ == 4
    assert [path.name for path in folder.iterdir()] == ["step-000000004"]


def _train_forever(how, X, y, folder):
    """Train until killed: a fit, or ``deeploc train`` into the model folder of ``folder``."""
    torch.set_num_threads(1)  # a forked child must not use its parent's thread pool
    if how == "python":  # nor its CUDA context: the child trains on the CPU
        endless = {"max_iter": ENDLESS, "checkpoint_interval": ENDLESS}
        tiny_classifier(**endless, checkpoint_dir=folder, device="cpu").fit(X, y)
    else:
        endless = ["--max-iter", str(ENDLESS), "--checkpoint-every", str(ENDLESS)]
        save_deeploc_hdf5(folder.parent / "cells.h5", X, y)
        tiny = ["--conv-channels", *map(str, TINY_NET["conv_channels"]), "--fc-units", "8", "8"]
        model = str(folder.parent / folder.stem)
        main(["train", str(folder.parent / "cells.h5"), "-o", model, *tiny, "--batch-size", "4",
              "--device", "cpu", *endless])  # fmt: skip


def _wait_for_lock(process, folder, seconds=60):
    """Wait until ``process`` has recorded itself in a lock file of ``folder``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.is_alive():
        if f'"pid": {process.pid}' in "".join(p.read_text() for p in folder.glob("*lock*")):
            return
        time.sleep(0.02)
    pytest.fail(f"{folder} never held a lock of pid {process.pid}")


@pytest.mark.parametrize("first", ["python", "deeploc train"])
def test_a_checkpoint_folder_in_use_is_refused_until_its_run_dies(cells, tmp_path, first):
    folder = checkpoint_folder(tmp_path / "model")
    # Forked, so that the other process starts without importing torch again.
    process = multiprocessing.get_context("fork").Process(
        target=_train_forever, args=(first, *cells, folder)
    )
    process.start()
    try:
        _wait_for_lock(process, folder)
        second = tiny_classifier(max_iter=2, checkpoint_dir=str(folder))
        in_use = rf"checkpoint folder {folder} is being written by another run \(pid {process.pid}"
        with pytest.raises(OutputLockedError, match=in_use):
            second.fit(*cells)
    finally:
        process.kill()
        process.join()
    assert second.fit(*cells).n_iter_ == 2  # a killed run's lock blocks nobody
    assert [path.name for path in folder.iterdir()] == ["step-000000002"]
