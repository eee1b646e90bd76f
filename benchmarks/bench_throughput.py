"""Inference and training throughput of the paper network, against plain PyTorch loops.

In one run, on the full DeepLoc architecture (random weights, batch-norm
statistics from a few training batches):

1. ``DeepLocFeaturizer.transform`` (fc2 features, five-crop mean) against a
   plain PyTorch eval loop over the same network, crops and five-crop mean
   (NCHW, batch norm as separate layers, ``torch.no_grad``); and the effect of
   channels-last, ``torch.inference_mode`` and batch-norm folding one at a time,
   all in interleaved rounds (best of ``--rounds``), so that other load on the
   machine falls on every variant alike. ``--before REVISION`` adds the
   featurizer of an earlier commit to the same rounds (its package source is
   extracted with ``git archive`` and imported beside this one, with the same
   weights), to show a change costs no speed, and a second featurizer of the
   current code, whose difference from the first is the measurement's noise.
2. Achieved inference GFLOP/s against this machine's 2048x2048 float32 matmul.
3. ``DeepLocClassifier.fit`` images/s against a plain PyTorch training loop
   (same augmentation, Adam, batch 128).
4. Reduced precision on a paper network trained briefly on synthetic cells:
   the plain fp32 loop, the fast fp32 copy, bf16 autocast and int8, each in
   cells/s with the five-crop mean and as a ratio to the plain loop, with the
   top-1 agreement and feature error against fp32 on unseen synthetic cells
   and on the real cells of ``../shared/data`` (skipped when absent): the 36
   Schuldiner crops and the 390 cells of one field of view. Their classes are
   not the network's, but agreement compares two precisions of one network,
   which is what matters.

Run: ``python benchmarks/bench_throughput.py [--cells 128] [--steps 4]
[--rounds 3] [--before REVISION] [--train-steps 200]
[--only-inference | --only-precision]``.
"""

import argparse
import copy
import importlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer, DeepLocNet
from sklearn_deeploc.datasets import load_deeploc_hdf5, make_yeast_cells
from sklearn_deeploc.inference import (
    PRECISIONS,
    check_precision,
    inference_copy,
    precision_agreement,
    predict_batches,
    quantized_copy,
)
from sklearn_deeploc.preprocessing import five_crops, percentile_stretch, random_augment
from sklearn_deeploc.screen import crop_cells

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FEATURE_LAYERS = ("conv8", "fc1", "fc2")


def timed(fn, repeats=2):
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def forward_flops(module, crop_size=60):
    """Multiply-adds x 2 of one crop's forward pass (conv and linear layers)."""
    flops = []

    def count(layer, inputs, output):
        if isinstance(layer, nn.Conv2d):
            kernel = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            flops.append(2 * output.numel() * kernel)
        elif isinstance(layer, nn.Linear):
            flops.append(2 * layer.in_features * layer.out_features)

    hooks = [m.register_forward_hook(count) for m in module.modules()]
    with torch.no_grad():
        module.eval()(torch.zeros(1, 2, crop_size, crop_size))
    for hook in hooks:
        hook.remove()
    return sum(flops)


def plain_eval_loop(
    module, X, *, output="fc2", channels_last=False, inference_mode=False, batch_size=128
):
    """The loop a user would write: stretch, five crops, fc2 features (or softmax), mean."""
    context = torch.inference_mode if inference_mode else torch.no_grad

    def forward(view):
        if output == "proba":
            return torch.softmax(module(view), dim=1)
        return module.forward_features(view, output)

    out = []
    with context():
        for start in range(0, len(X), batch_size):
            x = percentile_stretch(torch.from_numpy(X[start : start + batch_size]))
            views = five_crops(x, 60)
            if channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            out.append(sum(forward(v) for v in views) / 5)
    return torch.cat(out)


def plain_train_loop(X, codes, steps, batch_size=128, seed=0):
    torch.manual_seed(seed)
    net = DeepLocNet(n_classes=int(codes.max()) + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    stretched = percentile_stretch(torch.from_numpy(X))
    labels = torch.from_numpy(codes)
    net.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(X), batch_size))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(
            net(random_augment(stretched[idx], 60, rng)), labels[idx]
        )
        loss.backward()
        optimizer.step()


def matmul_gflops(n=2048):
    a, b = torch.rand(n, n), torch.rand(n, n)
    return 2 * n**3 / timed(lambda: a @ b, repeats=5) / 1e9


def cpu_description():
    """CPU model and the instruction sets that decide bf16 and int8 speed."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{model}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"avx512_bf16={torch.cpu._is_avx512_bf16_supported()}, "
        f"avx512_vnni={torch.cpu._is_vnni_supported()}, amx={torch.cpu._is_amx_tile_supported()}"
    )


def interleaved_rates(variants, n_cells, rounds=3):
    """Best cells/s of each variant over ``rounds`` rounds that take turns.

    Taking turns spreads the load of other processes over all variants alike;
    each round starts one variant later, so none always runs first or after
    the same neighbour.
    """
    for fn in variants.values():
        fn()
    names = list(variants)
    best = dict.fromkeys(names, float("inf"))
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: n_cells / seconds for name, seconds in best.items()}


def train_paper_network(steps):
    """A paper-architecture classifier trained briefly on 17 synthetic classes."""
    X, y = make_yeast_cells(20, random_state=0)
    start = time.perf_counter()
    clf = DeepLocClassifier(
        max_iter=steps, batch_size=32, validation_fraction=0.0, random_state=0
    ).fit(X, y)
    X_test, y_test = make_yeast_cells(8, random_state=1)
    print(
        f"trained {steps} steps of 32 cells in {time.perf_counter() - start:.0f} s; "
        f"accuracy on unseen synthetic cells {clf.score(X_test, y_test):.2f} "
        f"(17 classes, chance 0.06)"
    )
    return clf, X


def all_outputs(module, X, clf, precision):
    spec = {"crop_size": clf.crop_size, "preprocessing": clf.model_.preprocessing}
    return {
        name: predict_batches(module, X, output=name, precision=precision, **spec)
        for name in ("proba", *FEATURE_LAYERS)
    }


def precision_networks(clf, calibration, device):
    """The network to run at each precision this device supports, and int8's build time."""
    fast = inference_copy(clf.net_.module_, device)
    networks, build_seconds = {}, None
    for precision in PRECISIONS:
        try:
            used = check_precision(precision, device)
        except ValueError as error:
            print(f"{precision}: skipped ({error})")
            continue
        if used == "int8":
            start = time.perf_counter()
            networks[used] = quantized_copy(
                clf.net_.module_,
                calibration,
                crop_size=clf.crop_size,
                preprocessing=clf.model_.preprocessing,
            )
            build_seconds = time.perf_counter() - start
        else:
            networks[used] = fast
    return networks, build_seconds


def real_cells():
    """The real crops beside the project: Schuldiner HDF5 cells and one field's cells."""
    cells = {}
    if (REAL_DATA / "Schuldiner_test_set.hdf5").is_file():
        cells["Schuldiner"] = load_deeploc_hdf5(REAL_DATA / "Schuldiner_test_set.hdf5")[0]
    field = REAL_DATA / "field_r01c01f01"
    if (field / "cells.csv").is_file():
        import tifffile  # the "screen" extra

        # Protein (GFP) and the first cell marker, as the network's two channels.
        image = np.stack(
            [tifffile.imread(field / f"r01c01f01p01-ch{c}sk1fk1fl1.tiff") for c in (1, 2)]
        )
        centers = pd.read_csv(field / "cells.csv")
        cells["field"] = crop_cells(image, centers, x_column="Center_X", y_column="Center_Y").crops
    if not cells:
        print(f"real cells: skipped ({REAL_DATA} not found)")
    return cells


def top2_margin(proba):
    ordered = np.sort(proba, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def agreement_line(precision, dataset, reference, outputs):
    """Agreement with fp32, and how close to a tie the cells that changed class were."""
    agreement = precision_agreement(reference, outputs)
    changed = np.argmax(reference["proba"], 1) != np.argmax(outputs["proba"], 1)
    margins = top2_margin(reference["proba"])[changed]
    worst = max(agreement[f"{layer}_max_relative_error"] for layer in FEATURE_LAYERS)
    return (
        f"{precision:<6} {dataset:<11} {len(changed):5d} {agreement['top1_agreement']:7.3f} "
        f"{changed.sum():7d} {margins.max() if changed.any() else 0:10.4f} "
        f"{agreement['fc2_max_relative_error']:8.4f} {worst:8.4f}"
    )


def precision_benchmark(args):
    """Section 4: every precision against the plain fp32 loop, on a trained network."""
    print(f"\n{cpu_description()}")
    clf, X_train = train_paper_network(args.train_steps)
    X, _ = make_yeast_cells(-(-args.cells // 17), random_state=2)
    X = X[: args.cells]
    calibration = X_train[np.random.default_rng(0).permutation(len(X_train))[: args.calibration]]
    networks, build_seconds = precision_networks(clf, calibration, "cpu")
    if build_seconds is not None:
        print(f"int8 copy built in {build_seconds:.1f} s ({len(calibration)} calibration cells)")

    naive = copy.deepcopy(clf.net_.module_).eval()
    spec = {
        "output": "proba",
        "crop_size": clf.crop_size,
        "preprocessing": clf.model_.preprocessing,
    }
    variants = {"plain fp32 loop": lambda: plain_eval_loop(naive, X, output="proba")}
    variants.update(
        {
            precision: lambda net=net, precision=precision: predict_batches(
                net, X, precision=precision, **spec
            )
            for precision, net in networks.items()
        }
    )
    rates = interleaved_rates(variants, len(X))
    print(f"\n{'precision':<16} {'cells/s':>8} {'x plain':>8}   ({len(X)} cells, five crops)")
    for name, rate in rates.items():
        print(f"{name:<16} {rate:8.1f} {rate / rates['plain fp32 loop']:8.2f}")

    datasets = {"synthetic": X, **real_cells()}
    reference = {
        name: all_outputs(networks["fp32"], cells, clf, "fp32") for name, cells in datasets.items()
    }
    print(
        f"\n{'vs fp32':<6} {'cells':<11} {'n':>5} {'top-1':>7} {'changed':>7} "
        f"{'max margin':>10} {'fc2 err':>8} {'max err':>8}"
    )
    for precision in (p for p in networks if p != "fp32"):
        for dataset, cells in datasets.items():
            outputs = all_outputs(networks[precision], cells, clf, precision)
            print(agreement_line(precision, dataset, reference[dataset], outputs))
    print(
        "top-1: share of cells with fp32's most probable class; changed: cells that differ; "
        "max margin: the largest fp32 top-2 probability gap among them; fc2 err: largest "
        "absolute difference over the layer's largest fp32 value; max err: worst of conv8, "
        "fc1, fc2"
    )


def featurizer_at_revision(revision, clf, X, y, workdir):
    """``DeepLocFeaturizer`` of the package as it was at a git ``revision``, with ``clf``'s weights.

    The package source of that commit is extracted under another name into
    ``workdir`` and imported beside the current one, so that both featurizers
    run in one process, on the same network and cells.
    """
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "sklearn_deeploc"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(workdir, filter="data")
    name = f"sklearn_deeploc_{revision}"
    (Path(workdir) / "sklearn_deeploc").rename(Path(workdir) / name)
    sys.path.insert(0, str(workdir))
    before = importlib.import_module(name)
    old = before.DeepLocClassifier(
        max_iter=1, batch_size=32, validation_fraction=0.0, random_state=0
    ).fit(X, y)
    old.net_.module_.load_state_dict(clf.model_.network.state_dict())
    return before.DeepLocFeaturizer(old).fit(X)


def estimator_benchmark(args):
    """Sections 1-2 (then 3): the featurizer against plain PyTorch eval loops."""
    print(
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; paper network, {args.cells} cells x 5 crops of 60x60"
    )

    X, y = make_yeast_cells(-(-args.cells // 17), random_state=0)
    X, y = X[: args.cells], y[: args.cells]
    clf = DeepLocClassifier(max_iter=2, batch_size=32, validation_fraction=0.0, random_state=0).fit(
        X, y
    )
    net = copy.deepcopy(clf.net_.module_).eval()
    channels_last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    folded = inference_copy(net).to(memory_format=torch.contiguous_format)
    featurizer = DeepLocFeaturizer(clf).fit(X)

    gflop_per_crop = forward_flops(net) / 1e9
    work = 5 * args.cells * gflop_per_crop
    matmul = matmul_gflops()
    plain = "plain eval loop (NCHW, BN separate, no_grad)"
    variants = {
        plain: lambda: plain_eval_loop(net, X),
        "  + channels-last": lambda: plain_eval_loop(channels_last, X, channels_last=True),
        "  + inference_mode": lambda: plain_eval_loop(net, X, inference_mode=True),
        "  + BN folded (NCHW)": lambda: plain_eval_loop(folded, X),
        "DeepLocFeaturizer.transform": lambda: featurizer.transform(X),
    }
    with tempfile.TemporaryDirectory() as workdir:
        if args.before:
            before = featurizer_at_revision(args.before, clf, X, y, workdir)
            np.testing.assert_allclose(before.transform(X), featurizer.transform(X), atol=1e-5)
            variants[f"DeepLocFeaturizer.transform at {args.before}"] = lambda: before.transform(X)
            # The same code twice: the spread between two identical featurizers is the noise
            # floor against which the one at the earlier revision is compared.
            twin = DeepLocFeaturizer(clf).fit(X)
            variants["DeepLocFeaturizer.transform, a second one"] = lambda: twin.transform(X)
        rates = interleaved_rates(variants, args.cells, rounds=args.rounds)
    print(
        f"\nforward pass: {gflop_per_crop:.3f} GFLOP per crop; "
        f"matmul 2048x2048: {matmul:.0f} GFLOP/s; best of {args.rounds} interleaved rounds"
    )
    for name, rate in rates.items():
        gflops = rate * work / args.cells
        print(
            f"{name:<46} {rate:7.1f} cells/s  {gflops:6.1f} GFLOP/s "
            f"({gflops / matmul:.2f} of matmul)  {rate / rates[plain]:4.2f}x plain"
        )
    np.testing.assert_allclose(
        featurizer.transform(X), plain_eval_loop(net, X).numpy(), atol=1e-4, rtol=1e-3
    )
    print("featurizer output equals the plain loop's (atol 1e-4)")
    if args.before:
        print(f"featurizer output equals the one at {args.before} (atol 1e-5)")
    if not args.only_inference:
        training_benchmark(args, X, y)


def training_benchmark(args, X, y):
    """Section 3: ``DeepLocClassifier.fit`` against a plain PyTorch training loop."""
    codes = np.unique(y, return_inverse=True)[1]
    images = args.steps * 128
    t_plain = timed(lambda: plain_train_loop(X, codes, args.steps), repeats=1)
    fit = DeepLocClassifier(max_iter=args.steps, validation_fraction=0.0, random_state=0)
    t_fit = timed(lambda: fit.fit(X, y), repeats=1)
    print(f"\nplain PyTorch training loop   {images / t_plain:6.1f} images/s")
    print(
        f"DeepLocClassifier.fit         {images / t_fit:6.1f} images/s  "
        f"({t_plain / t_fit:.2f} of the plain loop; includes set-up and the inference copy)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=128, help="cells calibrating int8")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of section 1")
    parser.add_argument(
        "--before",
        metavar="REVISION",
        help="also time the featurizer of this git revision, in the same rounds",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--only-inference", action="store_true", help="sections 1 and 2 only")
    only.add_argument("--only-precision", action="store_true", help="section 4 only")
    args = parser.parse_args()
    if not args.only_precision:
        estimator_benchmark(args)
    if not args.only_inference:
        precision_benchmark(args)


if __name__ == "__main__":
    main()
