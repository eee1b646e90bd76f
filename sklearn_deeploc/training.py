"""Pieces of the training loop that skorch drives: batch datasets and samplers.

Training draws whole batches (a list of indices per step) so that augmentation
runs once per batch, vectorised, and so that training length counts optimizer
steps as the paper does. Everything here pickles (numpy generators, no lambdas).
"""

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .preprocessing import center_crop, random_augment


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
