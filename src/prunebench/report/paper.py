"""The paper's own numbers (``paper_tables.yaml``) beside ours: ``--against paper``.

Entries are matched by study name, row label and column label; a study whose runs use
another dataset / model than the paper's table is still compared, with a caption saying
so (then the differences to each side's dense model are the meaningful numbers). Cells
with no counterpart on either side are listed and marked, never silently dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prunebench.report.data import RunData, StudyData, mean_std
from prunebench.report.tables import Cell, ReportTable, Row, stat_cell

PAPER_FILE = Path(__file__).with_name("paper_tables.yaml")
PAPER = "Wang et al., arXiv 2301.05219"


@dataclass
class PaperTable:
    id: str
    title: str
    study: str
    columns: list[str]
    rows: dict[str, list[tuple[float, float | None]]]
    when: dict[str, str] = field(default_factory=dict)
    default: bool = False
    dense: float | None = None
    sparsity: list[float] | None = None
    speedup: list[float] | None = None
    ta: dict[str, list[float]] = field(default_factory=dict)

    def value(self, row: str, column: str) -> tuple[float, float | None] | None:
        if row not in self.rows or column not in self.columns:
            return None
        return self.rows[row][self.columns.index(column)]

    def ta_value(self, row: str, column: str) -> float | None:
        vals = self.ta.get(row)
        return vals[self.columns.index(column)] if vals and column in self.columns else None


@functools.cache
def paper_tables() -> tuple[PaperTable, ...]:
    raw = yaml.safe_load(PAPER_FILE.read_text())
    out = []
    for t in raw["tables"]:
        rows = {str(k): [(float(c[0]), None if c[1] is None else float(c[1])) for c in v]
                for k, v in t["rows"].items()}
        out.append(PaperTable(
            id=t["id"], title=t["title"], study=t["study"], columns=list(t["columns"]),
            rows=rows, when=dict(t.get("when") or {}), default=bool(t.get("default")),
            dense=t.get("dense"), sparsity=t.get("sparsity"), speedup=t.get("speedup"),
            ta={str(k): [float(x) for x in v] for k, v in (t.get("ta") or {}).items()},
        ))
    return tuple(out)


def _identity(study: StudyData) -> dict[str, str]:
    r = study.first()
    if r is None:
        return {}
    return {"data": str((r.recipe.get("data") or {}).get("name", "")),
            "model": str((r.recipe.get("model") or {}).get("name", ""))}


def paper_table_for(study: StudyData) -> tuple[PaperTable | None, bool]:
    """The paper table of this study and whether its dataset/model match ours exactly."""
    cands = [t for t in paper_tables() if t.study == study.name]
    ident = _identity(study)
    for t in cands:
        if t.when and all(ident.get(k) == v for k, v in t.when.items()):
            return t, True
    for t in cands:
        if t.default:
            return t, False
    return (cands[0], False) if cands else (None, False)


def _fmt(v: float | None, std: float | None = None, sign: bool = False) -> str:
    if v is None:
        return "-"
    s = f"{v:+.2f}" if sign else f"{v:.2f}"
    return s + ("" if std is None else f" ± {std:.2f}")


def _diff_dense(runs: list[RunData]) -> float | None:
    d = [r.test_acc - r.dense_acc for r in runs
         if r.test_acc is not None and r.dense_acc is not None]
    return mean_std(d)[0] if d else None


def against_table(study: StudyData) -> ReportTable | None:
    """Ours beside the paper's numbers for one study (None when the paper has no table)."""
    pt, exact = paper_table_for(study)
    if pt is None:
        return None
    cols = ["ratio", "ours", "paper", "ours − paper", "ours − dense", "paper − dense"]
    has_ta = bool(pt.ta)
    if has_ta:
        cols += ["TA ours", "TA paper"]
    scope = ("same dataset and model as the paper" if exact else
             f"ours: {study.data_label}, {study.model}; the paper's setting differs, so "
             "compare the differences to the dense model, not absolute accuracies")
    cap = (f"{PAPER}, {pt.title}"
           + (f", dense {pt.dense:.2f}%" if pt.dense is not None else "")
           + f". Matched by study, row and column label; {scope}. "
           "Final-epoch test accuracy (%), mean ± std over seeds.")
    t = ReportTable("against", f"{study.title} [{study.preset}] vs the paper", cap, cols,
                    study=study.name, preset=study.preset)
    n = len(study.seeds) or 1
    for row in study.rows:
        for col in study.columns:
            runs = study.runs(row, col)
            ours = stat_cell([r.test_acc for r in runs if r.test_acc is not None], n)
            ref = pt.value(row, col)
            dd = _diff_dense(runs)
            cells = [Cell(col), ours]
            if ref is None:
                cells += [Cell("no counterpart"), Cell("-"), Cell(_fmt(dd, sign=True), dd),
                          Cell("-")]
            else:
                pm, ps = ref
                diff = None if ours.mean is None else ours.mean - pm
                pd = None if pt.dense is None else pm - pt.dense
                cells += [Cell(_fmt(pm, ps), pm, ps, 1), Cell(_fmt(diff, sign=True), diff),
                          Cell(_fmt(dd, sign=True), dd), Cell(_fmt(pd, sign=True), pd)]
            if has_ta:
                tas = [r.ta for r in runs if r.ta is not None]
                pta = pt.ta_value(row, col)
                cells += [stat_cell(tas, n), Cell(_fmt(pta), pta)]
            t.rows.append(Row(row, cells))
    # the paper's entries that we did not run
    for prow, vals in pt.rows.items():
        for col, (pm, ps) in zip(pt.columns, vals, strict=True):
            if prow in study.rows and col in study.columns:
                continue
            pd = None if pt.dense is None else pm - pt.dense
            cells = [Cell(col), Cell("not run"), Cell(_fmt(pm, ps), pm, ps, 1), Cell("-"),
                     Cell("-"), Cell(_fmt(pd, sign=True), pd)]
            if has_ta:
                pta = pt.ta_value(prow, col)
                cells += [Cell("-"), Cell(_fmt(pta), pta)]
            t.rows.append(Row(prow, cells, info=True))
    return t


def against_tables(studies: list[StudyData]) -> list[ReportTable]:
    return [t for t in (against_table(s) for s in studies) if t is not None]


def describe_missing(studies: list[StudyData]) -> list[str]:
    """Studies without a paper table (said in the report rather than skipped silently)."""
    return [s.key for s in studies if paper_table_for(s)[0] is None]


def as_dict(t: PaperTable) -> dict[str, Any]:
    return {"id": t.id, "title": t.title, "study": t.study, "columns": t.columns,
            "rows": {k: [list(c) for c in v] for k, v in t.rows.items()}}
