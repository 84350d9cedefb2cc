"""Rich tables for the terminal: the result table of a set of runs, one run's details.

Every title and cell is a :class:`rich.text.Text`, never a markup string: run text (row
labels such as ``"L1 lr [/2]"`` or ``"L1 [w/o bn]"``, ids, recipe values) is shown as
written, never read as rich markup (which crashed on ``[/2]`` and swallowed ``[w/o bn]``).
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

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


def _text(value: Any) -> Text:
    """A table cell or title as plain text (a Text stays as it is)."""
    return value if isinstance(value, Text) else Text("-" if value is None else str(value))


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


def results_table(rows: list[dict[str, Any]], title: str | Text = "Results") -> Table:
    t = Table(title=_text(title),
              caption=Text("accuracies: final-epoch top-1 test %, never the best epoch"))
    t.add_column("run", no_wrap=True, overflow="fold", min_width=12)
    for col in (
        "variant",
        "dense",
        "pruned (before retrain)",
        "retrained",
        "params",
        "MACs",
        "sparsity %",
        "speedup",
    ):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        t.add_row(*map(_text, (
            r["id"],
            r["variant"],
            _pct(r["dense_acc"]),
            _pct(r["pruned_acc"]),
            _pct(r["retrained_acc"]),
            _count(r["params"]),
            _count(r["macs"]),
            _pct(r["param_sparsity"]),
            "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
        )))
    return t


#: ``runs`` table columns: (header, row key, priority: lower is dropped first on a narrow
#: terminal, numeric); the id is never dropped nor cut
RUN_COLUMNS = (
    ("id", "id", 9, False), ("variant", "variant", 8, False), ("method", "method", 7, False),
    ("ratio", "ratio", 6, False), ("test acc", "test_acc", 8, True),
    ("retrain LR", "lr", 5, False), ("seed", "seed", 3, True), ("init", "init", 4, False),
    ("status", "status", 5, False), ("study", "study", 2, False), ("TA", "ta", 2, True),
    ("speedup", "speedup", 1, True), ("model", "model", 1, False),
    ("dataset", "dataset", 1, False),
)


def _run_cell(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    if key in ("test_acc", "ta"):
        return _pct(v)
    if key == "speedup":
        return "-" if v is None else f"{v:.2f}x"
    return "-" if v is None or v == "" else str(v)


def runs_table(runs: list[dict[str, Any]], width: int | None = None) -> Table:
    """The runs of a store; on a console ``width`` columns wide the least important
    columns are dropped until the rest fits (the id column is never dropped or cut)."""
    cols = [c for c in RUN_COLUMNS if c[1] not in ("variant", "study")
            or any(r.get(c[1]) for r in runs)]
    if width is not None:
        def need(col: tuple[str, str, int, bool]) -> int:
            cells = [len(_run_cell(r, col[1])) for r in runs]
            longest = max([len(col[0]), *cells])
            if col[1] == "id":
                return max(12, longest) + 3
            return min(longest, 22) + 3

        while sum(need(c) for c in cols) + 1 > width:
            droppable = [c for c in cols if c[1] != "id"]
            if len(droppable) <= 3:
                break
            cols.remove(min(reversed(droppable), key=lambda c: c[2]))
    shown = {c[1] for c in cols}
    dropped = [c[0] for c in RUN_COLUMNS if c[1] not in shown and (
        c[1] not in ("variant", "study") or any(r.get(c[1]) for r in runs))]
    cap = "test acc: final epoch; TA: trainability accuracy"
    if dropped:
        cap += f"; not shown (narrow terminal): {', '.join(dropped)} (--json has all)"
    t = Table(title=Text("Runs"), caption=Text(cap))
    for head, key, _, numeric in cols:
        if key == "id":
            t.add_column(head, no_wrap=True, overflow="fold", min_width=12)
        else:
            t.add_column(head, justify="right" if numeric else "left", overflow="fold")
    for r in runs:
        t.add_row(*(Text(_run_cell(r, key)) for _, key, _, _ in cols))
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
    t = Table(title=Text("Per-epoch metrics"))
    for col in cols:
        t.add_column(col, justify="left" if col == "phase" else "right")
    for m in metrics:
        cells = []
        for col in cols:
            v = m.get(col)
            cells.append(Text("-" if v is None else (f"{v:g}" if isinstance(v, float)
                                                     else str(v))))
        t.add_row(*cells)
    return t
