"""Figures of a study (matplotlib, Agg; each written as PNG and SVG).

- ``accuracy``: test accuracy vs epoch after pruning per variant, one panel per ratio
  (the paper's Fig. 2/3 kind);
- ``ta``: trainability accuracy per variant (bars per ratio);
- ``jsv``: mean Jacobian singular value vs epoch after pruning (epoch 0 = right after
  pruning), when the runs measured it;
- ``ratio``: final accuracy vs ratio, pruning rows solid, scratch rows dashed;
- ``lr``: LR sensitivity, final accuracy vs initial retraining LR, for variants that differ
  only in the retraining LR (same schedule kind).

Every figure carries its own suptitle (what it shows, the study, and a subtitle about this
figure's data: seed count, line styles drawn, reference line), one legend (shared below the
panels of a multi-panel figure), a dotted dense-accuracy line where the y axis is test
accuracy, panels on shared axes (scratch and retrained rows on one "epoch after pruning"
axis from 0), TA bars from 0, and error bars / std bands only for cells of two or more seeds.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state), so
reports can be made from threads and never open a window.
"""

from __future__ import annotations

import json
import statistics
import textwrap
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


#: the gid of the dense reference line (``axhline``) in the accuracy-like figures
DENSE_GID = "dense-reference"


def _panels(study: StudyData, n: int) -> tuple[Figure, list[Any]]:
    """One panel per column, sharing both axes (same y range, same epoch/LR range)."""
    fig = Figure(figsize=(min(4.0 * n, 14), 3.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True, sharex=True)[0]
    return fig, list(axes)


def _styles(study: StudyData) -> dict[str, dict[str, Any]]:
    out = {}
    for i, row in enumerate(study.rows):
        scratch = _is_scratch(study.runs(row))
        out[row] = {"color": f"C{i % 10}", "linestyle": "--" if scratch else "-",
                    "marker": "s" if scratch else "o", "markersize": 3}
    return out


def _max_seeds(study: StudyData, get: Callable[[RunData], Any],
               rows: list[str] | None = None) -> int:
    """The most seeds any (row, column) cell has a value from."""
    counts = [sum(1 for r in study.runs(row, col) if get(r) is not None)
              for row in (study.rows if rows is None else rows) for col in study.columns]
    return max(counts, default=0)


def _seed_note(n: int, spread: str) -> str:
    if n <= 1:
        return "single seed (no error bars)"
    return f"mean over up to {n} seeds, {spread} = ±1 std"


def _line_note(study: StudyData, rows: list[str] | None = None) -> str | None:
    """The line-style key, only when the figure shows both kinds of rows."""
    kinds = {_is_scratch(study.runs(r)) for r in (study.rows if rows is None else rows)
             if study.runs(r)}
    return "solid: pruned + retrained, dashed: trained from scratch" if len(kinds) == 2 else None


def _finish(fig: Figure, study: StudyData, title: str, notes: list[str | None]) -> Figure:
    """The figure's own title: what it shows, of which study, with a subtitle about this
    figure's data (seeds, line styles, reference lines) and nothing else."""
    head = f"{title}: {_t(study.key)}"
    sub = textwrap.fill("; ".join(n for n in notes if n), int(fig.get_figwidth() * 15))
    fig.suptitle(f"{head}\n{sub}" if sub else head, fontsize=9)
    return fig


def _dense_line(ax: Any, dense: float | None) -> None:
    if dense is not None:
        ax.axhline(dense, color="0.35", linestyle=":", linewidth=1.0, zorder=1,
                   label=f"dense ({dense:.2f} %)", gid=DENSE_GID)


def _shared_legend(fig: Figure, axes: list[Any]) -> None:
    """One legend for the whole figure (panels share rows and styles), below the panels;
    a row that has no curve in one panel is still listed once."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncols=min(len(handles), 4))


def _errorbars(ax: Any, xs: list[Any], stats: list[tuple[float, float, int]],
               **kw: Any) -> None:
    """Points joined by lines, with ±1 std bars only for cells of two or more seeds."""
    means = [m for m, _, _ in stats]
    if any(n > 1 for _, _, n in stats):
        ax.errorbar(xs, means, yerr=[s if n > 1 else float("nan") for _, s, n in stats],
                    capsize=2, **kw)
    else:
        ax.plot(xs, means, **kw)


def _dense_note(study: StudyData, drawn: bool) -> str | None:
    """The subtitle's word on the dense line: drawn (one per panel where the panels' runs
    descend from different dense models), or why there is none."""
    if drawn:
        return ("dotted: dense model" if study.dense_acc is not None
                else "dotted: the dense model of each panel's runs")
    if study.dense_acc is None and study.dense_text():
        return "no dense line: the runs descend from several dense models"
    return None


def _curve_figure(study: StudyData, metric: str, ylabel: str, with_prune_point: bool,
                  title: str, dense: bool) -> Figure | None:
    """Curves of the finished runs (a diverged run's epochs are never averaged in); with
    ``dense``, each panel's dotted line is the dense model its runs descend from (none in
    a panel whose runs descend from several)."""
    cols = study.columns
    styles = _styles(study)
    if not any(r.curve(metric) for r in study.all_runs if r.finished):
        return None
    fig, axes = _panels(study, len(cols))
    n_seeds = 0
    drawn = False
    last = {True: 0, False: 0}  # last epoch drawn, scratch rows / retrained rows
    for ax, col in zip(axes, cols, strict=True):
        if dense:
            ref = study.dense_for(column=col)
            _dense_line(ax, ref)
            drawn = drawn or ref is not None
        for row in study.rows:
            curves = []
            for r in study.runs(row, col):
                if not r.finished:
                    continue
                c = r.curve(metric)
                if with_prune_point:
                    c = r.curve(metric, "prune") + c
                if c:
                    curves.append(c)
            xs, means, stds = _mean_curve(curves)
            if not xs:
                continue
            n_seeds = max(n_seeds, len(curves))
            scratch = _is_scratch(study.runs(row))
            last[scratch] = max(last[scratch], xs[-1])
            ax.plot(xs, means, label=_t(row), **styles[row])
            if len(curves) > 1 and any(stds):
                lo = [m - s for m, s in zip(means, stds, strict=True)]
                hi = [m + s for m, s in zip(means, stds, strict=True)]
                ax.fill_between(xs, lo, hi, color=styles[row]["color"], alpha=0.15, lw=0)
        ax.set_title(_t(col))
        ax.set_xlabel("epoch after pruning")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # every panel, and scratch and retrained rows alike, on one epoch axis from 0 (the
    # pruned model / the fresh init) to the longest run
    axes[0].set_xlim(0, max(max(last.values()), 1))
    axes[0].set_ylabel(ylabel)
    _shared_legend(fig, axes)
    budgets = None
    if last[True] and last[False] and last[True] != last[False]:
        budgets = (f"scratch rows train {last[True]} epochs, "
                   f"pruned rows retrain {last[False]}")
    return _finish(fig, study, title, [
        _seed_note(n_seeds, "band"), _line_note(study), budgets,
        _dense_note(study, drawn) if dense else None])


def accuracy_figure(study: StudyData) -> Figure | None:
    return _curve_figure(study, "test_acc", "test accuracy (%)", with_prune_point=False,
                         title=BUILDERS["accuracy"][0], dense=True)


def jsv_figure(study: StudyData) -> Figure | None:
    # no dense reference: the runs measure JSV from the pruned model on (epoch 0) only
    return _curve_figure(study, "jsv_mean", "mean JSV", with_prune_point=True,
                         title=BUILDERS["jsv"][0], dense=False)


def _stat(runs: list[RunData], get: Callable[[RunData], float | None]
          ) -> tuple[float, float, int]:
    """(mean, std, number of seeds) of one cell; std is 0 for one seed."""
    vals = [v for v in (get(r) for r in runs) if v is not None]
    if not vals:
        return float("nan"), 0.0, 0
    return (statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0),
            len(vals))


def ta_figure(study: StudyData) -> Figure | None:
    if not any(r.ta is not None for r in study.all_runs):
        return None
    rows, cols = study.rows, study.columns
    fig = Figure(figsize=(min(max(6.0, 1.5 + 0.5 * len(rows) * max(1, len(cols))), 14), 4.0),
                 layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(cols), 1)
    n_seeds = _max_seeds(study, lambda r: r.ta)
    for j, col in enumerate(cols):
        stats = [_stat(study.runs(row, col), lambda r: r.ta) for row in rows]
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        yerr = ([s if n > 1 else float("nan") for _, s, n in stats] if n_seeds > 1
                else None)
        # bars start at 0: their length is the value (no truncated axis)
        ax.bar(xs, [m for m, _, _ in stats], width, bottom=0, yerr=yerr,
               capsize=2 if yerr else 0, label=_t(col), color=f"C{j % 10}")
    ax.set_xticks(range(len(rows)), [_t(r) for r in rows], rotation=20, ha="right")
    ax.set_ylabel("trainability accuracy TA (%)")
    ax.set_ylim(bottom=0)
    ax.grid(False, axis="x")
    if len(cols) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="ratio")
    return _finish(fig, study, BUILDERS["ta"][0], [
        _t(cols[0]) if len(cols) == 1 else None,
        _seed_note(n_seeds, "bars"), "compare TA within one LR schedule"])


def ratio_figure(study: StudyData) -> Figure | None:
    cols = study.columns
    if len(cols) < 2:
        return None
    styles = _styles(study)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.subplots()
    dense = study.dense_acc  # one line only when every cell descends from one dense model
    _dense_line(ax, dense)
    for row in study.rows:
        stats = [_stat(study.runs(row, col), lambda r: r.test_acc) for col in cols]
        _errorbars(ax, list(range(len(cols))), stats, label=_t(row), **styles[row])
    ax.set_xticks(range(len(cols)), [_t(c) for c in cols])
    ax.set_xlabel("pruning ratio")
    ax.set_ylabel("final test accuracy (%)")
    ax.legend(loc="best")
    return _finish(fig, study, BUILDERS["ratio"][0], [
        _seed_note(_max_seeds(study, lambda r: r.test_acc), "bars"), _line_note(study),
        _dense_note(study, dense is not None)])


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
    drawn = False
    for ax, col in zip(axes, cols, strict=True):
        dense = study.dense_for(column=col)  # the dense model of this panel's runs
        _dense_line(ax, dense)
        drawn = drawn or dense is not None
        for gi, members in enumerate(groups.values()):
            lrs = sorted(members)
            stats = [_stat(study.runs(members[lr], col), lambda r: r.test_acc) for lr in lrs]
            label = _t(" / ".join(members[lr] for lr in lrs))
            _errorbars(ax, lrs, stats, marker="o", markersize=3, color=f"C{gi % 10}",
                       label=label)
        ax.set_xscale("log")
        ax.set_title(_t(col))
        ax.set_xlabel("initial retraining LR")
    axes[0].set_ylabel("final test accuracy (%)")
    _shared_legend(fig, axes)
    rows = [row for members in groups.values() for row in members.values()]
    return _finish(fig, study, BUILDERS["lr"][0], [
        _seed_note(_max_seeds(study, lambda r: r.test_acc, rows), "bars"),
        _dense_note(study, drawn)])


BUILDERS: dict[str, tuple[str, Callable[[StudyData], Figure | None]]] = {
    "accuracy": ("Test accuracy vs epoch after pruning", accuracy_figure),
    "ta": ("Trainability accuracy per variant", ta_figure),
    "jsv": ("Mean JSV vs epoch after pruning", jsv_figure),
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
            if not fig.get_suptitle():
                _finish(fig, study, title, [])
            png, svg = folder / f"{kind}.png", folder / f"{kind}.svg"
            fig.savefig(png, dpi=110)
            fig.savefig(svg, metadata={"Date": None})
            out.append(FigureFile(kind, title, png, svg))
    return out
