"""Figures of a study (matplotlib, Agg; each written as PNG and SVG).

- ``accuracy``: test accuracy vs retraining epoch per variant, one panel per ratio
  (the paper's Fig. 2/3 kind);
- ``ta``: trainability accuracy per variant (bars per ratio);
- ``jsv``: mean Jacobian singular value vs retraining epoch (epoch 0 = right after
  pruning), when the runs measured it;
- ``ratio``: final accuracy vs ratio, pruning rows solid, scratch rows dashed;
- ``lr``: LR sensitivity, final accuracy vs initial retraining LR, for variants that differ
  only in the retraining LR (same schedule kind).

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so
reports can be made from threads and never open a window.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from prunebench.report.data import RunData, StudyData  # noqa: E402

KINDS = ("accuracy", "ta", "jsv", "ratio", "lr")

_RC = {"svg.hashsalt": "prunebench", "font.size": 9, "axes.titlesize": 9,
       "legend.fontsize": 7, "axes.grid": True, "grid.alpha": 0.3}


@dataclass
class FigureFile:
    kind: str
    title: str
    png: Path
    svg: Path


def _is_scratch(runs: list[RunData]) -> bool:
    return any(r.retrain_init == "scratch" for r in runs)


def _mean_curve(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float],
                                                                 list[float]]:
    by: dict[int, list[float]] = defaultdict(list)
    for c in curves:
        for e, v in c:
            by[e].append(v)
    xs = sorted(by)
    means = [statistics.fmean(by[x]) for x in xs]
    stds = [statistics.stdev(by[x]) if len(by[x]) > 1 else 0.0 for x in xs]
    return xs, means, stds


def _t(text: object) -> str:
    """User text (row and column labels, study names) as literal text: every ``$`` is
    escaped, so matplotlib never parses it as mathtext (``$10^{-3$`` would crash it)."""
    return str(text).replace("$", r"\$")


def _panels(study: StudyData, n: int) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(min(4.0 * n, 14), 3.3), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    return fig, list(axes)


def _styles(study: StudyData) -> dict[str, dict[str, Any]]:
    out = {}
    for i, row in enumerate(study.rows):
        scratch = _is_scratch(study.runs(row))
        out[row] = {"color": f"C{i % 10}", "linestyle": "--" if scratch else "-",
                    "marker": "s" if scratch else "o", "markersize": 3}
    return out


def _curve_figure(study: StudyData, metric: str, ylabel: str,
                  with_prune_point: bool) -> Figure | None:
    cols = study.columns
    styles = _styles(study)
    if not any(r.curve(metric) for r in study.all_runs):
        return None
    fig, axes = _panels(study, len(cols))
    for ax, col in zip(axes, cols, strict=True):
        for row in study.rows:
            curves = []
            for r in study.runs(row, col):
                c = r.curve(metric)
                if with_prune_point:
                    c = r.curve(metric, "prune") + c
                curves.append(c)
            xs, means, stds = _mean_curve(curves)
            if not xs:
                continue
            ax.plot(xs, means, label=_t(row), **styles[row])
            if any(stds):
                lo = [m - s for m, s in zip(means, stds, strict=True)]
                hi = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(xs, lo, hi, color=styles[row]["color"], alpha=0.15, lw=0)
        ax.set_title(_t(col))
        ax.set_xlabel("retraining epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(loc="best")
    return fig


def accuracy_figure(study: StudyData) -> Figure | None:
    return _curve_figure(study, "test_acc", "test accuracy (%)", with_prune_point=False)


def jsv_figure(study: StudyData) -> Figure | None:
    return _curve_figure(study, "jsv_mean", "mean JSV", with_prune_point=True)


def _stat(runs: list[RunData], get: Callable[[RunData], float | None]) -> tuple[float, float]:
    vals = [v for v in (get(r) for r in runs) if v is not None]
    if not vals:
        return float("nan"), 0.0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def ta_figure(study: StudyData) -> Figure | None:
    if not any(r.ta is not None for r in study.all_runs):
        return None
    rows, cols = study.rows, study.columns
    fig = Figure(figsize=(min(max(6.0, 1.5 + 0.5 * len(rows) * max(1, len(cols))), 14), 3.8),
                 layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(cols), 1)
    for j, col in enumerate(cols):
        stats = [_stat(study.runs(row, col), lambda r: r.ta) for row in rows]
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [m for m, _ in stats], width, yerr=[s for _, s in stats], capsize=2,
               label=_t(col), color=f"C{j % 10}")
    ax.set_xticks(range(len(rows)), [_t(r) for r in rows], rotation=20, ha="right")
    ax.set_ylabel("trainability accuracy TA (%)")
    ax.set_title("TA per variant (compare within one LR schedule)")
    ax.legend(loc="best")
    finite = [r.ta for r in study.all_runs if r.ta is not None]
    if finite:
        ax.set_ylim(bottom=max(0.0, min(finite) - 5))
    return fig


def ratio_figure(study: StudyData) -> Figure | None:
    cols = study.columns
    if len(cols) < 2:
        return None
    styles = _styles(study)
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    for row in study.rows:
        stats = [_stat(study.runs(row, col), lambda r: r.test_acc) for col in cols]
        ax.errorbar(range(len(cols)), [m for m, _ in stats], yerr=[s for _, s in stats],
                    capsize=2, label=_t(row), **styles[row])
    ax.set_xticks(range(len(cols)), [_t(c) for c in cols])
    ax.set_xlabel("pruning ratio")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title("Pruning (solid) vs scratch (dashed)")
    ax.legend(loc="best")
    return fig


def _lr_groups(study: StudyData) -> dict[str, dict[float, str]]:
    """Variants that differ only in the retraining LR: {group: {initial LR: row}}."""
    from prunebench.schedule import parse_schedule

    groups: dict[str, dict[float, str]] = defaultdict(dict)
    for row in study.rows:
        runs = study.runs(row)
        if not runs:
            continue
        r = runs[0]
        try:
            sched = parse_schedule(r.retrain_lr)
        except Exception:  # noqa: BLE001 - a schedule we cannot read has no LR axis
            continue
        rec = json.loads(json.dumps(r.recipe, default=str))
        rec.pop("seed", None)
        (rec.get("retrain") or {}).pop("lr", None)
        eff = r.record.retrain
        res_retrain = {} if eff is None else eff.model_dump(mode="json", exclude={"lr"})
        # the ratio axis varies by column: drop it from the key
        parts = study.column_key.split(".")
        cur = rec
        for p in parts[:-1]:
            cur = cur.get(p) or {}
        if isinstance(cur, dict):
            cur.pop(parts[-1], None)
        key = json.dumps([rec, res_retrain, sched.kind], sort_keys=True, default=str)
        groups[key].setdefault(sched.initial_lr, row)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def lr_figure(study: StudyData) -> Figure | None:
    groups = _lr_groups(study)
    if not groups:
        return None
    cols = study.columns
    fig, axes = _panels(study, len(cols))
    for ax, col in zip(axes, cols, strict=True):
        for gi, members in enumerate(groups.values()):
            lrs = sorted(members)
            stats = [_stat(study.runs(members[lr], col), lambda r: r.test_acc) for lr in lrs]
            label = _t(" / ".join(members[lr] for lr in lrs))
            ax.errorbar(lrs, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=2,
                        marker="o", markersize=3, color=f"C{gi % 10}", label=label)
        ax.set_xscale("log")
        ax.set_title(_t(col))
        ax.set_xlabel("initial retraining LR")
    axes[0].set_ylabel("final test accuracy (%)")
    axes[-1].legend(loc="best")
    return fig


BUILDERS: dict[str, tuple[str, Callable[[StudyData], Figure | None]]] = {
    "accuracy": ("Test accuracy vs retraining epoch", accuracy_figure),
    "ta": ("Trainability accuracy per variant", ta_figure),
    "jsv": ("Mean JSV vs retraining epoch", jsv_figure),
    "ratio": ("Accuracy vs pruning ratio", ratio_figure),
    "lr": ("LR sensitivity", lr_figure),
}


def write_figures(study: StudyData, folder: str | Path,
                  kinds: tuple[str, ...] = KINDS) -> list[FigureFile]:
    """Every figure the study's data allows, as ``<folder>/<kind>.png`` and ``.svg``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with matplotlib.rc_context(_RC):
        for kind in kinds:
            title, build = BUILDERS[kind]
            fig = build(study)
            if fig is None:
                continue
            fig.suptitle(f"{title} [{_t(study.key)}]", fontsize=9)
            png, svg = folder / f"{kind}.png", folder / f"{kind}.svg"
            fig.savefig(png, dpi=110)
            fig.savefig(svg, metadata={"Date": None})
            out.append(FigureFile(kind, title, png, svg))
    return out
