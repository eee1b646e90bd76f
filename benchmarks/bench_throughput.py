"""Inference and training throughput of the paper network, against plain PyTorch loops.

In one run, on the full DeepLoc architecture (random weights, batch-norm
statistics from a few training batches):

1. ``DeepLocFeaturizer.transform`` (fc2 features, five-crop mean) against a
   plain PyTorch eval loop over the same network, crops and five-crop mean
   (NCHW, batch norm as separate layers, ``torch.no_grad``); and the effect of
   channels-last, ``torch.inference_mode`` and batch-norm folding one at a time.
2. Achieved inference GFLOP/s against this machine's 2048x2048 float32 matmul.
3. ``DeepLocClassifier.fit`` images/s against a plain PyTorch training loop
   (same augmentation, Adam, batch 128).

Run: ``python benchmarks/bench_throughput.py [--cells 128] [--steps 4]``.
"""

import argparse
import copy
import platform
import time

import numpy as np
import torch
from torch import nn

from sklearn_deeploc import DeepLocClassifier, DeepLocFeaturizer, DeepLocNet
from sklearn_deeploc.datasets import make_yeast_cells
from sklearn_deeploc.inference import inference_copy
from sklearn_deeploc.preprocessing import five_crops, percentile_stretch, random_augment


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


def plain_eval_loop(module, X, *, channels_last=False, inference_mode=False, batch_size=128):
    """The loop a user would write: stretch, five crops, fc2 features, mean."""
    context = torch.inference_mode if inference_mode else torch.no_grad
    out = []
    with context():
        for start in range(0, len(X), batch_size):
            x = percentile_stretch(torch.from_numpy(X[start : start + batch_size]))
            views = five_crops(x, 60)
            if channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            out.append(sum(module.forward_features(v, "fc2") for v in views) / 5)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; paper network, {args.cells} cells x 5 crops of 60x60"
    )

    X, y = make_yeast_cells(-(-args.cells // 17), random_state=0)
    X, y = X[: args.cells], y[: args.cells]
    codes = np.unique(y, return_inverse=True)[1]
    clf = DeepLocClassifier(max_iter=2, batch_size=32, validation_fraction=0.0, random_state=0).fit(
        X, y
    )
    net = copy.deepcopy(clf.net_.module_).eval()
    featurizer = DeepLocFeaturizer(clf).fit(X)

    gflop_per_crop = forward_flops(net) / 1e9
    work = 5 * args.cells * gflop_per_crop
    matmul = matmul_gflops()
    variants = {
        "plain eval loop (NCHW, BN separate, no_grad)": lambda: plain_eval_loop(net, X),
        "  + channels-last": lambda: plain_eval_loop(
            net.to(memory_format=torch.channels_last), X, channels_last=True
        ),
        "  + inference_mode": lambda: plain_eval_loop(
            net.to(memory_format=torch.contiguous_format), X, inference_mode=True
        ),
        "  + BN folded (NCHW)": lambda: plain_eval_loop(
            inference_copy(net).to(memory_format=torch.contiguous_format), X
        ),
        "DeepLocFeaturizer.transform": lambda: featurizer.transform(X),
    }
    times = {name: timed(fn) for name, fn in variants.items()}
    base = times["plain eval loop (NCHW, BN separate, no_grad)"]
    print(
        f"\nforward pass: {gflop_per_crop:.3f} GFLOP per crop; "
        f"matmul 2048x2048: {matmul:.0f} GFLOP/s"
    )
    for name, seconds in times.items():
        print(
            f"{name:<46} {args.cells / seconds:7.1f} cells/s  {work / seconds:6.1f} GFLOP/s "
            f"({work / seconds / matmul:.2f} of matmul)  {base / seconds:4.2f}x plain"
        )
    np.testing.assert_allclose(
        featurizer.transform(X), plain_eval_loop(net, X).numpy(), atol=1e-4, rtol=1e-3
    )
    print("featurizer output equals the plain loop's (atol 1e-4)")

    images = args.steps * 128
    t_plain = timed(lambda: plain_train_loop(X, codes, args.steps), repeats=1)
    fit = DeepLocClassifier(max_iter=args.steps, validation_fraction=0.0, random_state=0)
    t_fit = timed(lambda: fit.fit(X, y), repeats=1)
    print(f"\nplain PyTorch training loop   {images / t_plain:6.1f} images/s")
    print(
        f"DeepLocClassifier.fit         {images / t_fit:6.1f} images/s  "
        f"({t_plain / t_fit:.2f} of the plain loop; includes set-up and the inference copy)"
    )


if __name__ == "__main__":
    main()
