"""Training checkpoints on disk: folders of safetensors and JSON that resume exactly.

A checkpoint ``step-<n>`` holds tensors as safetensors (loading never unpickles), the rest of
the state as JSON, and skorch's history. One of another run (:func:`run_identity`), or whose
``state.json`` misses an entry, is refused before anything is restored. What goes into one,
and how it is put back onto the net, lives in :mod:`sklearn_deeploc.training`.
"""

import json
import os
import shutil
from collections import namedtuple
from contextlib import contextmanager, suppress
from dataclasses import asdict
from numbers import Integral
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file

from ._files import (
    array_digest,
    differences,
    replace_folder,
    save_safetensors,
    shown,
    tensor_digest,
)
from .blocks import held_lock

CHECKPOINT_FORMAT = "sklearn-deeploc training checkpoint"
CHECKPOINT_VERSION = 1
TENSOR_FILES = {"weights", "optimizer", "best", "random"}  # <name>.safetensors in a checkpoint
# Recipe fields that change where or how visibly a run trains, never what it computes.
RUN_ONLY_FIELDS = ("device", "verbose", "checkpoint_dir", "checkpoint_interval")
LOCK_FILE = "lock"  # in the checkpoint folder, held while a run trains into it


def _is(*types):
    return lambda value: isinstance(value, types) and not isinstance(value, bool)


def _list_of(kind, length=None):
    return lambda value: (
        isinstance(value, list) and length in (None, len(value)) and all(map(_is(kind), value))
    )


# What training reads from state.json: each entry, what it must be, and a test of that.
# Entry "a.b" is entry b of object a, required wherever a is an object.
STATE_ENTRIES = {
    "identity": ("an object", _is(dict)),
    "identity.data": ("an object", _is(dict)),
    "identity.parameters": ("an object", _is(dict)),
    "step": ("an integer", _is(int)),
    "seeds": (
        "a list of 4 integers in [0, 2**32)",
        lambda value: _list_of(int, 4)(value) and all(0 <= seed < 2**32 for seed in value),
    ),
    "optimizer": ("a list", _is(list)),
    "lr_schedule": ("an object", _is(dict)),
    "grad_scaler": ("an object", _is(dict)),
    "keep_best": ("an object or null", _is(dict, type(None))),
    "keep_best.misses": ("an integer", _is(int)),
    "keep_best.best_epoch": ("an integer", _is(int)),
    "keep_best.threshold": ("a number or null", _is(int, float, type(None))),
    "random": ("an object", _is(dict)),
    "random.sampler": ("an object", _is(dict)),
    "random.augmentation": ("an object", _is(dict)),
    "tensor_files": ("a list of names", _list_of(str)),
}


def _describe(array):
    return f"shape {list(array.shape)} {array.dtype}, sha256 {array_digest(array)}"


def run_identity(X, codes, *, architecture, preprocessing, recipe, random_state, initial_state):
    """``{"data": ..., "parameters": ...}``: what a run computes from, as JSON values.

    Two runs of one identity train the same network step for step; :data:`RUN_ONLY_FIELDS`
    and ``tta`` are left out.
    """
    parameters = {
        **architecture,
        **{k: v for k, v in preprocessing.items() if k != "tta"},
        **{k: v for k, v in asdict(recipe).items() if k not in RUN_ONLY_FIELDS},
        "random_state": int(random_state) if isinstance(random_state, Integral) else None,
        "pretrained": None if initial_state is None else tensor_digest(initial_state, length=16),
    }
    identity = {"data": {"X": _describe(X), "y": _describe(codes)}, "parameters": parameters}
    return json.loads(json.dumps(identity))  # tuples as lists, as they come back from JSON


def optimizer_parts(optimizer):
    """An optimizer's state as tensors (safetensors) and everything else (JSON)."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.contiguous()
        for index, entry in state["state"].items()
        for name, value in entry.items()
    }
    return tensors, state["param_groups"]


def optimizer_state(tensors, param_groups):
    state = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": param_groups}


def json_number(value):
    """JSON has no infinity: an unset threshold is stored as null."""
    return None if value is None or not np.isfinite(value) else float(value)


def _state_problem(state):
    """What makes ``state`` (a parsed state.json) unusable, or None."""
    if not isinstance(state, dict):
        kinds = {list: "list", str: "string", bool: "boolean", type(None): "null"}
        return f"holds a JSON {kinds.get(type(state), 'number')}, expected an object"
    if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
        return (
            f"is not a version {CHECKPOINT_VERSION} {CHECKPOINT_FORMAT} (format "
            f"{shown(state.get('format'))}, version {shown(state.get('version'))})"
        )
    for entry, (expected, fits) in STATE_ENTRIES.items():
        *parents, key = entry.split(".")
        owner = state
        for parent in parents:
            owner = owner[parent]
        if not isinstance(owner, dict):
            continue  # an optional parent left out (keep_best is null without validation)
        if key not in owner:
            return f"has no entry {entry!r} (expected {expected})"
        if not fits(owner[key]):
            return f"entry {entry!r} is {shown(owner[key])}, expected {expected}"
    return None


def unusable(folder, problem):
    """The refusal of the checkpoint ``folder``: one line, saying how to start over."""
    return ValueError(f"The checkpoint {folder} {problem}; delete {folder} to start over.")


@contextmanager
def checkpoint_lock(path):
    """Hold the lock of the checkpoint folder ``path`` while a run trains into it.

    Another run is refused with :class:`~sklearn_deeploc.blocks.OutputLockedError`; the thread
    holding the lock may take it again. A folder made for the lock goes with it; ``None`` locks
    nothing.
    """
    if path is None:
        yield
        return
    if not os.fspath(path):  # Path("") is the working directory
        raise ValueError("checkpoint_dir is an empty path; expected a folder, or None.")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_dir {path} is a file; expected a folder.")
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        with held_lock(path / LOCK_FILE, f"the checkpoint folder {path}", reentrant=True):
            yield
    finally:
        if made:
            with suppress(OSError):  # not empty: it holds checkpoints
                path.rmdir()


Checkpoint = namedtuple("Checkpoint", "folder step state tensors")  # one read back


class CheckpointFolder:
    """The checkpoints of the run ``identity``: ``step-<n>`` folders, the newest counting.

    Older ones are removed only once a newer one is complete, so a kill at any point leaves
    at least one complete checkpoint (or none, before the first).
    """

    def __init__(self, path, identity):
        self.path = Path(path)
        self.identity = identity

    def latest(self):
        """The newest complete checkpoint folder, or None."""
        folders = [p for p in self.path.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
        return max(folders, key=lambda p: int(p.name[5:]), default=None)

    def read(self):
        """The newest checkpoint (a :class:`Checkpoint`) or None; refuses another run's."""
        folder = self.latest()
        if folder is None:
            return None
        try:
            state = json.loads((folder / "state.json").read_text())
        except (OSError, ValueError) as error:
            raise unusable(folder, f"cannot be read ({error})") from error
        problem = _state_problem(state)
        if problem is not None:
            raise unusable(folder, f"cannot be resumed: {folder / 'state.json'} {problem}")
        try:
            tensors = {
                name: load_file(folder / f"{name}.safetensors")
                for name in set(state["tensor_files"]) & TENSOR_FILES
            }
        except (OSError, SafetensorError) as error:
            raise unusable(folder, f"cannot be read ({error})") from error
        what = [
            f"{label} differ: " + "; ".join(found)
            for label, key in [("training data", "data"), ("parameters", "parameters")]
            if (found := differences(state["identity"][key], self.identity[key]))
        ]
        if what:
            raise ValueError(
                f"The checkpoint {folder} belongs to another training run (checkpoint -> now: "
                f"{'; '.join(what)}). "
                "Fit with the same data and parameters to resume it, or use another "
                "checkpoint_dir (or delete this one) to start over. Clones fitted in "
                "cross-validation or a search share checkpoint_dir but not their data: leave "
                "it None there."
            )
        return Checkpoint(folder, state["step"], state, tensors)

    def write(self, step, state, tensors, net):
        """Write the checkpoint of ``step`` atomically: state.json, safetensors, skorch history."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "identity": self.identity,
            **state,
            "tensor_files": sorted(tensors),
        }

        def write(folder):
            (folder / "state.json").write_text(json.dumps(state, indent=1))
            for name, group in tensors.items():
                save_safetensors(group, folder / f"{name}.safetensors", like=folder / "state.json")
            net.save_params(f_history=folder / "history.json")

        final = replace_folder(self.path / f"step-{step:09d}", write)
        for old in self.path.glob("*step-*"):  # older checkpoints, and leftovers of killed writes
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final
