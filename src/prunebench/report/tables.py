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
    best: bool = False  # the best cell of its column (marked in every format)


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
    #: a warning shown above the table in every format (e.g. single seed)
    warning: str | None = None


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


def _head(study: StudyData) -> str:
    return f"{study.title} [{study.preset}]" if study.preset else study.title


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


def single_seed_warning(study: StudyData) -> str | None:
    """The warning a single-seed study (or one with single-seed cells) shows."""
    runs = [len(study.runs(r, c)) for r in study.rows for c in study.columns]
    if not runs or max(runs) == 0 or min(n for n in runs if n) > 1:
        return None
    return ("single seed: these numbers are one run each; differences are not tested for "
            "significance (run the study with --seeds 3 or more)")


def mark_best(t: ReportTable) -> None:
    """Mark the highest mean of every column among the non-info rows (ties: all)."""
    rows = [r for r in t.rows if not r.info]
    for j in range(len(t.columns)):
        means = [r.cells[j].mean for r in rows if j < len(r.cells)
                 and r.cells[j].mean is not None]
        if len(means) < 2:
            continue
        top = max(means)
        for r in rows:
            if r.cells[j].mean is not None and r.cells[j].mean == top:
                r.cells[j].best = True


def accuracy_table(study: StudyData) -> ReportTable:
    """The paper's Table 6/7 layout for a study; the best cell of each column is marked."""
    n = _expected_seeds(study)
    t = ReportTable(
        "accuracy",
        f"{_head(study)}: top-1 test accuracy (%)",
        caption(study, "cells: mean ± std (ddof=1) over seeds of the final-epoch test "
                       "accuracy, never the best epoch; marked: best of its column"),
        list(study.columns), study=study.name, preset=study.preset,
        warning=single_seed_warning(study),
    )
    for row in study.rows:
        t.rows.append(Row(row, [stat_cell(_values(study.runs(row, col), lambda r: r.test_acc), n)
                                for col in study.columns]))
    mark_best(t)
    t.rows.append(_sparsity_row(study))
    return t


def findings_table(study: StudyData) -> ReportTable | None:
    """Per finding of the paper the study declares: each comparison (row ``better`` vs
    row ``worse`` in a column), its difference, seeds, Welch test and verdict; ``None``
    when the study declares none."""
    from prunebench.report.findings import evaluate

    results = evaluate(study)
    if not results:
        return None
    t = ReportTable(
        "findings",
        f"{_head(study)}: did the paper's findings hold here?",
        "Each finding: row 'better' should beat row 'worse' (final-epoch test accuracy) in "
        "each column; diff = mean(better) - mean(worse) in points; Welch's t-test where "
        "both rows have >= 2 seeds (alpha 0.05), else 'single seed: not tested'.",
        ["comparison", "column", "diff", "seeds", "test", "verdict"],
        study=study.name, preset=study.preset, first="finding",
    )
    for f in results:
        label = f"{f.claim}: {f.summary}"
        if not f.comparisons:
            t.rows.append(Row(label, [Cell("-"), Cell("-"), Cell("-"), Cell("-"), Cell("-"),
                                      Cell(f.note or f.status)]))
        for c in f.comparisons:
            t.rows.append(Row(label, [
                Cell(f"{c.better} vs {c.worse}"), Cell(c.column),
                Cell("-" if c.diff is None else f"{c.diff:+.2f}", c.diff),
                Cell(c.seeds, None, None, min(c.n_better, c.n_worse)),
                Cell(c.test_text, c.p), Cell(c.verdict)]))
    return t


def dense_diff_table(study: StudyData) -> ReportTable:
    """Accuracy minus the dense model's (per seed, same base model): the scale-free view."""
    n = _expected_seeds(study)
    t = ReportTable(
        "dense_diff",
        f"{_head(study)}: difference to the dense model (points)",
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
        f"{_head(study)}: trainability accuracy TA (%)",
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
        f"{_head(study)}: comparison setups computed from the runs",
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
    tables = [accuracy_table(study)]
    found = findings_table(study)
    if found is not None:
        tables.append(found)
    tables.append(dense_diff_table(study))
    ta = ta_table(study)
    if ta is not None:
        tables.append(ta)
    tables.append(setup_table(study))
    return tables


# -- renderers ------------------------------------------------------------------------------

def to_rich(t: ReportTable) -> RichTable:
    """A rich Table; every cell is a Text, so run text is never read as markup."""
    title = Text(t.title)
    if t.warning:
        title.append(f"\n⚠ {t.warning}", style="bold yellow")
    rt = RichTable(title=title, caption=Text(t.caption), caption_justify="left")
    rt.add_column(Text(t.first), justify="left")
    for c in t.columns:
        rt.add_column(Text(c), justify="right")
    for i, row in enumerate(t.rows):
        end = i + 1 < len(t.rows) and t.rows[i + 1].info and not row.info
        rt.add_row(Text(row.label, style="dim" if row.info else ""),
                   *(Text(c.text + " *", style="bold") if c.best else Text(c.text)
                     for c in row.cells), end_section=end)
    return rt


def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def to_markdown(t: ReportTable) -> str:
    lines = [f"**{_md_escape(t.title)}**", ""]
    if t.warning:
        lines += [f"> **⚠ {_md_escape(t.warning)}**", ""]
    lines.append("| " + " | ".join(_md_escape(c) for c in [t.first, *t.columns]) + " |")
    lines.append("|---|" + "---:|" * len(t.columns))
    for row in t.rows:
        label = f"*{_md_escape(row.label)}*" if row.info else _md_escape(row.label)
        lines.append("| " + " | ".join([label, *(f"**{_md_escape(c.text)}**" if c.best
                                                  else _md_escape(c.text)
                                                  for c in row.cells)]) + " |")
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
        rf"\caption{{{latex_escape(t.title)}. {latex_escape(t.caption)}"
        + (f" Warning: {latex_escape(t.warning)}." if t.warning else "") + "}",
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
                                 *(rf"\textbf{{{_latex_cell(c.text)}}}" if c.best
                                   else _latex_cell(c.text) for c in row.cells)]) + r" \\")
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
