"""Does the paper's learning rate (Adam, 0.1) train DeepLoc in PyTorch?

Trains DeepLocClassifier from scratch on a synthetic source screen with the
paper's recipe (Adam, batch 128, decay 0.96 every 25 steps) at several initial
learning rates, and reports held-out accuracy. A reduced-width network keeps
this within minutes on 2 CPU cores; widths are printed.
Run: ``python benchmarks/bench_learning_rate.py [--steps 400]``.
"""

import argparse
import time

import numpy as np

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells

WIDTHS = {"conv_channels": (16, 16, 32, 32, 64, 64, 64, 64), "fc_units": (128, 128)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.01, 0.001])
    args = parser.parse_args()
    X, y = make_yeast_cells(60, random_state=0)
    X_test, y_test = make_yeast_cells(20, random_state=1)
    print(f"{len(np.unique(y))} classes, {len(X)} training cells, {len(X_test)} test cells")
    print(f"network widths: {WIDTHS}, {args.steps} steps of 128")
    for lr in args.rates:
        start = time.perf_counter()
        clf = DeepLocClassifier(
            **WIDTHS, lr=lr, max_iter=args.steps, validation_interval=100, random_state=0
        ).fit(X, y)
        losses = [round(h["train_loss"], 3) for h in clf.history_]
        print(
            f"lr={lr:<6} test accuracy {clf.score(X_test, y_test):.3f}  "
            f"train loss per 100 steps {losses}  ({time.perf_counter() - start:.0f} s)"
        )


if __name__ == "__main__":
    main()
