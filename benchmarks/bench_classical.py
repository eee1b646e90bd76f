"""The classical baseline (CellProfiler-style features, SVM ensemble) against DeepLoc heads.

1. ``HandcraftedFeatures`` speed in cells/s, serially and on 2 cores (goal: 200).
2. Synthetic source -> target transfer: a reduced-width DeepLoc is pretrained on
   the source screen; on target cells the DeepLoc heads (``compare_heads``) and
   the classical head (features computed once per cell, then the ensemble of
   linear SVMs) are cross-validated on the same folds. Per-class average
   precision of the best DeepLoc head against the classical head, from the
   out-of-fold scores of those folds (the paper's Fig 1D).
3. The same on the real Schuldiner crops of ``../shared/data`` (classes with at
   least 3 cells), skipped when the file is absent. Its channel 1 is
   brightfield, not a cytosolic marker: the classical pipeline segments on it
   all the same, and the DeepLoc features come from the synthetic source model.

Prints markdown tables for benchmarks/RESULTS.md.
Run: ``python benchmarks/bench_classical.py`` (about 10 minutes on 2 cores).
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_validate

from sklearn_deeploc import DeepLocClassifier
from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells
from sklearn_deeploc.demo import TARGET_CLASSES, _markdown_table
from sklearn_deeploc.handcrafted import HandcraftedFeatures, make_classical_head
from sklearn_deeploc.metrics import per_class_average_precision
from sklearn_deeploc.model_selection import SCORING, compare_heads

WIDTHS = {"conv_channels": (16, 16, 32, 32, 64, 64, 64, 64), "fc_units": (128, 128)}
SCHULDINER = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Schuldiner_test_set.hdf5"
)


def _cpu_seconds():
    """CPU time of this process and its live workers (loky keeps them between calls)."""
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def measure_speed(n_cells, repeats):
    """cells/s of ``transform``, serial and with 2 workers, best of ``repeats``.

    On a shared machine the wall clock says little (each login session gets
    one share of the CPUs, however many workers it starts), so the CPU time
    of all the processes is measured too, and the rate 2 free cores would
    reach is estimated from it.
    """
    source, _ = make_yeast_cells(n_cells // 34 + 1, random_state=0)
    target, _ = make_yeast_cells(n_cells // 34 + 1, style="target", random_state=1)
    X = np.concatenate([source, target])[:n_cells]
    rows = []
    for n_jobs in (1, 2):
        featurizer = HandcraftedFeatures(n_jobs=n_jobs).fit(X)
        featurizer.transform(X[:64])  # starts the workers
        walls, cpus = [], []
        for _ in range(repeats):
            start, cpu = time.perf_counter(), _cpu_seconds()
            featurizer.transform(X)
            walls.append(time.perf_counter() - start)
            cpus.append(_cpu_seconds() - cpu)
        cpu_per_cell = min(cpus) / n_cells
        rows.append(
            {
                "n_jobs": n_jobs,
                "cells": n_cells,
                "best cells/s": n_cells / min(walls),
                "median cells/s": n_cells / np.median(walls),
                "CPU ms/cell": 1e3 * cpu_per_cell,
                "cells/s on free cores (from CPU time)": n_jobs / cpu_per_cell,
            }
        )
    return pd.DataFrame(rows)


def classical_cv(X, y, cv):
    """The classical head on the folds of ``cv``: summary row and out-of-fold scores.

    Features never depend on the training cells, so they are computed once
    per cell, before the folds, as the DeepLoc heads' are.
    """
    start = time.perf_counter()
    features = HandcraftedFeatures().fit_transform(X)
    feature_time = time.perf_counter() - start
    head = make_classical_head(random_state=0)
    scores = cross_validate(head, features, y, cv=cv, scoring=SCORING)
    row = {"head": "classical"}
    for name in SCORING:
        row[f"mean_{name}"] = scores[f"test_{name}"].mean()
        row[f"std_{name}"] = scores[f"test_{name}"].std()
    row["mean_fit_time"] = scores["fit_time"].mean()
    out_of_fold = cross_val_predict(head, features, y, cv=cv, method="predict_proba")
    return row, out_of_fold, feature_time


def deeploc_out_of_fold(search, X, y, cv):
    """Out-of-fold class scores of the best DeepLoc head, on the same folds."""
    best = clone(search.best_estimator_)
    method = "predict_proba" if hasattr(best, "predict_proba") else "decision_function"
    return cross_val_predict(best, X, y, cv=cv, method=method)


def compare(X, y, source, heads, network_params, cv):
    """Head table (DeepLoc heads and the classical head) and the per-class AP table."""
    search, table = compare_heads(
        X, y, source, heads=heads, cv=cv, network_params=network_params, random_state=0
    )
    row, classical_scores, feature_time = classical_cv(X, y, cv)
    table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table = table.sort_values("mean_accuracy", ascending=False, kind="stable")
    best_name = table["head"][table["head"] != "classical"].iloc[0]
    classes = np.unique(y)
    per_class = pd.DataFrame(
        {
            f"DeepLoc {best_name}": per_class_average_precision(
                y, deeploc_out_of_fold(search, X, y, cv), classes
            ),
            "classical": per_class_average_precision(y, classical_scores, classes),
        }
    )
    per_class["difference"] = per_class.iloc[:, 0] - per_class["classical"]
    per_class.loc["mean"] = per_class.mean()
    per_class = per_class.rename_axis("class").reset_index()
    counts = pd.Series(y).value_counts()
    per_class.insert(1, "cells", [counts.get(c, len(y)) for c in per_class["class"]])
    return table.reset_index(drop=True), per_class, feature_time


def pretrain(source_per_class, steps):
    X, y = make_yeast_cells(source_per_class, random_state=0)
    model = DeepLocClassifier(
        **WIDTHS,
        lr=0.01,
        batch_size=32,
        max_iter=steps,
        validation_interval=max(steps // 4, 1),
        random_state=0,
    )
    return model.fit(X, y)


def report(title, table, per_class, feature_time, n_cells):
    print(f"\n### {title}\n")
    print(_markdown_table(table))
    print(
        f"\nClassical features: {feature_time:.1f} s for {n_cells} cells, once. "
        "Per-class average precision, out-of-fold on the same folds:\n"
    )
    print(_markdown_table(per_class))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-cells", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source-per-class", type=int, default=40)
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--target-per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=80, help="steps per fine-tuning fit")
    parser.add_argument("--heads", nargs="+", default=["svm", "knn", "forest", "finetune_all"])
    parser.add_argument("--speed-only", action="store_true", help="measure the speed only")
    args = parser.parse_args()
    start = time.perf_counter()

    speed = measure_speed(args.speed_cells, args.repeats)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"### HandcraftedFeatures speed ({os.cpu_count()} cores, load average {load})\n")
    print(_markdown_table(speed, float_format="{:.1f}"))
    if args.speed_only:
        return

    source = pretrain(args.source_per_class, args.pretrain_steps)
    X_held_out, y_held_out = make_yeast_cells(10, random_state=3)
    print(
        f"\nSource: {args.source_per_class} cells x 17 classes, {args.pretrain_steps} steps "
        f"of 32, widths {WIDTHS}; held-out source accuracy "
        f"{source.score(X_held_out, y_held_out):.3f} ({time.perf_counter() - start:.0f} s)"
    )
    X, y = make_yeast_cells(args.target_per_class, TARGET_CLASSES, style="target", random_state=1)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    network = {"max_iter": args.steps, "batch_size": 32}
    table, per_class, feature_time = compare(X, y, source, args.heads, network, cv)
    report(
        f"Synthetic target screen: {args.target_per_class} cells x {len(TARGET_CLASSES)} "
        f"classes, 3-fold CV ({time.perf_counter() - start:.0f} s)",
        table,
        per_class,
        feature_time,
        len(X),
    )

    if not SCHULDINER.is_file():
        print(f"\nSchuldiner crops not found at {SCHULDINER}: skipped.")
        return
    X, y = load_deeploc_hdf5(SCHULDINER)
    counts = pd.Series(y).value_counts()
    keep = np.isin(y, counts.index[counts >= 3])
    feature_heads = [h for h in args.heads if h in ("svm", "knn", "forest")]
    table, per_class, feature_time = compare(X[keep], y[keep], source, feature_heads, {}, cv)
    report(
        f"Real Schuldiner crops: {keep.sum()} cells of the {len(set(y[keep]))} "
        f"classes with at least 3 cells, 3-fold CV ({time.perf_counter() - start:.0f} s)",
        table,
        per_class,
        feature_time,
        int(keep.sum()),
    )


if __name__ == "__main__":
    main()
