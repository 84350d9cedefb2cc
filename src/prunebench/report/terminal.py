"""Rich tables for the terminal: the result table of a set of runs, one run's details."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from prunebench.errors import StoreError
from prunebench.record import RunRecord


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def _count(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M{unit}"
    if v >= 1e3:
        return f"{v / 1e3:.1f}K{unit}"
    return f"{v}{unit}"


def _cell_label(cell: dict[str, Any]) -> str:
    if "variant" in cell:
        return str(cell["variant"])
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cell.items()) or "-"


def result_rows(items: list[tuple[dict[str, Any], Any]]) -> list[dict[str, Any]]:
    """Flat rows (one per run) from ``[(cell, RunResult), ...]``, for tables and tests.
    Values come from each run's typed record; a run without one shows ``-``."""
    rows = []
    for cell, res in items:
        recipe = res.recipe
        try:
            rec: RunRecord | None = res.record if res.result else None
        except StoreError:
            rec = None
        dense = rec.dense if rec is not None else None
        pruned = rec.pruned if rec is not None else None
        rows.append(
            {
                "id": res.id,
                "variant": _cell_label(cell),
                "ratio": (recipe.get("prune") or {}).get("layers"),
                "retrain_lr": (recipe.get("retrain") or {}).get("lr"),
                "dense_acc": dense.test_acc if dense is not None else None,
                "pruned_acc": pruned.test_acc if pruned is not None else None,
                "retrained_acc": (rec.test_acc if rec is not None and recipe.get("retrain")
                                  else None),
                "params": (pruned.params_pruned if pruned is not None
                           else dense.params if dense is not None else None),
                "macs": (pruned.macs_pruned if pruned is not None
                         else dense.macs if dense is not None else None),
                "param_sparsity": pruned.param_sparsity if pruned is not None else None,
                "speedup": pruned.speedup if pruned is not None else None,
            }
        )
    return rows


def results_table(rows: list[dict[str, Any]], title: str = "Results") -> Table:
    t = Table(title=title, caption="accuracies: final-epoch top-1 test %, never the best epoch")
    for col in (
        "run",
        "variant",
        "dense",
        "pruned (before retrain)",
        "retrained",
        "params",
        "MACs",
        "sparsity %",
        "speedup",
    ):
        t.add_column(col, justify="left" if col in ("run", "variant") else "right")
    for r in rows:
        t.add_row(
            r["id"][:8],
            r["variant"],
            _pct(r["dense_acc"]),
            _pct(r["pruned_acc"]),
            _pct(r["retrained_acc"]),
            _count(r["params"]),
            _count(r["macs"]),
            _pct(r["param_sparsity"]),
            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
        )
    return t


def runs_table(runs: list[dict[str, Any]]) -> Table:
    t = Table(title="Runs", caption="test acc: final epoch; TA: trainability accuracy")
    numeric = ("test acc", "TA", "speedup")
    for col in ("id", "status", "model", "dataset", "method", "ratio", *numeric):
        t.add_column(col, justify="right" if col in numeric else "left")
    for r in runs:
        speedup = r.get("speedup")
        t.add_row(r["id"], r["status"], r["model"] or "-", r["dataset"] or "-",
                  r["method"] or "-", r["ratio"] or "-", _pct(r["test_acc"]),
                  _pct(r.get("ta")), "-" if speedup is None else f"{speedup:.2f}x")
    return t


METRIC_COLUMNS = (
    "phase",
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_acc",
    "test_acc",
    "seconds",
)


def metrics_table(metrics: list[dict[str, Any]]) -> Table:
    """Per-epoch rows; the JSV column appears when the run measured it."""
    cols = list(METRIC_COLUMNS)
    if any("jsv_mean" in m for m in metrics):
        cols.insert(-1, "jsv_mean")
    t = Table(title="Per-epoch metrics")
    for col in cols:
        t.add_column(col, justify="left" if col == "phase" else "right")
    for m in metrics:
        cells = []
        for col in cols:
            v = m.get(col)
            cells.append("-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)))
        t.add_row(*cells)
    return t
