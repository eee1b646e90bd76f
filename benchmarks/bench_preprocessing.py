"""Cost of batch preprocessing against one training step of the paper network.

Times, for a batch of 128 raw 64x64 crops: the vectorised percentile stretch
plus training augmentation, one training step (forward + backward + Adam) of
the full DeepLoc network, and a per-cell NumPy loop doing the same stretch and
augmentation. Run: ``python benchmarks/bench_preprocessing.py``.
"""

import platform
import time

import numpy as np
import torch

from sklearn_deeploc import DeepLocNet
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.preprocessing import percentile_stretch, random_augment


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def numpy_loop(X, rng, size=60):
    """The obvious per-cell implementation, for comparison."""
    out = np.empty((len(X), X.shape[1], size, size), np.float32)
    for i, cell in enumerate(X):
        low, high = np.percentile(cell, [0.1, 99.9], axis=(1, 2), keepdims=True)
        cell = np.clip((cell - low) / np.where(high > low, high - low, 1), 0, 1)
        top, left = rng.integers(0, cell.shape[1] - size + 1, 2)
        cell = cell[:, top : top + size, left : left + size]
        if rng.random() < 0.5:
            cell = cell[:, :, ::-1]
        if rng.random() < 0.5:
            cell = cell[:, ::-1, :]
        out[i] = np.rot90(cell, rng.integers(4), axes=(1, 2))
    return out


def main():
    X, y = make_yeast_cells(8, random_state=0)
    X = np.concatenate([X] * 2)[:128]
    labels = torch.from_numpy(np.arange(128) % 19)
    batch = torch.from_numpy(X)
    rng = np.random.default_rng(0)

    def preprocess():
        return random_augment(percentile_stretch(batch), 60, rng)

    net = DeepLocNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    crops = preprocess()

    def train_step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(crops), labels)
        loss.backward()
        optimizer.step()

    train_step()  # warm-up
    t_pre = best_of(preprocess, 10)
    t_step = best_of(train_step, 3)
    t_loop = best_of(lambda: numpy_loop(X, rng), 3)
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"stretch + augmentation, 128 crops : {t_pre * 1e3:8.1f} ms")
    print(f"one training step, paper network  : {t_step * 1e3:8.1f} ms")
    print(f"preprocessing / training step     : {t_pre / t_step:8.2%}  (goal <= 5%)")
    print(f"per-cell NumPy loop, 128 crops    : {t_loop * 1e3:8.1f} ms")
    print(f"speed-up over the NumPy loop      : {t_loop / t_pre:8.1f}x")


if __name__ == "__main__":
    main()
