"""Training DeepLoc with skorch: the net, the validation split, the step sampler, keep-best.

This is the only module besides the classifier that knows skorch. Training draws
whole batches (a list of indices per step) so that augmentation runs once per
batch, vectorised, and so that training length counts optimizer steps as the
paper does. Everything here pickles (numpy generators, no lambdas).
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping, LRScheduler, ProgressBar
from skorch.dataset import Dataset as SkorchDataset
from skorch.helper import predefined_split
from torch import nn
from torch.utils.data import Dataset, Sampler

from .inference import resolve_device
from .network import DeepLocNet
from .preprocessing import center_crop, random_augment, stretch_as_stored

LR_DECAY = {"step_size": 25, "gamma": 0.96}  # the paper: x0.96 every 25 steps


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped (Ctrl-C) before its last step; no model counts as finished."""


@dataclass(frozen=True)
class Recipe:
    """How to train: the optimizer, the length, the batches, the validation."""

    lr: float
    max_iter: int
    batch_size: int = 128
    validation_fraction: float = 0.1
    validation_interval: int = 500
    balanced: bool = True
    augment: bool = True
    freeze_conv: bool = False
    device: str = "auto"
    verbose: int = 0


@dataclass
class Trained:
    """What :func:`train_network` gives back."""

    net: NeuralNetClassifier
    validation: str
    n_iter: int


class CellBatches(Dataset):
    """Stretched crops served a batch at a time: ``dataset[indices] -> (x, y)``.

    Parameters
    ----------
    X : torch.Tensor of shape (n, C, H, W)
        Stretched crops.
    y : torch.Tensor of shape (n,)
        Integer class codes.
    crop_size : int
        Side of the crops given to the network.
    augment : bool
        Random crop, flips and rotations (training); otherwise the centre crop.
    random_state : int
        Seed of the augmentation.
    """

    def __init__(self, X, y, crop_size, augment, random_state):
        self.X = X
        self.y = y
        self.crop_size = crop_size
        self.augment = augment
        self.rng = np.random.default_rng(random_state)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, indices):
        x = self.X[indices]
        if self.augment:
            x = random_augment(x, self.crop_size, self.rng)
        else:
            x = center_crop(x, self.crop_size)
        return x.contiguous(), self.y[indices]


class StepSampler(Sampler):
    """Batches of indices drawn with replacement, a fixed number of steps in all.

    Each epoch yields ``steps_per_epoch`` batches (fewer in the last one) until
    ``total_steps`` optimizer steps have been drawn. With ``balanced=True``
    every class is equally likely in every batch, so a class with fewer cells
    than needed is sampled with replacement (the paper's fine-tuning recipe).
    Batches are always full, which keeps batch normalisation well defined.

    Parameters
    ----------
    labels : ndarray of shape (n,)
        Integer class codes of the training cells.
    batch_size : int
    steps_per_epoch : int
    total_steps : int
    balanced : bool
    random_state : int
    """

    def __init__(self, labels, batch_size, steps_per_epoch, total_steps, balanced, random_state):
        labels = np.asarray(labels)
        counts = np.bincount(labels)
        weights = 1.0 / counts[labels] if balanced else np.ones(len(labels))
        self.probabilities = weights / weights.sum()
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.steps_done = 0
        self.rng = np.random.default_rng(random_state)

    def __len__(self):
        return min(self.steps_per_epoch, self.total_steps - self.steps_done)

    def __iter__(self):
        for _ in range(len(self)):
            self.steps_done += 1
            yield torch.from_numpy(
                self.rng.choice(len(self.probabilities), self.batch_size, p=self.probabilities)
            )


def validation_split(codes, fraction, seed):
    """``(train indices, validation indices, how)`` with every class kept in training.

    Stratified when every class has two cells and the validation set can hold
    one of each; otherwise random among the cells beyond each class's first
    (``how="random"``), or no validation at all (``how="none"``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_deeploc.training import validation_split
    >>> validation_split(np.array([0, 0, 1, 1]), 0.5, seed=0)[2]
    'stratified'
    >>> validation_split(np.array([0, 1, 2]), 0.5, seed=0)[2]
    'none'
    """
    n_valid = int(round(fraction * len(codes)))
    everything = np.arange(len(codes))
    if n_valid == 0:
        return everything, np.array([], int), "none"
    if np.bincount(codes).min() >= 2 and n_valid >= len(np.unique(codes)):
        try:
            train, valid = train_test_split(
                everything, test_size=n_valid, stratify=codes, random_state=seed
            )
            return train, valid, "stratified"
        except ValueError:
            pass  # too few cells left for train_test_split's own stratification
    others = np.setdiff1d(everything, np.unique(codes, return_index=True)[1])
    if len(others) < n_valid:
        return everything, np.array([], int), "none"
    valid = np.random.default_rng(seed).choice(others, n_valid, replace=False)
    return np.setdiff1d(everything, valid), valid, "random"


def _callbacks(recipe, has_validation):
    callbacks = [("lr_decay", LRScheduler("StepLR", step_every="batch", **LR_DECAY))]
    if has_validation:
        # Never stops early (patience beyond the last epoch): only restores the best.
        best = EarlyStopping(monitor="valid_loss", patience=recipe.max_iter + 1, load_best=True)
        callbacks.append(("best", best))
    if recipe.verbose:
        callbacks.append(("progress", ProgressBar(batches_per_epoch="count")))
    return callbacks


def build_net(architecture, recipe, train_codes, seed, valid=None):
    """The skorch net: Adam, step decay, step sampler, keep-best with ``valid`` cells."""
    steps_per_epoch = min(recipe.validation_interval, recipe.max_iter)
    sampler = StepSampler(
        train_codes,
        recipe.batch_size,
        steps_per_epoch,
        recipe.max_iter,
        balanced=recipe.balanced,
        random_state=seed,
    )
    return NeuralNetClassifier(
        module=DeepLocNet,
        **{f"module__{k}": v for k, v in architecture.items()},
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        max_epochs=-(-recipe.max_iter // steps_per_epoch),
        train_split=None if valid is None else predefined_split(valid),
        iterator_train__sampler=sampler,
        iterator_train__batch_size=None,
        callbacks=_callbacks(recipe, valid is not None),
        classes=np.arange(architecture["n_classes"]),
        device=resolve_device(recipe.device),
        verbose=recipe.verbose,
    )


def _load_initial_state(module, state):
    """Load every layer but the output layer (fine-tuning)."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or not all(name.startswith("head") for name in missing):
        raise ValueError(
            "The pretrained weights do not fit the network: missing "
            f"{[m for m in missing if not m.startswith('head')]}, unexpected {unexpected}."
        )


def train_network(
    X, codes, *, architecture, preprocessing, recipe, random_state, initial_state=None
):
    """Train a :class:`DeepLocNet` on validated crops with skorch.

    Parameters
    ----------
    X : ndarray of shape (n, C, H, W), float32
        Raw crops (see :func:`~sklearn_deeploc.validation.check_crops`).
    codes : ndarray of shape (n,)
        Integer class codes ``0 .. n_classes - 1``.
    architecture : dict
        :class:`DeepLocNet` arguments (``n_classes`` included).
    preprocessing : dict
        The stretch to apply (see
        :func:`~sklearn_deeploc.preprocessing.stretch_as_stored`).
    recipe : Recipe
    random_state : numpy.random.RandomState
        Seeds the split, the initialisation, the sampler and the augmentation.
    initial_state : dict, optional
        Weights of every layer but the output layer (fine-tuning).

    Returns
    -------
    Trained
        The fitted skorch net (``net.module_`` is the trained network), how the
        validation cells were chosen, and the steps taken.
    """
    seeds = random_state.randint(np.iinfo(np.int32).max, size=4)
    train_idx, valid_idx, validation = validation_split(codes, recipe.validation_fraction, seeds[0])
    stretched = stretch_as_stored(torch.from_numpy(X), preprocessing)
    crop_size = architecture["crop_size"]
    valid = None
    if len(valid_idx):
        valid = SkorchDataset(
            center_crop(stretched[valid_idx], crop_size).contiguous(), codes[valid_idx]
        )
    net = build_net(architecture, recipe, codes[train_idx], seeds[1], valid)
    train = CellBatches(
        stretched[train_idx],
        torch.from_numpy(codes[train_idx]),
        crop_size,
        recipe.augment,
        seeds[2],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seeds[3]))
        net.initialize()
        if initial_state is not None:
            _load_initial_state(net.module_, initial_state)
        if recipe.freeze_conv:
            net.module_.freeze_features()
        net.partial_fit(train, y=None)
    # Free the validation cells and the sampler: they would be pickled with the net.
    net.train_split = None
    net.iterator_train__sampler = None
    n_iter = sum("train_loss" in b for epoch in net.history for b in epoch["batches"])
    if n_iter < recipe.max_iter:  # skorch ends fit quietly on Ctrl-C: say so
        raise TrainingInterrupted(f"training stopped after {n_iter} of {recipe.max_iter} steps")
    return Trained(net, validation, n_iter)
