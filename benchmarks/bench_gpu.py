"""Training and inference throughput on the training device: a GPU when there is one.

In one invocation, for the device that ``device="auto"`` picks (or ``--device``):

1. the device;
2. training images/s of ``DeepLocClassifier.fit`` and of a plain PyTorch loop
   doing the same work (crops stretched once on the device, the same random
   crops, flips and rotations there, Adam with the step decay, autocast at the
   same precision with fp32 weights, no wait for the device between steps),
   and their ratio, for each training precision; the plain loop runs as
   written naively (NCHW) and with fit's channels-last layout, so that the
   second ratio is fit's own overhead;
3. the projected wall time of the paper's recipe (10,000 steps of 128 cells,
   paper network) at fit's best rate;
4. inference cells/s with the five-crop mean for fp32 and bf16 (and fp16 on a
   GPU).

The two training loops take turns (best of two rounds each), so that other
load on the machine affects both alike; both timings include their set-up
(the stretch of every cell, building the network). ``--quick`` (or
``SKLEARN_DEEPLOC_BENCH_QUICK=1``) trains a small network on a few cells, so
that CI runs it on a CPU in about a minute; its projection is then not the
paper's.

Run: ``python benchmarks/bench_gpu.py [--quick] [--device cuda] [--steps N]``.
"""

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sklearn_deeploc import DeepLocClassifier, DeepLocNet
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.inference import (
    check_precision,
    inference_copy,
    predict_batches,
    resolve_device,
)
from sklearn_deeploc.preprocessing import percentile_stretch, random_augment

PAPER_STEPS, PAPER_BATCH = 10_000, 128
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
PREPROCESSING = {"stretch": [0.1, 99.9], "stretch_variant": "clip"}
QUICK_NET = {"conv_channels": (8,) * 8, "fc_units": (16, 16)}


def sizes(quick, device):
    """Network, cells and steps of a run: the paper's on a GPU, fewer steps on a CPU."""
    if quick:
        return {"architecture": QUICK_NET, "cells": 256, "batch": 32, "steps": 20, "infer": 256}
    gpu = device.type == "cuda"
    return {
        "architecture": {},
        "cells": 4096 if gpu else 1024,
        "batch": PAPER_BATCH,
        "steps": 300 if gpu else 6,
        "infer": 8192 if gpu else 128,
    }


def describe(device):
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return (
            f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, "
            f"CUDA {torch.version.cuda}, torch {torch.__version__}"
        )
    cpuinfo = Path("/proc/cpuinfo")
    names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
    model = names[0].split(":", 1)[1].strip() if names else platform.processor()
    return (
        f"CPU: {model}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes "
        "slow both loops, and make their ratio noisy)"
    )


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(X, codes, *, architecture, steps, batch, precision, device, layout):
    """A hand-written training loop doing fit's work, as a PyTorch user would write it."""
    torch.manual_seed(0)
    net = DeepLocNet(n_classes=int(codes.max()) + 1, **architecture)
    net = net.to(device=device, memory_format=layout).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    decay = torch.optim.lr_scheduler.StepLR(optimizer, step_size=25, gamma=0.96)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    crops = percentile_stretch(torch.from_numpy(X).to(device))
    labels = torch.from_numpy(codes).to(device)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        cells = torch.from_numpy(rng.integers(0, len(X), batch)).to(device)
        x = random_augment(crops[cells], 60, rng).contiguous(memory_format=layout)
        with torch.autocast(device.type, AUTOCAST.get(precision), enabled=precision != "fp32"):
            logits = net(x)
        loss = nn.functional.cross_entropy(logits.float(), labels[cells])
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        decay.step()
    synchronize(device)


def fit(X, y, *, architecture, steps, batch, precision, device):
    DeepLocClassifier(
        **architecture,
        max_iter=steps,
        batch_size=batch,
        validation_fraction=0.0,  # the plain loop does not validate either
        sampling="uniform",  # as the plain loop draws
        precision=precision,
        device=str(device),
        random_state=0,
    ).fit(X, y)
    synchronize(device)


def seconds(run):
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def training_rates(X, y, size, precision, device):
    """Best images/s of the plain loops and of fit over two alternating rounds."""
    codes = np.unique(y, return_inverse=True)[1]
    options = {
        "architecture": size["architecture"],
        "batch": size["batch"],
        "precision": precision,
        "device": device,
    }
    loops = {
        "plain": lambda steps: plain_loop(
            X, codes, steps=steps, layout=torch.contiguous_format, **options
        ),
        "plain, channels-last": lambda steps: plain_loop(
            X, codes, steps=steps, layout=torch.channels_last, **options
        ),
        "fit": lambda steps: fit(X, y, steps=steps, **options),
    }
    for loop in loops.values():  # warm-up: CUDA context, cuDNN and oneDNN kernel choices
        loop(1)
    best = dict.fromkeys(loops, np.inf)
    for _ in range(2):
        for name, loop in loops.items():
            best[name] = min(best[name], seconds(lambda loop=loop: loop(size["steps"])))
    return {name: size["steps"] * size["batch"] / t for name, t in best.items()}


def training_benchmark(X, y, size, precisions, device):
    print(
        f"\ntraining: {size['steps']} steps of {size['batch']} cells, {len(X)} cells, "
        f"{'paper network' if not size['architecture'] else 'small network'}"
    )
    print(
        f"{'precision':<10} {'plain loop':>12} {'plain, CL':>12} {'fit':>12} "
        f"{'fit/plain':>10} {'fit/plain CL':>13}   (images/s)"
    )
    fastest = 0.0
    for precision in precisions:
        rates = training_rates(X, y, size, precision, device)
        print(
            f"{precision:<10} {rates['plain']:>12.1f} {rates['plain, channels-last']:>12.1f} "
            f"{rates['fit']:>12.1f} {rates['fit'] / rates['plain']:>9.2f}x "
            f"{rates['fit'] / rates['plain, channels-last']:>12.2f}x"
        )
        fastest = max(fastest, rates["fit"])
    return fastest


def project_paper_recipe(rate, size):
    minutes = PAPER_STEPS * PAPER_BATCH / rate / 60
    network = "the small --quick network" if size["architecture"] else "the paper network"
    print(
        f"\npaper recipe ({PAPER_STEPS:,} steps x {PAPER_BATCH} cells) at fit's best "
        f"{rate:.1f} images/s with {network}: {minutes:.1f} min ({minutes / 60:.2f} h)"
    )


def inference_benchmark(size, precisions, device):
    X, _ = make_yeast_cells(-(-size["infer"] // 17), random_state=1)
    X = X[: size["infer"]]
    network = inference_copy(DeepLocNet(n_classes=17, **size["architecture"]).eval(), device)
    print(f"\ninference: {len(X)} cells, five-crop mean, batches of 128")
    for precision in precisions:

        def predict(precision=precision):
            predict_batches(
                network,
                X,
                output="proba",
                crop_size=60,
                preprocessing=PREPROCESSING,
                precision=precision,
            )
            synchronize(device)

        predict()
        rate = len(X) / min(seconds(predict) for _ in range(2))
        print(f"{precision:<10} {rate:>9.1f} cells/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small network, for CI")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, help="training steps per timed run")
    args = parser.parse_args()
    device = torch.device(resolve_device(args.device))
    size = sizes(args.quick or os.environ.get("SKLEARN_DEEPLOC_BENCH_QUICK") == "1", device)
    if args.steps:
        size["steps"] = args.steps
    print(f"device: {describe(device)}")
    reduced = ["bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    precisions = ["fp32"] + [p for p in reduced if check_precision(p, device) == p]
    X, y = make_yeast_cells(-(-size["cells"] // 17), random_state=0)
    rate = training_benchmark(X[: size["cells"]], y[: size["cells"]], size, precisions, device)
    project_paper_recipe(rate, size)
    inference_benchmark(size, precisions, device)
    print(
        "\ngoals: fit >= 1.0x the plain loop on a CPU, >= 0.9x on a GPU; the paper recipe "
        "under 5 minutes on one H100-class GPU"
    )


if __name__ == "__main__":
    main()
