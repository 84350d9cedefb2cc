"""Benchmark: mean-JSV of ResNet-56 (10 classes) on 32 CIFAR-sized inputs.

Compares ``prunebench.trainability.jsv`` (``method="auto"``: vmap over samples of jacrev)
with the row-by-row autograd loop of the authors' TPP code (one forward of the batch, one
``torch.autograd.grad`` per class), measured in the same run, plus the other exact
variants. Each figure is the median of ``--repeats`` runs after one warm-up (the cases
interleaved), singular values included. Target: under 5 s on 2 CPU cores. Also prints how
busy other processes kept the CPUs during the run (Linux /proc/stat), since oversubscribed
cores slow 2-thread OpenMP kernels by up to 10x.

    .venv/bin/python bench/jsv.py [--threads 2] [--samples 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import NamedTuple

import torch

from prunebench.models import build_model
from prunebench.trainability import JSVStats, jacobian_singular_values


def cpu_busy() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs so far, or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Result(NamedTuple):
    median: float
    best: float
    singular_values: torch.Tensor


def loop_baseline(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TPP's compute_jacobian: a one-hot on y[:, c] for every sample, one backward per class."""
    model.eval()
    xs = x.clone().requires_grad_(True)
    y = model(xs)
    rows = []
    for c in range(y.shape[1]):
        grad_out = torch.zeros_like(y)
        grad_out[:, c] = 1
        (g,) = torch.autograd.grad(y, xs, grad_out, retain_graph=True)
        rows.append(g.reshape(len(x), -1))
    return torch.linalg.svdvals(torch.stack(rows, 1))


def timed(cases: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, Result]:
    """One warm-up each, then ``repeats`` rounds running every case once (interleaved, so a
    burst of load from other processes hits all cases alike)."""
    outs = {name: fn() for name, fn in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {n: Result(statistics.median(t), min(t), outs[n]) for n, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.model, in_channels=3, num_classes=10, input_size=(32, 32)).eval()
    x = torch.randn(args.samples, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    load = os.getloadavg()
    print(
        f"{args.model}, {args.samples} inputs 3x32x32, 10 classes, torch {torch.__version__}, "
        f"{args.threads} threads, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
        f"load average before {load[0]:.2f}"
    )
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "loop (baseline)": lambda: loop_baseline(model, x),
        "jsv auto (vmap jacrev, chunked)": lambda: jacobian_singular_values(model, x),
        "vmap jacrev, all samples at once": lambda: jacobian_singular_values(
            model, x, chunk_size=len(x)
        ),
        "batched (vmap over classes)": lambda: jacobian_singular_values(model, x, method="batched"),
    }
    busy0, own0 = cpu_busy(), time.process_time()
    results = timed(cases, args.repeats)
    busy1, own1 = cpu_busy(), time.process_time()
    base = results["loop (baseline)"]
    for name, r in results.items():
        s = r.singular_values
        err = ((s - base.singular_values).abs().max() / base.singular_values.abs().max()).item()
        print(
            f"  {name:34s} median {r.median:6.3f} s (best {r.best:6.3f} s)   "
            f"loop/this {base.median / r.median:4.2f}x   max rel diff {err:.1e}"
        )
    auto = results["jsv auto (vmap jacrev, chunked)"]
    auto_t, auto_s = auto.median, auto.singular_values
    stats = JSVStats.from_singular_values(auto_s, "eval")
    print(f"JSV_mean {stats.mean:.4f} (std {stats.std:.4f}, cond_mean {stats.cond_mean:.2f})")
    verdict = "PASS" if auto_t < 5.0 else "FAIL"
    print(f"target < 5 s: {verdict} ({auto_t:.3f} s); load average after {os.getloadavg()[0]:.2f}")
    if busy0 is not None and busy1 is not None:
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (busy1[0] - busy0[0]) / ticks
        total = (busy1[1] - busy0[1]) / ticks
        other = max(0.0, busy - (own1 - own0)) / max(total, 1e-9)
        print(f"other processes used {100 * other:.0f}% of all CPU time during the run")


if __name__ == "__main__":
    main()
