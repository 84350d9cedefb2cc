"""Stacked training speed: k fused copies vs k separate training steps, same device, same run.

    python bench/stack_speed.py --model resnet56 --k 8 --batch-size 128 --device cuda
    python bench/stack_speed.py --cpu-smoke          # seconds, every code path on tiny shapes

Per round, the sequential side runs k separate eager steps of k models (forward, loss,
backward, torch SGD step: what ``prunebench.train.train`` does per batch); the stacked side
runs one :meth:`prunebench.stack.StackedModel.train_step` of the k copies (vmap forward, one
backward, one fused SGD step). Both see the same synthetic batches (shared by the copies,
or one per copy with ``--distinct-data``), the first rounds are warm-up, CUDA is
synchronised before each clock read; the two sides alternate round by round and the
medians count (robust on a shared machine). Prints a table and one JSON line; ``speedup`` is
sequential seconds / stacked seconds per round (> 1: stacking is faster). On 2 CPU cores
the issue measured a fused LeNet-5 at 0.56x of 8 separate steps: on CPU stacking is a
correctness feature; GPUs are where it should pay. :func:`measure` is importable (the GPU
check can time pruned models with it).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prunebench.models import build_model  # noqa: E402
from prunebench.recipe import TrainCfg  # noqa: E402
from prunebench.stack import StackedModel  # noqa: E402
from prunebench.train import make_optimizer  # noqa: E402

SHAPES = {  # model -> (channels, size) of the dataset it is usually trained on
    "mlp": (1, 28), "mlp7_relu": (1, 28), "mlp7_linear": (1, 28), "lenet5": (1, 28),
    "resnet20": (3, 32), "resnet32": (3, 32), "resnet56": (3, 32), "resnet110": (3, 32),
    "vgg11": (3, 32), "vgg13": (3, 32), "vgg16": (3, 32), "vgg19": (3, 32),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    models: list[nn.Module],
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batch_size: int,
    rounds: int,
    warmup: int = 2,
    distinct_data: bool = False,
    device: torch.device,
) -> dict[str, float]:
    """Seconds per round of k sequential steps and of one stacked step of the k ``models``."""
    k = len(models)
    g = torch.Generator().manual_seed(0)
    n_data = k if distinct_data else 1
    xs = torch.randn(n_data, batch_size, *input_shape, generator=g).to(device)
    ys = torch.randint(0, num_classes, (n_data, batch_size), generator=g).to(device)
    cfgs = [TrainCfg(epochs=1, lr=str(0.01 * (i + 1)), momentum=0.9, weight_decay=5e-4)
            for i in range(k)]

    seq = [copy.deepcopy(m).to(device).train() for m in models]
    opts = [make_optimizer(m, c) for m, c in zip(seq, cfgs, strict=True)]

    def seq_round() -> None:
        for i, (m, opt) in enumerate(zip(seq, opts, strict=True)):
            j = i if distinct_data else 0
            loss = F.cross_entropy(m(xs[j]).float(), ys[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    net = StackedModel([copy.deepcopy(m).to(device) for m in models])

    def col(vals: list[float]) -> torch.Tensor:
        return torch.tensor(vals, dtype=net.dtype, device=device).view(-1, 1)

    lr = col([c.schedule.lr_at(0, 1) for c in cfgs])
    wd = col([c.weight_decay for c in cfgs])
    mom = col([c.momentum for c in cfgs])
    x_st = xs if distinct_data else xs[0]
    y_st = ys if distinct_data else ys.expand(k, batch_size)

    def stacked_round() -> None:
        net.train_step(x_st, y_st, shared=not distinct_data, precision="fp32",
                       lr=lr, wd=wd, mom=mom, nesterov=None)

    fns = {"sequential": seq_round, "stacked": stacked_round}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):  # interleaved, alternating order: fair under a shared machine
        for name in (fns if r % 2 == 0 else reversed(list(fns))):
            t0 = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    out: dict[str, float] = {
        f"{name}_s_per_round": statistics.median(ts) for name, ts in times.items()
    }
    out["speedup"] = out["sequential_s_per_round"] / out["stacked_s_per_round"]
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="lenet5", choices=sorted(SHAPES))
    ap.add_argument("--k", type=int, default=8, help="copies (default 8)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--distinct-data", action="store_true",
                    help="one batch per copy (different seeds' data order) instead of shared")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="tiny CPU run of every code path (seconds)")
    ap.add_argument("--json", type=Path, help="also write the result to this file")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        args.device, args.k, args.batch_size, args.rounds, args.warmup = "cpu", 3, 16, 3, 1
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    channels, size = SHAPES[args.model]
    results: dict[str, object] = {
        "model": args.model, "k": args.k, "batch_size": args.batch_size, "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"cpu ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
    }
    cases = [args.distinct_data] if not args.cpu_smoke else [False, True]
    for distinct in cases:
        models = []
        for i in range(args.k):
            torch.manual_seed(i)
            models.append(build_model(args.model, in_channels=channels,
                                      num_classes=args.num_classes, input_size=(size, size)))
        r = measure(models, (channels, size, size), args.num_classes,
                    batch_size=args.batch_size, rounds=args.rounds, warmup=args.warmup,
                    distinct_data=distinct, device=device)
        label = "distinct_data" if distinct else "shared_data"
        results[label] = r
        print(f"{args.model} k={args.k} batch {args.batch_size} {device} ({label}): "
              f"sequential {r['sequential_s_per_round'] * 1e3:.1f} ms, "
              f"stacked {r['stacked_s_per_round'] * 1e3:.1f} ms per round of {args.k} steps, "
              f"speedup {r['speedup']:.2f}x")
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
