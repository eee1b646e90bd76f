"""``deeploc demo``: pretrain on one synthetic screen, transfer to a differently imaged one.

Feature heads and fine-tuning are compared on a few target cells, then along a
transfer-learning curve; networks are narrower than the paper's, to run on a CPU.
"""

import time
from dataclasses import asdict, make_dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .classifier import DeepLocClassifier
from .datasets import make_yeast_cells
from .model_selection import compare_heads, fit_head, per_class_comparison, transfer_curve

TARGET_CLASSES = (
    "CELLPERIPHERY CYTOPLASM ER MITOCHONDRIA NUCLEARPERIPHERY NUCLEI PEROXISOME VACUOLARMEMBRANE "
    "VACUOLE BUDNECK"
).split()


# The sizes of one demo run: name -> (full, about 7 minutes; quick, under 2; on 2 cores).
SIZES = {
    "conv_channels": ((16, 16, 32, 32, 64, 64, 64, 64), (8, 8, 16, 16, 32, 32, 32, 32)),
    "fc_units": ((128, 128), (64, 64)),
    "source_per_class": (40, 12),
    "pretrain_steps": (400, 120),
    "target_classes": (TARGET_CLASSES, TARGET_CLASSES[:6]),
    "target_pool_per_class": (25, 8),
    "target_test_per_class": (15, 8),
    "compare_per_class": (10, 6),
    "cv": (3, 2),
    "network_steps": (80, 25),
    "batch_size": (32, 32),
    "curve_sizes": ((1, 5, 25), (1, 5)),
    "curve_draws": (2, 2),
}
DemoSettings = make_dataclass("DemoSettings", list(SIZES))
FULL, QUICK = (DemoSettings(*(sizes[k] for sizes in SIZES.values())) for k in (0, 1))


def _save(figure, path):
    figure.savefig(path, dpi=90, bbox_inches="tight")


def _markdown_table(frame):
    """A DataFrame as a GitHub markdown table (no extra dependency), floats to 3 decimals."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(False):
        cells = (f"{value:.3f}" if isinstance(value, float) else str(value) for value in row)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(output="deeploc-demo", *, quick=False, random_state=0):
    """Run the demo and write its report, tables, plots and ``pretrained/`` model into ``output``.

    ``quick`` is a smaller run, for tests and a first look. Returns the ``heads``, ``curve`` and
    ``per_class`` tables, the best head's ``test_accuracy`` and the ``report`` path.
    """
    import matplotlib

    matplotlib.use("Agg")
    from . import plotting

    settings = QUICK if quick else FULL
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:6.1f} s] {message}", flush=True)

    print(f"deeploc demo ({'quick' if quick else 'full'}), sklearn-deeploc {__version__}")
    print(
        f"Reduced-width DeepLoc for CPU: conv {settings.conv_channels}, "
        f"fc {settings.fc_units} (the paper's is conv (64, ..., 256), fc (512, 512))."
    )

    X_source, y_source = make_yeast_cells(settings.source_per_class, random_state=random_state)
    n_target = settings.target_pool_per_class + settings.target_test_per_class
    X_target, y_target = make_yeast_cells(
        n_target, settings.target_classes, style="target", random_state=random_state + 1
    )
    test = np.zeros(len(y_target), bool)
    test[_first_per_class(y_target, settings.target_test_per_class)] = True
    X_pool, y_pool = X_target[~test], y_target[~test]
    X_test, y_test = X_target[test], y_target[test]
    log(
        f"screens drawn: source {len(X_source)} cells / {len(set(y_source))} classes, "
        f"target pool {len(X_pool)} + test {len(X_test)} cells / "
        f"{len(settings.target_classes)} classes"
    )
    _, first = np.unique(y_pool, return_index=True)
    montage = plotting.plot_montage(
        X_pool[first], y_pool[first], n_columns=10, title="Target screen"
    )
    _save(montage, output / "target_cells.png")

    source_model = DeepLocClassifier(
        conv_channels=settings.conv_channels,
        fc_units=settings.fc_units,
        batch_size=settings.batch_size,
        lr=0.01,
        max_iter=settings.pretrain_steps,
        validation_interval=max(settings.pretrain_steps // 4, 1),
        random_state=random_state,
        verbose=1,
    ).fit(X_source, y_source)
    folder = source_model.save_pretrained(output / "pretrained")
    log(f"pretrained on the source screen ({settings.pretrain_steps} steps), saved to {folder}")

    compare = _first_per_class(y_pool, settings.compare_per_class)
    network_params = {"max_iter": settings.network_steps, "batch_size": settings.batch_size}
    search, heads = compare_heads(
        X_pool[compare],
        y_pool[compare],
        source_model,
        cv=settings.cv,
        network_params=network_params,
        random_state=random_state,
    )
    heads.to_csv(output / "heads.csv", index=False)
    log(
        f"head comparison ({settings.compare_per_class} cells per class, "
        f"{settings.cv}-fold):\n{heads.to_string(index=False, float_format='%.3f')}"
    )
    best = search.best_estimator_
    test_accuracy = best.score(X_test, y_test)
    confusion = plotting.plot_confusion_matrix(y_test, best.predict(X_test))
    _save(confusion.figure_, output / "confusion.png")
    _save(plotting.plot_head_comparison(heads).figure, output / "heads.png")
    deeploc = heads.loc[heads["head"] != "classical", "head"].iloc[0]  # the best DeepLoc head
    fitted = {
        f"DeepLoc ({deeploc})": fit_head(search, deeploc, X_pool[compare], y_pool[compare]),
        "classical": fit_head(search, "classical", X_pool[compare], y_pool[compare]),
    }
    per_class = per_class_comparison(fitted, X_test, y_test)
    per_class.to_csv(output / "per_class_average_precision.csv")
    log(f"per-class average precision (target test set):\n{per_class.round(3)}")
    _save(plotting.plot_per_class_comparison(per_class).figure, output / "per_class.png")

    curve = transfer_curve(
        X_pool,
        y_pool,
        X_test,
        y_test,
        source_model,
        sizes=settings.curve_sizes,
        n_draws=settings.curve_draws,
        heads=("finetune_all", "scratch", "svm"),
        network_params=network_params,
        random_state=random_state,
        verbose=1,
    )
    curve.to_csv(output / "transfer_curve.csv", index=False)
    summary = (
        curve.groupby(["head", "cells_per_class"])["accuracy"].agg(["mean", "std"]).reset_index()
    )
    log(f"transfer curve:\n{summary.to_string(index=False, float_format='%.3f')}")
    _save(plotting.plot_transfer_curve(curve).figure, output / "transfer_curve.png")

    report, seconds = output / "report.md", time.perf_counter() - start
    report.write_text(_report(settings, quick, heads, summary, per_class, test_accuracy, seconds))
    log(f"report written to {report}")
    return dict(
        heads=heads, curve=curve, per_class=per_class, test_accuracy=test_accuracy, report=report
    )


def _first_per_class(y, n):
    return np.concatenate([np.flatnonzero(y == label)[:n] for label in np.unique(y)])


def _report(settings, quick, heads, summary, per_class, test_accuracy, seconds):
    best = heads.iloc[0]["head"]
    return f"""# sklearn-deeploc demo ({"quick" if quick else "full"})

Synthetic source screen -> differently imaged target screen
(`make_yeast_cells(style="source")` -> `style="target"`), sklearn-deeploc {__version__},
{seconds:.0f} s.

Reduced-width network for CPU: conv {settings.conv_channels}, fc {settings.fc_units}
(the paper's: conv (64, 64, 128, 128, 256, 256, 256, 256), fc (512, 512)).

## Head comparison ({settings.compare_per_class} target cells per class, {settings.cv}-fold CV)

{_markdown_table(heads)}

Best head: **{best}**; refit on all comparison cells, it scores
{test_accuracy:.3f} accuracy on the held-out target test set.

![heads](heads.png) ![confusion](confusion.png)

## DeepLoc against the classical pipeline (per-class average precision, target test set)

The paper's Fig 1D: the best DeepLoc head against CellProfiler-style features with an
ensemble of linear SVMs (ensLOC), both fitted on the comparison cells.

{_markdown_table(per_class.reset_index(names="class"))}

![per class](per_class.png)

## Transfer-learning curve (accuracy on the target test set)

{_markdown_table(summary)}

![transfer curve](transfer_curve.png)

## Settings

```
{asdict(settings)}
```
"""
