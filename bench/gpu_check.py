"""The prepared GPU check of issue 11: one script, one JSON file and one table, < 8 minutes.

    python bench/gpu_check.py --cifar-zip .data/cifar10-jpeg.zip --out $OUT    # one H100/H200
    python bench/gpu_check.py --cpu-smoke                                      # seconds, CPU

Measures, in one process (the reference loop is the baseline of every ratio):

1. ResNet-56 / CIFAR-10 (the JPEG copy), batch 128: seconds per epoch of the reference loop
   (``bench/reference_loop.py``: DataLoader, per-sample transforms, fp32, eager), prunebench
   eager fp32 and the fast path (compile + CUDA graphs + channels_last + fused SGD + bf16).
2. Correctness pair: ResNet-20, 15 epochs on the JPEG copy, eager fp32 vs the fast path;
   final test accuracies should agree within 1 point.
3. 8 stacked ResNet-56 PR 0.5 runs (``prunebench.stack.train_stacked``) vs 8 sequential
   fast-path runs: the throughput ratio (on a 10,000-image subset, steady-state epochs).
4. Dense vs PR 0.9 ResNet-56 epoch time (fast path).
5. VGG-19 at CIFAR-100 shape (synthetic images), batch 256: reference, eager fp32, fast.
6. The projected Table 6 grid time (one seed, the paper's epochs) from the measured numbers.

Every measurement has its own try/except (an error is recorded, the rest still runs) and a
time limit (checked between epochs / batches; a measurement that would start with too
little time left is skipped and says so); the JSON and the table are rewritten after each
measurement, so even a killed run leaves its numbers. Peak GPU memory is recorded per
measurement. ``--cpu-smoke`` runs every code path on tiny shapes, a few batches each
(ResNet-20 / VGG-11 stand in, 16x16 images; compile off unless ``--smoke-compile``).
The machine it runs on may be bare (python, torch, numpy): ``src/`` is put on sys.path and
prunebench's other dependencies come from ``.wheels/`` (``bench/gpu_wheels.sh``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fnmatch
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import reference_loop  # noqa: E402

from prunebench.data import BatchLoader, load_dataset  # noqa: E402
from prunebench.models import build_model, count_macs  # noqa: E402
from prunebench.recipe import SpeedCfg, TrainCfg  # noqa: E402
from prunebench.train import Loaders, SpeedPlan, TrainState, resolve_speed, train  # noqa: E402

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

# the targets (seconds per epoch on one H100/H200 unless said otherwise)
TARGETS = {
    "resnet56_fast_s": 1.0, "resnet56_fast_stretch_s": 0.5, "resnet56_vs_reference_x": 8.0,
    "vgg19_fast_s": 0.6, "stack8_throughput_x": 4.0, "pr09_vs_dense_x": 3.0,
    "table6_minutes": 30.0, "correctness_points": 1.0,
}


class OutOfTime(Exception):
    """A measurement reached its time limit (what it finished is kept)."""


@dataclass
class Setup:
    device: torch.device
    smoke: bool
    deadline: float  # the whole check
    out: Path
    cifar_zip: str | None
    compile_in_smoke: bool = False
    workers: int = 12
    data: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    def left(self) -> float:
        return self.deadline - time.perf_counter()


# ----------------------------------------------------------------------------- data


def _tiny_jpeg_zip(folder: Path, classes: int = 10, per_class: int = 6, size: int = 16) -> Path:
    """A tiny ImageFolder zip of JPEGs (smoke runs exercise the real data path)."""
    import io

    from PIL import Image

    path = folder / "cifar10-smoke.zip"
    g = torch.Generator().manual_seed(0)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in (("train", per_class), ("test", max(2, per_class // 2))):
            for c in range(classes):
                for i in range(n):
                    arr = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=g)
                    buf = io.BytesIO()
                    Image.fromarray(arr.numpy()).save(buf, format="JPEG", quality=75)
                    zf.writestr(f"cifar10-smoke/{split}/class{c}/{i:04d}.jpg", buf.getvalue())
    return path


def cifar10(setup: Setup) -> dict[str, Any]:
    if "cifar10" not in setup.data:
        t0 = time.perf_counter()
        path = setup.cifar_zip
        if path is None:
            if not setup.smoke:
                raise FileNotFoundError("--cifar-zip is required (cifar10-jpeg.zip)")
            path = str(_tiny_jpeg_zip(Path(tempfile.mkdtemp(prefix="gpu-check-"))))
        ds = load_dataset("cifar10", path)
        setup.data["cifar10"] = {
            "train_x": ds.train_x, "train_y": ds.train_y, "test_x": ds.test_x,
            "test_y": ds.test_y, "mean": ds.mean, "std": ds.std, "classes": ds.num_classes,
            "source": str(path), "load_seconds": round(time.perf_counter() - t0, 2),
        }
    return setup.data["cifar10"]


def synthetic_cifar100(setup: Setup) -> dict[str, Any]:
    if "cifar100" not in setup.data:
        n, m, size = (64, 16, 16) if setup.smoke else (50000, 10000, 32)
        g = torch.Generator().manual_seed(1)
        setup.data["cifar100"] = {
            "train_x": torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            "train_y": torch.randint(0, 100, (n,), generator=g),
            "test_x": torch.randint(0, 256, (m, 3, size, size), dtype=torch.uint8, generator=g),
            "test_y": torch.randint(0, 100, (m,), generator=g),
            "mean": CIFAR100_MEAN, "std": CIFAR100_STD, "classes": 100,
            "source": "synthetic (CIFAR-100 shape)",
        }
    return setup.data["cifar100"]


def _subset(d: dict[str, Any], n: int | None) -> dict[str, Any]:
    if n is None or n >= d["train_x"].shape[0]:
        return d
    return {**d, "train_x": d["train_x"][:n], "train_y": d["train_y"][:n]}


# ----------------------------------------------------------------------------- runs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def fast_plan(setup: Setup) -> SpeedPlan:
    """The fast path as a recipe on this device gets it (``auto``), compile forced in smoke
    runs only with --smoke-compile; cuda_graphs/channels_last/fused are exercised on CPU too."""
    if setup.device.type == "cuda":
        return resolve_speed(SpeedCfg(), setup.device, 1000)
    cfg = SpeedCfg(compile="on" if setup.compile_in_smoke else "off", channels_last="on",
                   fused_sgd="on")
    return resolve_speed(cfg, setup.device, 1000)


def _model(setup: Setup, name: str, classes: int, size: int, seed: int = 0) -> torch.nn.Module:
    if setup.smoke:
        name = {"resnet56": "resnet20", "vgg19": "vgg11"}.get(name, name)
    torch.manual_seed(seed)
    return build_model(name, in_channels=3, num_classes=classes, input_size=(size, size))


def _loaders(setup: Setup, d: dict[str, Any], batch: int, precision: str,
             plan: SpeedPlan | None, seed: int = 0, eval_batch: int = 2048) -> Loaders:
    dev = setup.device
    common = {"mean": d["mean"], "std": d["std"], "device": dev}
    tr = BatchLoader(d["train_x"], d["train_y"], batch_size=batch, shuffle=True,
                     augment="crop_flip", seed=seed, **common)
    te = BatchLoader(d["test_x"], d["test_y"], batch_size=eval_batch, **common)
    return Loaders(tr, None, te, int(d["classes"]), precision, plan)


def prunebench_epochs(
    setup: Setup, model: torch.nn.Module, d: dict[str, Any], *, batch: int, precision: str,
    plan: SpeedPlan | None, epochs: int, limit_s: float, lr: str = "0:0.05",
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Train with prunebench's ``train()``; per-epoch train/compile seconds and accuracies."""
    if max_batches is not None:
        d = _subset(d, max_batches * batch)
    model = model.to(setup.device)
    loaders = _loaders(setup, d, batch, precision, plan)
    cfg = TrainCfg(epochs=epochs, lr=lr)
    stop = time.perf_counter() + min(limit_s, setup.left())
    rows: list[dict[str, Any]] = []

    def on_epoch(state: TrainState, _m: Any, _o: Any) -> None:
        rows[:] = state.history
        if time.perf_counter() > stop and state.epoch < epochs:
            raise OutOfTime(f"stopped by the time limit after {state.epoch} of {epochs} epochs")

    _reset_peak(setup.device)
    error = None
    t0 = time.perf_counter()
    try:
        train(model, loaders, cfg, phase="bench", on_epoch_end=on_epoch)
    except OutOfTime as exc:
        error = str(exc)
    wall = time.perf_counter() - t0
    steady = [r["train_seconds"] for r in rows[1:]] or [r["train_seconds"] for r in rows]
    out = {
        "epochs_done": len(rows), "epochs": epochs, "batch_size": batch, "precision": precision,
        "train_seconds": [r["train_seconds"] for r in rows],
        "compile_seconds": round(sum(r.get("compile_seconds", 0.0) for r in rows), 2),
        "seconds_per_epoch": round(statistics.median(steady), 4) if steady else None,
        "final_test_acc": rows[-1].get("test_acc") if rows else None,
        "wall_seconds": round(wall, 2), "peak_mem_gib": _peak_gib(setup.device),
        "speed": plan.record() if plan is not None else None,
        "images": int(d["train_x"].shape[0]),
    }
    if error:
        out["stopped"] = error
    return out


def reference_epochs(setup: Setup, model: torch.nn.Module, d: dict[str, Any], *, batch: int,
                     limit_s: float, max_batches: int | None = None) -> dict[str, Any]:
    _reset_peak(setup.device)
    stop = time.perf_counter() + min(limit_s, setup.left())
    r = reference_loop.measure(
        model, d["train_x"], d["train_y"], mean=d["mean"], std=d["std"], device=setup.device,
        batch_size=batch, workers=setup.workers, epochs=1,
        warmup_batches=1 if setup.smoke else 10, max_batches=max_batches, deadline=stop,
    )
    r["seconds_per_epoch"] = round(r["seconds_per_epoch"], 4)
    r["peak_mem_gib"] = _peak_gib(setup.device)
    return r


def _smoke_batches(setup: Setup) -> int | None:
    return 3 if setup.smoke else None


# ----------------------------------------------------------------------------- checks


def check_resnet56(setup: Setup) -> dict[str, Any]:
    d = cifar10(setup)
    size = int(d["train_x"].shape[-1])
    mb = _smoke_batches(setup)
    out: dict[str, Any] = {"data": d["source"], "load_seconds": d["load_seconds"]}
    for key, fn in (
        ("reference", lambda: reference_epochs(setup, _model(setup, "resnet56", 10, size), d,
                                               batch=128 if not setup.smoke else 16,
                                               limit_s=40, max_batches=mb)),
        ("eager_fp32", lambda: prunebench_epochs(setup, _model(setup, "resnet56", 10, size), d,
                                                 batch=128 if not setup.smoke else 16,
                                                 precision="fp32", plan=None, epochs=2,
                                                 limit_s=45, max_batches=mb)),
        ("fast", lambda: prunebench_epochs(setup, _model(setup, "resnet56", 10, size), d,
                                           batch=128 if not setup.smoke else 16,
                                           precision="bf16", plan=fast_plan(setup), epochs=3,
                                           limit_s=150, max_batches=mb)),
    ):
        out[key] = _guard(fn)
    ref = _get(out, "reference", "seconds_per_epoch")
    fast = _get(out, "fast", "seconds_per_epoch")
    eager = _get(out, "eager_fp32", "seconds_per_epoch")
    if ref and fast:
        out["fast_vs_reference_x"] = round(ref / fast, 2)
    if eager and fast:
        out["fast_vs_eager_x"] = round(eager / fast, 2)
    return out


def check_correctness(setup: Setup) -> dict[str, Any]:
    d = cifar10(setup)
    size = int(d["train_x"].shape[-1])
    epochs = 2 if setup.smoke else 15
    mb = _smoke_batches(setup)
    lr = f"cosine:0.1:0.0;warmup={0 if setup.smoke else 1}"
    bs = 16 if setup.smoke else 128
    out: dict[str, Any] = {"model": "resnet20", "epochs": epochs, "lr": lr}
    out["eager_fp32"] = _guard(lambda: prunebench_epochs(
        setup, _model(setup, "resnet20", 10, size, seed=0), d, batch=bs, precision="fp32",
        plan=None, epochs=epochs, limit_s=110, lr=lr, max_batches=mb))
    out["fast"] = _guard(lambda: prunebench_epochs(
        setup, _model(setup, "resnet20", 10, size, seed=0), d, batch=bs, precision="bf16",
        plan=fast_plan(setup), epochs=epochs, limit_s=90, lr=lr, max_batches=mb))
    a, b = _get(out, "eager_fp32", "final_test_acc"), _get(out, "fast", "final_test_acc")
    complete = all(_get(out, k, "epochs_done") == epochs for k in ("eager_fp32", "fast"))
    if a is not None and b is not None:
        out["acc_diff_points"] = round(abs(a - b), 3)
        out["within_1_point"] = bool(abs(a - b) <= 1.0 and complete)
    return out


def _pruned(setup: Setup, ratio: float, size: int, seed: int = 0) -> torch.nn.Module:
    from prunebench.pruning.structured import prunable_layers, prune_structured

    model = _model(setup, "resnet56", 10, size, seed=seed)
    ex = torch.randn(2, 3, size, size)
    names = [n for n in prunable_layers(model, ex) if fnmatch.fnmatch(n, "*layer*.conv1")]
    prune_structured(model, dict.fromkeys(names, ratio), "l1", ex)
    return model


def check_stack(setup: Setup) -> dict[str, Any]:
    from prunebench.stack import train_stacked

    k = 3 if setup.smoke else 8
    d = _subset(cifar10(setup), 48 if setup.smoke else 10000)
    size = int(d["train_x"].shape[-1])
    batch = 16 if setup.smoke else 128
    epochs = 2
    plan = fast_plan(setup)
    models = [_pruned(setup, 0.5, size, seed=i) for i in range(k)]
    out: dict[str, Any] = {"k": k, "images": int(d["train_x"].shape[0]), "ratio": 0.5,
                           "precision": "bf16", "epochs": epochs}
    seq_rows = []
    stop = time.perf_counter() + min(150, setup.left())
    for i, m in enumerate(models):
        if time.perf_counter() > stop:
            out["sequential_stopped"] = f"time limit after {i} of {k} runs"
            break
        seq_rows.append(prunebench_epochs(setup, copy.deepcopy(m), d, batch=batch,
                                          precision="bf16", plan=plan, epochs=epochs,
                                          limit_s=60))
    out["sequential_runs"] = len(seq_rows)
    per_run = [r["seconds_per_epoch"] for r in seq_rows if r.get("seconds_per_epoch")]
    if per_run:
        out["sequential_seconds_per_epoch_each"] = per_run
        out["sequential_seconds_per_epoch_k"] = round(statistics.median(per_run) * k, 4)
        out["sequential_compile_seconds"] = [r["compile_seconds"] for r in seq_rows]
    _reset_peak(setup.device)
    loaders = _loaders(setup, d, batch, "bf16", None)
    cfgs = [TrainCfg(epochs=epochs, lr=f"0:{0.01 * (i + 1)}") for i in range(k)]
    stacked = [copy.deepcopy(m).to(setup.device) for m in models]
    t0 = time.perf_counter()
    states = train_stacked(stacked, [loaders] * k, cfgs, phase="bench")
    st = states[0]
    if isinstance(st, Exception):
        raise st
    secs = [r["train_seconds"] for r in st.history]
    out["stacked_train_seconds"] = secs
    out["stacked_seconds_per_epoch"] = round(secs[-1], 4)
    out["stacked_wall_seconds"] = round(time.perf_counter() - t0, 2)
    out["stacked_peak_mem_gib"] = _peak_gib(setup.device)
    if per_run:
        out["throughput_x"] = round(out["sequential_seconds_per_epoch_k"] / secs[-1], 2)
    return out


def check_pr09(setup: Setup) -> dict[str, Any]:
    d = cifar10(setup)
    size = int(d["train_x"].shape[-1])
    mb = _smoke_batches(setup)
    dense_model = _model(setup, "resnet56", 10, size)
    pruned = _pruned(setup, 0.9, size)
    macs_d = count_macs(dense_model, (3, size, size))
    macs_p = count_macs(pruned, (3, size, size))
    out: dict[str, Any] = {"macs_dense": macs_d, "macs_pr09": macs_p,
                           "mac_ratio": round(macs_d / macs_p, 2)}
    dense = setup.results.get("resnet56", {}).get("fast")
    if isinstance(dense, dict) and dense.get("seconds_per_epoch"):
        out["dense"] = {"seconds_per_epoch": dense["seconds_per_epoch"],
                        "from": "resnet56.fast"}
    else:
        out["dense"] = _guard(lambda: prunebench_epochs(
            setup, dense_model, d, batch=16 if setup.smoke else 128, precision="bf16",
            plan=fast_plan(setup), epochs=3, limit_s=120, max_batches=mb))
    out["pr09"] = _guard(lambda: prunebench_epochs(
        setup, pruned, d, batch=16 if setup.smoke else 128, precision="bf16",
        plan=fast_plan(setup), epochs=3, limit_s=120, max_batches=mb))
    a, b = _get(out, "dense", "seconds_per_epoch"), _get(out, "pr09", "seconds_per_epoch")
    if a and b:
        out["pr09_vs_dense_x"] = round(a / b, 2)
    return out


def check_vgg19(setup: Setup) -> dict[str, Any]:
    d = synthetic_cifar100(setup)
    size = int(d["train_x"].shape[-1])
    mb = _smoke_batches(setup)
    batch = 8 if setup.smoke else 256
    out: dict[str, Any] = {"data": d["source"], "batch_size": batch}
    out["reference"] = _guard(lambda: reference_epochs(
        setup, _model(setup, "vgg19", 100, size), d, batch=batch, limit_s=30, max_batches=mb))
    out["eager_fp32"] = _guard(lambda: prunebench_epochs(
        setup, _model(setup, "vgg19", 100, size), d, batch=batch, precision="fp32",
        plan=None, epochs=2, limit_s=30, max_batches=mb))
    out["fast"] = _guard(lambda: prunebench_epochs(
        setup, _model(setup, "vgg19", 100, size), d, batch=batch, precision="bf16",
        plan=fast_plan(setup), epochs=3, limit_s=100, max_batches=mb))
    ref, fast = _get(out, "reference", "seconds_per_epoch"), _get(out, "fast", "seconds_per_epoch")
    if ref and fast:
        out["fast_vs_reference_x"] = round(ref / fast, 2)
    return out


# Table 6: ResNet-56 / CIFAR-10, one seed: a 200-epoch dense model; per ratio 4 L1 rows of
# 120 retraining epochs (stackable: one architecture, same epochs) and 2 Scratch rows of
# 200 epochs (Scratch-E: as many as the dense model).
TABLE6_RATIOS = {0.3: 1.45, 0.5: 1.99, 0.7: 3.59, 0.9: 11.58}  # ratio -> MAC speedup


def project_table6(results: dict[str, Any]) -> dict[str, Any]:
    """Minutes for the Table 6 grid from the measured epoch times (dense, PR 0.5 from the
    sequential stack runs, PR 0.9) and the measured stack throughput."""
    dense = _get(results, "resnet56", "fast", "seconds_per_epoch")
    pr09 = _get(results, "pr09", "pr09", "seconds_per_epoch")
    stack = results.get("stack") if isinstance(results.get("stack"), dict) else {}
    pr05_each = stack.get("sequential_seconds_per_epoch_each") or []
    images = stack.get("images")
    if not dense:
        return {"error": "no dense fast-path epoch time measured"}
    # epoch time vs MAC fraction, piecewise linear through the measured points
    pts = {1.0: dense}
    if pr05_each and images:
        pts[1 / 1.99] = statistics.median(pr05_each) * 50000 / images  # subset -> full epoch
    if pr09:
        pts[1 / 11.58] = pr09
    xs = sorted(pts)

    def t_at(frac: float) -> float:
        if len(xs) == 1:
            return pts[xs[0]] * frac  # only dense measured: proportional to MACs (optimistic)
        if frac <= xs[0]:
            return pts[xs[0]]  # no faster than the smallest measured model
        for lo, hi in zip(xs, xs[1:], strict=False):
            if frac <= hi:
                w = (frac - lo) / (hi - lo)
                return pts[lo] + w * (pts[hi] - pts[lo])
        return pts[xs[-1]]

    per_ratio = {}
    seq_total = 200 * dense
    for ratio, speedup in TABLE6_RATIOS.items():
        t = t_at(1 / speedup)
        per_ratio[str(ratio)] = {"seconds_per_epoch": round(t, 4), "epochs": 4 * 120 + 2 * 200}
        seq_total += t * (4 * 120 + 2 * 200)
    out: dict[str, Any] = {
        "epochs": 200 + 4 * (4 * 120 + 2 * 200), "dense_seconds_per_epoch": dense,
        "per_ratio": per_ratio, "measured_points": {f"{k:.4f}": round(v, 4) for k, v in
                                                    pts.items()},
        "sequential_minutes": round(seq_total / 60, 1),
    }
    x = stack.get("throughput_x")
    if x:
        # the 4 L1 rows (120 epochs) and the 2 Scratch rows (200 epochs) of a ratio form two
        # stacks; assumes the k=8 per-run gain applies to them (optimistic for k=4 and 2)
        stacked = 200 * dense + sum(
            t_at(1 / s) * (4 * 120 + 2 * 200) / x for s in TABLE6_RATIOS.values())
        out["stacked_minutes"] = round(stacked / 60, 1)
        out["stack_throughput_x_used"] = x
        out["assumption"] = ("stacked: the measured k=8 throughput gain applied to the stacks "
                             "of 4 (L1, 120 epochs) and 2 (Scratch, 200 epochs) per ratio")
    return out


# ----------------------------------------------------------------------------- plumbing


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _error(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc()[-3000:]}


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one failure must not lose the rest
        return _error(exc)


CHECKS: list[tuple[str, Callable[[Setup], dict[str, Any]], float]] = [
    # name, function, seconds it needs at least to be worth starting
    ("resnet56", check_resnet56, 60),
    ("correctness", check_correctness, 120),
    ("stack", check_stack, 60),
    ("pr09", check_pr09, 40),
    ("vgg19", check_vgg19, 60),
]


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}"
    return f"{v}{unit}"


def table(results: dict[str, Any]) -> str:
    r = results
    lines = [f"# GPU check ({r['meta']['device_name']}, torch {r['meta']['torch']}, "
             f"{r['meta']['date']}{', CPU SMOKE' if r['meta']['smoke'] else ''})", "",
             "| measurement | value | target |", "|---|---|---|"]

    def row(name: str, value: Any, target: str = "") -> None:
        lines.append(f"| {name} | {value} | {target} |")

    for key, label in (("resnet56", "ResNet-56 / CIFAR-10 b128"),
                       ("vgg19", "VGG-19 / CIFAR-100 shape b256")):
        sec = r.get(key, {})
        for part in ("reference", "eager_fp32", "fast"):
            p = sec.get(part, {}) if isinstance(sec, dict) else {}
            val = (f"error: {p['error'][:80]}" if isinstance(p, dict) and "error" in p else
                   f"{_fmt(_get(p, 'seconds_per_epoch'), ' s/epoch')}"
                   f" (peak {_fmt(_get(p, 'peak_mem_gib'), ' GiB')}"
                   + (f", compile {_fmt(_get(p, 'compile_seconds'), ' s')}"
                      if part == "fast" else "") + ")")
            tgt = ""
            if part == "fast":
                tgt = "<= 1.0 s (stretch 0.5)" if key == "resnet56" else "<= 0.6 s"
            row(f"{label}: {part}", val, tgt)
        if isinstance(sec, dict) and "fast_vs_reference_x" in sec:
            row(f"{label}: fast vs reference", _fmt(sec["fast_vs_reference_x"], "x"),
                ">= 8x" if key == "resnet56" else "")
        if isinstance(sec, dict) and "error" in sec:
            row(label, f"error: {sec['error'][:100]}")
    c = r.get("correctness", {})
    if isinstance(c, dict):
        row("ResNet-20 15 epochs: eager fp32 / fast final test acc",
            f"{_fmt(_get(c, 'eager_fp32', 'final_test_acc'))} / "
            f"{_fmt(_get(c, 'fast', 'final_test_acc'))} (diff {_fmt(c.get('acc_diff_points'))})"
            + (f" error: {c['error'][:80]}" if "error" in c else ""), "within 1 point")
    s = r.get("stack", {})
    if isinstance(s, dict):
        row(f"{s.get('k', 8)} stacked ResNet-56 PR 0.5 vs sequential fast path",
            f"{_fmt(s.get('throughput_x'), 'x')} (stacked "
            f"{_fmt(s.get('stacked_seconds_per_epoch'), ' s')}, sequential "
            f"{_fmt(s.get('sequential_seconds_per_epoch_k'), ' s')} per epoch of "
            f"{s.get('images')} images)" + (f" error: {s['error'][:80]}" if "error" in s else ""),
            ">= 4x")
    p = r.get("pr09", {})
    if isinstance(p, dict):
        row("ResNet-56 PR 0.9 vs dense epoch time (fast path)",
            f"{_fmt(p.get('pr09_vs_dense_x'), 'x')} ({_fmt(_get(p, 'pr09', 'seconds_per_epoch'))}"
            f" vs {_fmt(_get(p, 'dense', 'seconds_per_epoch'))} s; MACs "
            f"{_fmt(p.get('mac_ratio'), 'x')} fewer)"
            + (f" error: {p['error'][:80]}" if "error" in p else ""), ">= 3x")
    t = r.get("table6", {})
    if isinstance(t, dict):
        row("Table 6 grid projection (one seed)",
            f"{_fmt(t.get('stacked_minutes'), ' min')} stacked, "
            f"{_fmt(t.get('sequential_minutes'), ' min')} sequential"
            + (f" error: {t['error']}" if "error" in t else ""), "< 30 min")
    lines.append("")
    lines.append(f"total {r['meta'].get('total_seconds', '-')} s")
    return "\n".join(lines) + "\n"


def write(setup: Setup) -> None:
    setup.out.mkdir(parents=True, exist_ok=True)
    (setup.out / "gpu_check.json").write_text(json.dumps(setup.results, indent=2,
                                                         default=str) + "\n")
    (setup.out / "gpu_check.md").write_text(table(setup.results))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-zip", default=None, help="path to cifar10-jpeg.zip")
    default_out = os.environ.get("OUT") or str(ROOT / "bench" / "out")
    ap.add_argument("--out", default=default_out, help="output folder (default $OUT or "
                                                       "bench/out)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="whole-check time limit in seconds (default 450: under 8 minutes)")
    ap.add_argument("--only", default=None, help="comma-separated checks: " +
                    ",".join(n for n, _, _ in CHECKS))
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="every code path on tiny CPU shapes, a few batches each (seconds)")
    ap.add_argument("--smoke-compile", action="store_true",
                    help="with --cpu-smoke: also torch.compile (slow on CPU)")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1),
                    help="reference loop DataLoader workers (default min(12, cores))")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    smoke = args.cpu_smoke
    if smoke:
        torch.set_num_threads(min(2, torch.get_num_threads()))
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            ap.error("no CUDA device: use --cpu-smoke on a CPU machine")
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    setup = Setup(device=device, smoke=smoke, deadline=t_start + args.budget_s,
                  out=Path(args.out), cifar_zip=args.cifar_zip,
                  compile_in_smoke=args.smoke_compile,
                  workers=1 if smoke else max(1, args.workers))
    setup.results["meta"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"cpu ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "python": sys.version.split()[0], "smoke": smoke,
        "budget_s": args.budget_s, "cifar_zip": args.cifar_zip, "targets": TARGETS,
        "reference_transforms": reference_loop.transforms_kind(),
        "reference_workers": setup.workers, "argv": sys.argv[1:] if argv is None else argv,
    }
    only = set(args.only.split(",")) if args.only else None
    for name, fn, need in CHECKS:
        if only is not None and name not in only:
            continue
        if not smoke and setup.left() < need:
            setup.results[name] = {"skipped": f"{setup.left():.0f} s left of the budget, "
                                              f"needs ~{need:.0f} s"}
            write(setup)
            continue
        t0 = time.perf_counter()
        print(f"[gpu_check] {name} ... ({setup.left():.0f} s left)", flush=True)
        try:
            res = fn(setup)
        except Exception as exc:  # noqa: BLE001 - recorded; the next check still runs
            res = _error(exc)
        res["check_seconds"] = round(time.perf_counter() - t0, 1)
        setup.results[name] = res
        with contextlib.suppress(Exception):
            setup.results["table6"] = project_table6(setup.results)
        setup.results["meta"]["total_seconds"] = round(time.perf_counter() - t_start, 1)
        write(setup)
        print(f"[gpu_check] {name} done in {res['check_seconds']} s"
              + (f": ERROR {res['error'][:200]}" if "error" in res else ""), flush=True)
    try:
        setup.results["table6"] = project_table6(setup.results)
    except Exception as exc:  # noqa: BLE001
        setup.results["table6"] = _error(exc)
    setup.results["meta"]["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write(setup)
    print(table(setup.results))
    print(f"[gpu_check] wrote {setup.out / 'gpu_check.json'} and {setup.out / 'gpu_check.md'}")
    return setup.results


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    # skip interpreter teardown (DataLoader workers, compile workers): the files are written
    os._exit(0)
