"""Transfer learning vs. training from scratch on synthetic source -> target screens.

Pretrains DeepLoc on a synthetic "source" screen (17 classes), then on a
differently imaged "target" screen (10 classes) runs the transfer-learning
curve (fine-tune vs. scratch, plus the linear-SVM feature head) at 1, 5 and 25
cells per class, and the six-head comparison. Prints markdown tables for
benchmarks/RESULTS.md. Reduced widths keep it to about 20 minutes on 2 cores.
Run: ``python benchmarks/bench_transfer.py``.
"""

import argparse
import time

import numpy as np

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.demo import TARGET_CLASSES, _markdown_table
from sklearn_deeploc.model_selection import compare_heads, transfer_curve

WIDTHS = {"conv_channels": (16, 16, 32, 32, 64, 64, 64, 64), "fc_units": (128, 128)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-per-class", type=int, default=80)
    parser.add_argument("--pretrain-steps", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=200, help="steps per target fit")
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()

    X_source, y_source = make_yeast_cells(args.source_per_class, random_state=0)
    X_pool, y_pool = make_yeast_cells(25, TARGET_CLASSES, style="target", random_state=1)
    X_test, y_test = make_yeast_cells(30, TARGET_CLASSES, style="target", random_state=2)
    source = DeepLocClassifier(
        **WIDTHS,
        batch_size=64,
        max_iter=args.pretrain_steps,
        validation_interval=200,
        random_state=0,
    ).fit(X_source, y_source)
    X_source_test, y_source_test = make_yeast_cells(20, random_state=3)
    print(
        f"widths {WIDTHS}; source: {len(X_source)} cells, {args.pretrain_steps} steps of 64, "
        f"held-out source accuracy {source.score(X_source_test, y_source_test):.3f} "
        f"({time.perf_counter() - start:.0f} s)"
    )

    network = {"max_iter": args.steps, "batch_size": 32}
    curve = transfer_curve(
        X_pool,
        y_pool,
        X_test,
        y_test,
        source,
        sizes=(1, 5, 25),
        n_draws=args.draws,
        heads=("finetune_all", "scratch", "svm"),
        network_params=network,
        random_state=0,
    )
    summary = curve.pivot_table(
        index="cells_per_class", columns="head", values="accuracy", aggfunc=["mean", "std"]
    )
    summary.columns = [f"{head} {stat}" for stat, head in summary.columns]
    print(
        f"\nTransfer curve: target test set of {len(X_test)} cells, 10 classes, "
        f"{args.draws} draws per size, {args.steps} steps of 32 per network fit "
        f"({time.perf_counter() - start:.0f} s)\n"
    )
    print(_markdown_table(summary.reset_index()))

    compare = np.concatenate([np.flatnonzero(y_pool == c)[:10] for c in TARGET_CLASSES])
    _, table = compare_heads(
        X_pool[compare], y_pool[compare], source, cv=3, network_params=network, random_state=0
    )
    print(
        f"\nHead comparison: 10 target cells per class, 3-fold CV "
        f"({time.perf_counter() - start:.0f} s)\n"
    )
    print(_markdown_table(table))


if __name__ == "__main__":
    main()
