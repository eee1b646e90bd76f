"""Training DeepLoc with skorch: device batches, mixed precision, keep-best, exact resumes.

Whole batches are drawn per step, so augmentation runs once per batch on the device and
training length counts optimizer steps, as in the paper. Checkpoints are written by a callback
here, not skorch's ``Checkpoint`` (epoch ends only, in place), nor read by ``LoadInitState``
(which silently restarts on damage).
"""

import os
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from skorch import NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, PassthroughScoring
from skorch.dataset import unpack_data
from skorch.helper import predefined_split
from torch import nn
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from ._files import shown
from .checkpoints import (
    CheckpointFolder,
    checkpoint_lock,
    json_number,
    optimizer_parts,
    optimizer_state,
    run_identity,
    unusable,
)
from .inference import _AUTOCAST_DTYPES, check_precision, resolve_device
from .model import state_problem
from .network import DeepLocNet
from .preprocessing import center_crop, random_augment, stretch_as_stored, to_tensor
from .validation import check_batch_fits, check_fits_memory

LR_DECAY = {"step_size": 25, "gamma": 0.96}  # the paper: x0.96 every 25 steps
MEMORY_FORMAT = torch.channels_last  # faster on CPU, native for tensor cores
DEVICE_SHARE = 0.5  # crops stay on a GPU when they take at most this share of its free memory
STRETCH_CHUNK = 4096  # cells stretched at a time (bounds the memory of the percentiles)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped (Ctrl-C) before its last step; ``checkpoint`` is where a rerun resumes."""

    def __init__(self, message, checkpoint=None):
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class Recipe:
    """How to train: the optimizer, the length, the batches, the validation, the checkpoints."""

    lr: float
    max_iter: int
    batch_size: int = 128
    validation_fraction: float = 0.1
    validation_interval: int = 500
    balanced: bool = True
    augment: bool = True
    freeze_conv: bool = False
    precision: str = "fp32"
    device: str = "auto"
    verbose: int = 0
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_interval: int | None = None

    @property
    def steps_per_epoch(self):
        """Steps between validations (one skorch epoch)."""
        return min(self.validation_interval, self.max_iter)

    def epochs_left(self, steps_done):
        """skorch epochs that finish the run from ``steps_done`` (a partial one counts)."""
        if steps_done >= self.max_iter:
            return 0
        epoch_start = steps_done - steps_done % self.steps_per_epoch
        return -(-(self.max_iter - epoch_start) // self.steps_per_epoch)


def place_crops(X, preprocessing, device):
    """Stretched crops on ``device``, or in pinned host memory past ``DEVICE_SHARE`` of a GPU."""
    device = torch.device(device)
    storage = device
    if device.type == "cuda" and X.nbytes > DEVICE_SHARE * torch.cuda.mem_get_info(device)[0]:
        storage = torch.device("cpu")
    crops = torch.empty(X.shape, dtype=torch.float32, device=storage, pin_memory=storage != device)
    for start in range(0, len(X), STRETCH_CHUNK):
        chunk = to_tensor(X[start : start + STRETCH_CHUNK]).to(device)
        crops[start : start + STRETCH_CHUNK] = stretch_as_stored(chunk, preprocessing)
    return crops


class CellBatches(Dataset):
    """Stretched crops served a batch at a time: ``dataset[indices] -> (x, y)`` on ``device``.

    Host-memory crops travel to a GPU without waiting; ``augment`` takes a random crop, flips
    and rotations on ``device``, else the centre crop.
    """

    def __init__(self, X, y, crop_size, augment, random_state, device="cpu"):
        self.device = torch.device(device)
        self.X = X
        self.y = torch.as_tensor(np.asarray(y)).to(self.device)
        self.crop_size = crop_size
        self.augment = augment
        self.rng = np.random.default_rng(random_state)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, indices):
        x = self.X[indices]
        if x.device.type != self.device.type:  # host crops for a GPU
            x = x.pin_memory().to(self.device, non_blocking=True)
        if self.augment:
            x = random_augment(x, self.crop_size, self.rng)
        else:
            x = center_crop(x, self.crop_size)
        return x.contiguous(memory_format=MEMORY_FORMAT), self.y[indices]


class StepSampler(Sampler):
    """Full batches of indices drawn with replacement, ``recipe.max_iter`` in all.

    An epoch ends at the next multiple of ``recipe.steps_per_epoch`` (a resumed run finishes its
    epoch); ``recipe.balanced`` makes every class equally likely.
    """

    def __init__(self, labels, recipe, random_state):
        weights = 1.0 / np.bincount(labels)[labels] if recipe.balanced else np.ones(len(labels))
        self.probabilities = weights / weights.sum()
        self.recipe = recipe
        self.batch_size = recipe.batch_size
        self.steps_done = 0
        self.rng = np.random.default_rng(random_state)

    def __len__(self):
        left_in_epoch = self.recipe.steps_per_epoch - self.steps_done % self.recipe.steps_per_epoch
        return min(left_in_epoch, self.recipe.max_iter - self.steps_done)

    def __iter__(self):
        for _ in range(len(self)):
            self.steps_done += 1
            yield torch.from_numpy(
                self.rng.choice(len(self.probabilities), self.batch_size, p=self.probabilities)
            )


class BatchLoader:
    """skorch's batch iterator: ``dataset[indices]`` per batch of the sampler, else in order.

    Not torch's ``DataLoader``: it draws a seed from torch's global generator every epoch, so
    a run resumed mid-epoch would draw other dropout masks.
    """

    def __init__(self, dataset, batch_size=None, sampler=None):
        self.dataset = dataset
        if sampler is None:
            sampler = [slice(i, i + batch_size) for i in range(0, len(dataset), batch_size)]
        self.batches = sampler

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return map(self.dataset.__getitem__, self.batches)


def validation_split(codes, fraction, seed):
    """``(train, validation, how)`` indices keeping every class in training.

    ``how``: "stratified" when possible, else "random" among the cells beyond each class's
    first, else "none".
    """
    n_valid = int(round(fraction * len(codes)))
    everything = np.arange(len(codes))
    if n_valid == 0:
        return everything, np.array([], int), "none"
    with suppress(ValueError):  # a class of one cell, or fewer cells than classes on either side
        split = train_test_split(everything, test_size=n_valid, stratify=codes, random_state=seed)
        return (*split, "stratified")
    others = np.setdiff1d(everything, np.unique(codes, return_index=True)[1])
    if len(others) < n_valid:
        return everything, np.array([], int), "none"
    valid = np.random.default_rng(seed).choice(others, n_valid, replace=False)
    return np.setdiff1d(everything, valid), valid, "random"


def settle_losses(epoch):
    """Turn the device-tensor losses of an epoch's batches into floats, in one transfer."""
    pending = [batch for batch in epoch["batches"] if torch.is_tensor(batch.get("train_loss"))]
    if pending:
        values = torch.stack([batch["train_loss"] for batch in pending]).tolist()
        for batch, value in zip(pending, values):
            batch["train_loss"] = value


def check_not_diverged(net, step):
    """Refuse weights gone NaN or infinite: the run diverged (a learning rate too high)."""
    if found := state_problem(net.module_.state_dict()):
        name, problem = found
        raise ValueError(
            f"Training diverged by step {step}: the network's {name} {problem}. Expected "
            f"finite weights; train again with a lower lr (it was {net.lr:g})."
        )


def steps_taken(history):
    """Optimizer steps recorded in a skorch history."""
    return sum("train_loss" in batch for epoch in history for batch in epoch["batches"])


class DeepLocTrainingNet(NeuralNetClassifier):
    """skorch's classifier net with mixed precision, and losses read once per epoch.

    Forward passes run under ``torch.autocast`` at ``precision`` (fp16 with a ``GradScaler``).
    Losses stay device tensors until the epoch ends (or :func:`settle_losses`): skorch's
    ``.item()`` per step would make the CPU wait for the GPU.
    """

    def __init__(self, module, *, precision="fp32", **kwargs):
        super().__init__(module, **kwargs)
        self.precision = precision

    def initialize(self):
        super().initialize()
        device_type = torch.device(self.device).type
        self.grad_scaler_ = torch.amp.GradScaler(device_type, enabled=self.precision == "fp16")
        return self

    def infer(self, x, **fit_params):
        dtype = _AUTOCAST_DTYPES.get(self.precision)  # None for fp32: autocast disabled
        with torch.autocast(torch.device(self.device).type, dtype=dtype, enabled=bool(dtype)):
            logits = super().infer(x, **fit_params)
        return logits.float()  # the loss and the scores in fp32

    def train_step(self, batch, **fit_params):
        """One optimizer step: autocast forward pass, (scaled) backward pass, Adam."""
        self.module_.train()
        x, y = unpack_data(batch)
        self.optimizer_.zero_grad()
        y_pred = self.infer(x, **fit_params)
        loss = self.get_loss(y_pred, y, X=x, training=True)
        self.grad_scaler_.scale(loss).backward()
        self.grad_scaler_.step(self.optimizer_)
        self.grad_scaler_.update()
        return {"loss": loss, "y_pred": y_pred}

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if not training:
            return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        for batch in iterator:
            self.notify("on_batch_begin", batch=batch, training=True)
            step = step_fn(batch, **fit_params)
            self.history.record_batch("train_loss", step["loss"].detach())
            self.history.record_batch("train_batch_size", len(batch[0]))
            self.notify("on_batch_end", batch=batch, training=True, **step)
        settle_losses(self.history[-1])
        check_not_diverged(self, steps_taken(self.history))
        # Every step of the epoch, those before a resumed run's first one included.
        self.history.record("train_batch_count", steps_taken(self.history[-1:]))
        return None


class Progress(Callback):
    """One progress display for the whole run, and one line per validation.

    A tqdm bar on a terminal (sys.stderr); elsewhere (a log file, CI) a plain line every
    twentieth of the run.
    """

    def __init__(self, total_steps):
        self.total_steps = total_steps

    def on_train_begin(self, net, **kwargs):
        self.every_ = max(1, self.total_steps // 20)
        self.step_ = self.first_step_ = self.reported_step_ = steps_taken(net.history)
        self.started_ = self.postfix_time_ = time.monotonic()
        self.bar_ = None
        terminal = False
        with suppress(AttributeError, ValueError):  # no isatty, or a closed stream
            terminal = sys.stderr.isatty()
        if terminal:
            self.bar_ = tqdm(
                total=self.total_steps,
                initial=self.step_,
                file=sys.stderr,
                unit="step",
                dynamic_ncols=True,
                mininterval=0.5,
            )

    def _recent(self, net):
        """Mean loss of the steps since the last report, and the learning rate."""
        epoch = net.history[-1]
        settle_losses(epoch)
        batches = [batch for batch in epoch["batches"] if "train_loss" in batch]
        recent = batches[-max(1, min(len(batches), self.step_ - self.reported_step_)) :]
        self.reported_step_ = self.step_
        return np.mean([b["train_loss"] for b in recent]), recent[-1].get("event_lr", np.nan)

    def on_batch_end(self, net, training, **kwargs):
        if not training:
            return
        self.step_ += 1
        if self.bar_ is not None:
            if time.monotonic() - self.postfix_time_ >= 0.5:
                loss, lr = self._recent(net)
                self.bar_.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                self.postfix_time_ = time.monotonic()
            self.bar_.update()
        elif self.step_ % self.every_ == 0:
            loss, lr = self._recent(net)
            rate = (self.step_ - self.first_step_) / (time.monotonic() - self.started_)
            eta = tqdm.format_interval((self.total_steps - self.step_) / rate)
            self._write(
                f"step {self.step_}/{self.total_steps}  loss {loss:.4f}  lr {lr:.2e}  "
                f"{rate:.2f} steps/s  ETA {eta}"
            )

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1]
        line = f"step {self.step_}/{self.total_steps}  train loss {epoch['train_loss']:.4f}"
        if "valid_loss" in epoch:
            line += f"  valid loss {epoch['valid_loss']:.4f}  valid acc {epoch['valid_acc']:.3f}"
            line += "  (best so far)" if epoch.get("valid_loss_best") else ""
        self._write(line)

    def on_train_end(self, net, **kwargs):
        if self.bar_ is not None:
            self.bar_.close()
        elapsed = tqdm.format_interval(time.monotonic() - self.started_)
        line = f"{self.step_ - self.first_step_} steps in {elapsed}"
        best = dict(net.callbacks_).get("best")
        finished = self.step_ == self.total_steps
        if finished and best is not None and best.best_model_weights_ is not None:
            epoch = net.history[best.best_epoch_ - 1]
            line += (
                f"; kept the model of step {steps_taken(net.history[: best.best_epoch_])} "
                f"(valid loss {epoch['valid_loss']:.4f})"
            )
        self._write(line)
        self.bar_ = None  # it does not pickle

    def _write(self, line):
        if self.bar_ is not None:
            self.bar_.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)


def _is_epoch(entry):
    """Whether a history entry is an epoch as skorch records it: its batches are objects."""
    batches = entry.get("batches") if isinstance(entry, dict) else None
    return isinstance(batches, list) and all(isinstance(batch, dict) for batch in batches)


def restore_run(checkpoint, net, train_data, sampler):
    """Put weights, optimizer, history and random states back, or refuse naming the checkpoint."""
    tensors, state = checkpoint.tensors, checkpoint.state
    try:
        net.module_.load_state_dict(tensors["weights"])
        net.optimizer_.load_state_dict(optimizer_state(tensors["optimizer"], state["optimizer"]))
        net.grad_scaler_.load_state_dict(state["grad_scaler"])
        net.load_params(f_history=checkpoint.folder / "history.json")
        sampler.steps_done = checkpoint.step
        sampler.rng.bit_generator.state = state["random"]["sampler"]
        train_data.rng.bit_generator.state = state["random"]["augmentation"]
        torch.set_rng_state(tensors["random"]["torch"])
        # A run may move between devices; exactness is promised only for one that stays.
        if "cuda" in tensors["random"] and torch.device(net.device).type == "cuda":
            torch.cuda.set_rng_state(tensors["random"]["cuda"], net.device)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise unusable(checkpoint.folder, f"cannot be restored ({reason})") from error
    epochs = list(net.history)
    if not all(map(_is_epoch, epochs)):
        raise unusable(
            checkpoint.folder,
            f"cannot be restored: its history.json holds {shown(epochs)}, expected a list of "
            "epochs, each with its 'batches'",
        )
    for kind in ("weights", "best"):
        if found := state_problem(tensors.get(kind, {})):
            name, problem = found
            raise unusable(checkpoint.folder, f"cannot be resumed: its {kind} {name} {problem}")
    recorded = steps_taken(net.history)
    if recorded != checkpoint.step:
        raise unusable(
            checkpoint.folder,
            f"cannot be resumed: its state.json says step {checkpoint.step} but its "
            f"history.json records {recorded} training steps",
        )


def restore_callbacks(checkpoint, net):
    """Put back what skorch's callbacks reset when training begins."""
    callbacks = dict(net.callbacks_)
    callbacks["lr_decay"].lr_scheduler_.load_state_dict(checkpoint.state["lr_schedule"])
    callbacks["lr_decay"].batch_idx_ = checkpoint.step
    for callback in callbacks.values():
        # EpochScoring reads its best score back from the history; PassthroughScoring does not.
        if isinstance(callback, PassthroughScoring):
            best = [e[callback.name] for e in net.history if e.get(f"{callback.name}_best")]
            if best:
                callback.best_score_ = best[-1]
    keep_best = checkpoint.state["keep_best"]
    if keep_best is not None:
        best = callbacks["best"]
        best.misses_ = keep_best["misses"]
        best.best_epoch_ = keep_best["best_epoch"]
        threshold = keep_best["threshold"]
        best.dynamic_threshold_ = np.inf if threshold is None else threshold
        if "best" in checkpoint.tensors:
            best.best_model_weights_ = {
                name: tensor.to(net.device) for name, tensor in checkpoint.tensors["best"].items()
            }


class Checkpointing(Callback):
    """Write everything a rerun needs to continue exactly, every ``interval`` steps.

    A step that ends a validation interval is saved after the validation, so a resumed run
    never validates twice; ``resume`` is the checkpoint this run continues.
    """

    def __init__(self, folder, recipe, seeds, resume=None):
        self.folder = folder
        self.interval = recipe.checkpoint_interval or recipe.steps_per_epoch
        self.recipe = recipe
        self.seeds = [int(s) for s in seeds]
        self.resume = resume

    def on_train_begin(self, net, X=None, **kwargs):
        self.train_data_ = X
        self.continues_epoch_ = False
        if self.resume is not None:
            restore_callbacks(self.resume, net)
            self.continues_epoch_ = self.resume.step % self.recipe.steps_per_epoch != 0

    def on_epoch_begin(self, net, **kwargs):
        if self.continues_epoch_:  # go on with the saved epoch rather than the one just opened
            net.history.pop()
            self.continues_epoch_ = False

    def on_batch_end(self, net, training, **kwargs):
        step = net.iterator_train__sampler.steps_done
        ends_epoch = step % self.recipe.steps_per_epoch == 0 or step == self.recipe.max_iter
        if training and step % self.interval == 0 and not ends_epoch:
            check_not_diverged(net, step)  # at an epoch's end, run_single_epoch checks
            self.save(net)

    def on_epoch_end(self, net, **kwargs):
        step = net.iterator_train__sampler.steps_done
        if step % self.interval == 0 or step == self.recipe.max_iter:
            self.save(net)

    def on_train_end(self, net, **kwargs):
        self.train_data_ = self.resume = None  # neither is kept with the fitted net

    def save(self, net):
        """Write the checkpoint of the current step."""
        settle_losses(net.history[-1])
        callbacks = dict(net.callbacks_)
        sampler = net.iterator_train__sampler
        optimizer_tensors, param_groups = optimizer_parts(net.optimizer_)
        tensors = {
            "weights": {k: v.contiguous() for k, v in net.module_.state_dict().items()},
            "optimizer": optimizer_tensors,
            "random": {"torch": torch.get_rng_state()},
        }
        if torch.device(net.device).type == "cuda":
            tensors["random"]["cuda"] = torch.cuda.get_rng_state(net.device)
        best = callbacks.get("best")
        if best is not None and best.best_model_weights_ is not None:
            tensors["best"] = {k: v.contiguous() for k, v in best.best_model_weights_.items()}
        state = {
            "step": sampler.steps_done,
            "seeds": self.seeds,
            "optimizer": param_groups,
            "lr_schedule": callbacks["lr_decay"].lr_scheduler_.state_dict(),
            "grad_scaler": net.grad_scaler_.state_dict(),
            "keep_best": None
            if best is None
            else {
                "misses": best.misses_,
                "best_epoch": best.best_epoch_,
                "threshold": json_number(best.dynamic_threshold_),
            },
            "random": {
                "sampler": sampler.rng.bit_generator.state,
                "augmentation": self.train_data_.rng.bit_generator.state,
            },
        }
        self.folder.write(sampler.steps_done, state, tensors, net)


def build_net(architecture, recipe, train_codes, seed, valid=None, checkpointing=None):
    """The skorch net: Adam, step decay, step sampler, keep-best with ``valid`` cells."""
    # last_epoch=-1: the schedule starts where the optimizer is (skorch would
    # otherwise derive it from the history of a resumed run and decay once more).
    decay = LRScheduler("StepLR", step_every="batch", last_epoch=-1, **LR_DECAY)
    callbacks = [("lr_decay", decay)]
    if valid is not None:
        # Never stops early (patience beyond the last epoch): only restores the best.
        best = EarlyStopping(monitor="valid_loss", patience=recipe.max_iter + 1, load_best=True)
        callbacks.append(("best", best))
    if checkpointing is not None:
        callbacks.append(("checkpoint", checkpointing))
    if recipe.verbose:
        callbacks.append(("progress", Progress(recipe.max_iter)))
    return DeepLocTrainingNet(
        module=DeepLocNet,
        **{f"module__{k}": v for k, v in architecture.items()},
        precision=recipe.precision,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        max_epochs=recipe.epochs_left(0),
        train_split=None if valid is None else predefined_split(valid),
        iterator_train=BatchLoader,
        iterator_valid=BatchLoader,
        iterator_train__sampler=StepSampler(train_codes, recipe, seed),
        iterator_train__batch_size=None,
        callbacks=callbacks,
        callbacks__print_log=None,
        classes=np.arange(architecture["n_classes"]),
        device=recipe.device,
        verbose=0,
    )


def _load_initial_state(module, state):
    """Load every layer but the output layer (fine-tuning)."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or not all(name.startswith("head") for name in missing):
        raise ValueError(
            "The pretrained weights do not fit the network: missing "
            f"{[m for m in missing if not m.startswith('head')]}, unexpected {unexpected}."
        )


def _interrupted(n_iter, recipe, folder):
    latest = None if folder is None else folder.latest()
    kept = (
        "no checkpoint was kept (set checkpoint_dir to make training resumable)"
        if latest is None
        else f"the checkpoint of step {int(latest.name[5:])} is kept in {latest}: fit again "
        "with the same data and parameters (or rerun the same command) to resume from it"
    )
    return TrainingInterrupted(
        f"training stopped after {n_iter} of {recipe.max_iter} steps; {kept}", latest
    )


def train_network(
    X, codes, *, architecture, preprocessing, recipe, random_state, initial_state=None
):
    """Train a :class:`DeepLocNet` on validated crops with skorch: ``(net, validation, n_iter)``.

    With ``recipe.checkpoint_dir``, a checkpoint is written every ``recipe.checkpoint_interval``
    steps (default: every validation); a run of the same data and parameters resumes from the
    newest one, with its seeds (an int ``random_state`` must be its own), to the result of an
    uninterrupted run. Ctrl-C raises :class:`TrainingInterrupted`; another run in the checkpoint
    folder, OutputLockedError.
    """
    with torch.device("meta"):  # counted, not allocated
        n_weights = sum(p.numel() for p in DeepLocNet(**architecture).parameters())
    # Weights, gradients and Adam's two moments, in float32.
    check_fits_memory(
        n_weights,
        16,
        what=f"Training a network of {n_weights:,} weights",
        expected=f"a smaller network than conv_channels {architecture['conv_channels']} and "
        f"fc_units {architecture['fc_units']}, or more memory",
    )
    # A lower bound of a cell's memory (its crop and one activation map), so that only batches
    # that cannot fit are refused; batches are drawn with replacement, hence always full.
    widest = architecture["n_channels"] + max(architecture["conv_channels"])
    per_cell = 4 * architecture["crop_size"] ** 2 * widest
    check_batch_fits(recipe.batch_size, per_cell, what="training cells")
    # int8 is a prediction precision (refused on a named GPU): it trains in fp32, on a GPU too.
    # A checkpoint records the precision, so it resumes on any device that computes alike.
    if recipe.precision == "int8":
        check_precision("int8", recipe.device)
    recipe = replace(recipe, device=resolve_device(recipe.device))
    device = torch.device(recipe.device)
    training = "fp32" if recipe.precision == "int8" else recipe.precision
    recipe = replace(recipe, precision=check_precision(training, device))
    # Two runs in one checkpoint folder would write, rename and remove each other's files.
    with checkpoint_lock(recipe.checkpoint_dir):
        seeds = check_random_state(random_state).randint(np.iinfo(np.int32).max, size=4)
        folder = resume = None
        if recipe.checkpoint_dir is not None:
            identity = run_identity(
                X,
                codes,
                architecture=architecture,
                preprocessing=preprocessing,
                recipe=recipe,
                random_state=random_state,
                initial_state=initial_state,
            )
            folder = CheckpointFolder(recipe.checkpoint_dir, identity)
            resume = folder.read()
            if resume is not None:
                seeds = np.asarray(resume.state["seeds"])
                if recipe.verbose:
                    print(f"resuming from {resume.folder} (step {resume.step})", file=sys.stderr)
        train_idx, valid_idx, validation = validation_split(
            codes, recipe.validation_fraction, seeds[0]
        )
        crop_size = architecture["crop_size"]

        def cells(indices, augment, seed):
            crops = place_crops(X[indices], preprocessing, device)
            return CellBatches(crops, codes[indices], crop_size, augment, seed, device)

        valid = cells(valid_idx, False, None) if len(valid_idx) else None
        checkpointing = None if folder is None else Checkpointing(folder, recipe, seeds, resume)
        net = build_net(architecture, recipe, codes[train_idx], seeds[1], valid, checkpointing)
        train = cells(train_idx, recipe.augment, seeds[2])
        sampler = net.iterator_train__sampler
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, device_type=device.type):
            torch.manual_seed(int(seeds[3]))
            net.initialize()
            if initial_state is not None:
                _load_initial_state(net.module_, initial_state)
            if recipe.freeze_conv:
                net.module_.freeze_features()
            if resume is not None:
                restore_run(resume, net, train, sampler)
            net.module_.to(memory_format=MEMORY_FORMAT)
            net.partial_fit(train, y=None, epochs=recipe.epochs_left(sampler.steps_done))
        net.module_.to(memory_format=torch.contiguous_format)
        if net.history:
            settle_losses(net.history[-1])  # an interruption leaves the last epoch's unread
        # Free the validation cells and the sampler: they would be pickled with the net.
        net.train_split = None
        net.iterator_train__sampler = None
        n_iter = steps_taken(net.history)
        if n_iter < recipe.max_iter:  # skorch ends fit quietly on Ctrl-C: say so
            raise _interrupted(n_iter, recipe, folder)
        return net, validation, n_iter
