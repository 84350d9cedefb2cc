"""Tables in the paper's layout and their renderers (terminal, Markdown, LaTeX, CSV).

Rows are the study's variants, columns its ratios; a cell is the mean ± std (ddof=1) over
seeds of the FINAL-EPOCH test accuracy (never the best epoch). Under the variants an
info row gives the achieved parameter sparsity / speedup of each column. The caption
names the comparison setup the rows of each column *actually* share (computed from the
runs' fingerprints, seed by seed: :meth:`StudyData.column_setups`) with the study's
declared setup beside it, flagged "not met" where they differ, and the data copy that
was used. The ``setups`` table gives, per row and column, the setup the row shares with
the study's first row (a setup in a row label's parentheses is a claim, checked there).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.table import Table as RichTable
from rich.text import Text

from prunebench.report.data import RunData, StudyData, mean_std


@dataclass
class Cell:
    """One table cell: display text plus the numbers behind it (for sorting and CSV)."""

    text: str
    mean: float | None = None
    std: float | None = None
    n: int = 0


@dataclass
class Row:
    label: str
    cells: list[Cell]
    info: bool = False  # a summary row (sparsity/speedup), set apart under a rule


@dataclass
class ReportTable:
    name: str  # accuracy | ta | against (CSV key)
    title: str
    caption: str
    columns: list[str]  # header cells after the first ("variant") one
    rows: list[Row] = field(default_factory=list)
    study: str = ""
    preset: str = ""
    first: str = "variant"


# -- building -------------------------------------------------------------------------------

def stat_cell(values: list[float], expected: int | None = None, digits: int = 2) -> Cell:
    """``mean ± std`` of the values; ``-`` when none; ``(n=k)`` when seeds are missing."""
    if not values:
        return Cell("-")
    mean, std = mean_std(values)
    text = f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")
    if expected is not None and len(values) < expected:
        text += f" (n={len(values)})"
    return Cell(text, mean, std, len(values))


def _values(runs: list[RunData], get: Callable[[RunData], float | None]) -> list[float]:
    return [v for v in (get(r) for r in runs) if v is not None]


def _expected_seeds(study: StudyData) -> int:
    return len(study.seeds) or 1


def setup_caption(study: StudyData) -> str:
    """The computed setup of every column with the declaration beside it (one phrase)."""
    checks = study.column_setups()
    texts = {c.text for c in checks.values()}
    if len(texts) == 1:
        what = "every column" if len(checks) > 1 else "the column"
        return f"Comparison setup computed from the runs ({what}, seed-matched): {texts.pop()}"
    per = "; ".join(f"{col}: {c.text}" for col, c in checks.items())
    return f"Comparison setup computed from the runs per column (seed-matched): {per}"


def caption(study: StudyData, what: str) -> str:
    dense = study.dense_acc
    parts = [
        setup_caption(study),
        f"data: {study.data_label} [source: {study.data_source}]",
        f"model {study.model}",
        f"{len(study.seeds)} seed(s)",
        what,
    ]
    if dense is not None:
        parts.append(f"dense model {dense:.2f}%")
    if study.missing:
        parts.append(f"{study.missing} cell run(s) missing (study incomplete)")
    return "; ".join(parts) + "."


def _sparsity_row(study: StudyData) -> Row:
    cells = []
    for col in study.columns:
        runs = study.runs(column=col)
        sp = _values(runs, lambda r: r.param_sparsity)
        su = _values(runs, lambda r: r.speedup)
        if not sp and not su:
            cells.append(Cell("-"))
            continue
        s = sum(sp) / len(sp) if sp else None
        u = sum(su) / len(su) if su else None
        text = f"{'-' if s is None else f'{s:.2f}%'} / {'-' if u is None else f'{u:.2f}x'}"
        cells.append(Cell(text, s, None, len(sp)))
    return Row("param sparsity / speedup", cells, info=True)


def accuracy_table(study: StudyData) -> ReportTable:
    """The paper's Table 6/7 layout for a study."""
    n = _expected_seeds(study)
    t = ReportTable(
        "accuracy",
        f"{study.title} [{study.preset}]: top-1 test accuracy (%)",
        caption(study, "cells: mean ± std (ddof=1) over seeds of the final-epoch test "
                       "accuracy, never the best epoch"),
        list(study.columns), study=study.name, preset=study.preset,
    )
    for row in study.rows:
        t.rows.append(Row(row, [stat_cell(_values(study.runs(row, col), lambda r: r.test_acc), n)
                                for col in study.columns]))
    t.rows.append(_sparsity_row(study))
    return t


def dense_diff_table(study: StudyData) -> ReportTable:
    """Accuracy minus the dense model's (per seed, same base model): the scale-free view."""
    n = _expected_seeds(study)
    t = ReportTable(
        "dense_diff",
        f"{study.title} [{study.preset}]: difference to the dense model (points)",
        caption(study, "cells: mean ± std over seeds of final-epoch accuracy minus the "
                       "dense model's (the study's full-length dense run of the same seed, "
                       "else the run's own base model)"),
        list(study.columns), study=study.name, preset=study.preset,
    )

    def diff(r: RunData) -> float | None:
        return None if r.test_acc is None or r.dense_acc is None else r.test_acc - r.dense_acc

    for row in study.rows:
        t.rows.append(Row(row, [stat_cell(_values(study.runs(row, col), diff), n)
                                for col in study.columns]))
    return t


def ta_table(study: StudyData) -> ReportTable | None:
    """Trainability accuracy (paper Eq. 1) per variant and ratio; None when not measured."""
    if not any(r.ta is not None for r in study.all_runs):
        return None
    n = _expected_seeds(study)
    t = ReportTable(
        "ta",
        f"{study.title} [{study.preset}]: trainability accuracy TA (%)",
        caption(study, "TA = mean test accuracy over the first N retraining epochs "
                       "(N = the first LR stage, paper Eq. 1); compare TA only between rows "
                       "with the same LR schedule"),
        [*study.columns, "N", "retrain LR"], study=study.name, preset=study.preset,
    )
    for row in study.rows:
        runs = study.runs(row)
        cells = [stat_cell(_values(study.runs(row, col), lambda r: r.ta), n)
                 for col in study.columns]
        ns = sorted({r.ta_epochs for r in runs if r.ta_epochs is not None})
        lrs = sorted({r.retrain_lr for r in runs if r.retrain_lr})
        cells.append(Cell(",".join(map(str, ns)) or "-", float(ns[0]) if ns else None))
        cells.append(Cell(" | ".join(lrs) or "-"))
        t.rows.append(Row(row, cells))
    return t


def setup_table(study: StudyData) -> ReportTable:
    """Per row and column the setup the row's runs share with the first row's runs of the
    same seed (a setup in the row label's parentheses is a claim, checked beside it); the
    info row: the setup every row of the column shares, beside the study's declaration."""
    ref = study.rows[0] if study.rows else "-"
    declared = study.declared_setup
    t = ReportTable(
        "setups",
        f"{study.title} [{study.preset}]: comparison setups computed from the runs",
        f"Each cell: the setup the row's runs share with those of the first row ({ref}), "
        "computed from their fingerprints for each seed (runs of different seeds never share "
        "a base model) and intersected over the seeds; a setup in a row label's parentheses "
        "is a claim and is checked here. Last row: the setup all rows of the column share"
        + (f", beside the study's declared setup {declared}" if declared else "")
        + ". Missing or unfinished runs are skipped and named.",
        list(study.columns), study=study.name, preset=study.preset,
    )
    rows = study.row_setups()
    for row in study.rows:
        t.rows.append(Row(row, [Cell(rows[(row, col)].text) for col in study.columns]))
    cols = study.column_setups()
    t.rows.append(Row("all rows", [Cell(cols[col].text) for col in study.columns], info=True))
    return t


def study_tables(study: StudyData) -> list[ReportTable]:
    tables = [accuracy_table(study), dense_diff_table(study)]
    ta = ta_table(study)
    if ta is not None:
        tables.append(ta)
    tables.append(setup_table(study))
    return tables


# -- renderers ------------------------------------------------------------------------------

def to_rich(t: ReportTable) -> RichTable:
    """A rich Table; every cell is a Text, so run text is never read as markup."""
    rt = RichTable(title=Text(t.title), caption=Text(t.caption), caption_justify="left")
    rt.add_column(Text(t.first), justify="left")
    for c in t.columns:
        rt.add_column(Text(c), justify="right")
    for i, row in enumerate(t.rows):
        end = i + 1 < len(t.rows) and t.rows[i + 1].info and not row.info
        rt.add_row(Text(row.label, style="dim" if row.info else ""),
                   *(Text(c.text) for c in row.cells), end_section=end)
    return rt


def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def to_markdown(t: ReportTable) -> str:
    lines = [f"**{_md_escape(t.title)}**", ""]
    lines.append("| " + " | ".join(_md_escape(c) for c in [t.first, *t.columns]) + " |")
    lines.append("|---|" + "---:|" * len(t.columns))
    for row in t.rows:
        label = f"*{_md_escape(row.label)}*" if row.info else _md_escape(row.label)
        lines.append("| " + " | ".join([label, *(_md_escape(c.text) for c in row.cells)]) + " |")
    lines += ["", f"*{_md_escape(t.caption)}*", ""]
    return "\n".join(lines)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
          "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
          "±": r"$\pm$", "−": r"$-$"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in s)


def _latex_cell(text: str) -> str:
    return latex_escape(text)


def to_latex(t: ReportTable) -> str:
    """A booktabs table (``\\usepackage{booktabs}``)."""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(t.title)}. {latex_escape(t.caption)}}}",
        r"\begin{tabular}{l" + "r" * len(t.columns) + "}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in [t.first, *t.columns]) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(t.rows):
        if row.info and (i == 0 or not t.rows[i - 1].info):
            lines.append(r"\midrule")
        label = latex_escape(row.label)
        lines.append(" & ".join([rf"\textit{{{label}}}" if row.info else label,
                                 *(_latex_cell(c.text) for c in row.cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


CSV_FIELDS = ("study", "preset", "table", "variant", "column", "mean", "std", "n", "text")


def csv_rows(t: ReportTable) -> list[dict[str, object]]:
    """Tidy rows: one per table cell (with the numbers as numbers)."""
    out = []
    for row in t.rows:
        for col, c in zip(t.columns, row.cells, strict=True):
            out.append({"study": t.study, "preset": t.preset, "table": t.name,
                        "variant": row.label, "column": col,
                        "mean": "" if c.mean is None else _round(c.mean),
                        "std": "" if c.std is None else _round(c.std),
                        "n": c.n, "text": c.text})
    return out


def _round(x: float) -> float:
    return x if math.isinf(x) else round(x, 6)


def to_csv(tables: list[ReportTable]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for t in tables:
        w.writerows(csv_rows(t))
    return buf.getvalue()
