"""Training speed: seconds per epoch of a recipe's pretraining, fp32 vs bf16, same device.

For the GPU machine (one short, prepared run), e.g. ResNet-56 on the CIFAR-10 JPEG copy:

    python bench/epoch_speed.py --model resnet56 --data cifar10 \\
        --data-dir .data/cifar10-jpeg.zip --device cuda --epochs 2

Prints images/s per precision and the bf16/fp32 ratio measured in the same process (the
first epoch is a warm-up and not counted). On the CPU it runs too (small defaults).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import prunebench


def epoch_seconds(args: argparse.Namespace, precision: str) -> list[float]:
    recipe = {
        "data": {"name": args.data, "batch_size": args.batch_size, "val_size": 1000,
                 "augment": args.data.startswith("cifar"), "data_dir": args.data_dir,
                 **({"train_subset": args.subset} if args.subset else {})},
        "model": {"name": args.model},
        "pretrain": {"epochs": args.epochs, "lr": "0:0.05"},
        "prune": None, "retrain": None, "precision": precision, "device": args.device,
    }
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = prunebench.run(recipe, out=out)
        total = time.perf_counter() - t0
        rows = [m for m in res.metrics() if m.get("phase") == "pretrain"]
    print(f"  {precision}: {total:.1f} s total, per epoch "
          + ", ".join(f"{m['train_seconds']:.2f}" for m in rows))
    return [m["train_seconds"] for m in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--data", default="fashion_mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--subset", type=int, default=None, help="training images to use")
    args = ap.parse_args()
    out = {}
    for precision in ("fp32", "bf16"):
        secs = epoch_seconds(args, precision)
        steady = secs[1:] or secs
        out[precision] = sum(steady) / len(steady)
    print(json.dumps({"seconds_per_epoch": out, "bf16_speedup": out["fp32"] / out["bf16"],
                      **vars(args)}))


if __name__ == "__main__":
    main()
