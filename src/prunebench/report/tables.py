"""Tables in the paper's layout and their renderers (terminal, Markdown, LaTeX, CSV).

Rows are the study's variants, columns its ratios; a cell is the mean ± std (ddof=1) over
seeds of the FINAL-EPOCH test accuracy (never the best epoch), one value per seed (a run
repeated under one seed counts once: :func:`prunebench.report.data.mark_duplicates`); a
run that diverged or failed is never averaged, and the cell says so. Under the variants
an info row gives the achieved parameter sparsity / speedup of each column (each distinct
rate when the runs differ, never their mean). The dense accuracy the caption names is
the one every cell descends from, else each cell's. The caption
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
    digits: int = 2  # the decimals ``text`` shows ``mean`` with (best cells compare these)


@dataclass
class Row:
    label: str
    cells: list[Cell]
    info: bool = False  # a summary row (sparsity/speedup), set apart under a rule
    #: the row's one CSV record, when its cells are fields rather than one value per
    #: column (a findings comparison: its column label, difference, seeds and verdict)
    csv: dict[str, object] | None = None


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
    return Cell(text, mean, std, len(values), digits=digits)


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
        return f"Comparison setup ({what}, seed-matched, from the runs): {texts.pop()}"
    per = "; ".join(f"{col}: {c.text}" for col, c in checks.items())
    return f"Comparison setup per column (seed-matched, from the runs): {per}"


def unfinished_text(study: StudyData) -> str | None:
    """``"2 cell run(s) missing (study incomplete)"``, or with runs that ended without a
    result ``"3 cell run(s) without a finished run: 1 missing, 2 diverged"``."""
    counts = study.unfinished()
    n = sum(counts.values())
    if not n:
        return None
    if set(counts) == {"missing"}:
        return f"{n} cell run(s) missing (study incomplete)"
    return (f"{n} cell run(s) without a finished run: "
            + ", ".join(f"{k} {status}" for status, k in sorted(counts.items()))
            + " (no value in those cells)")


def duplicates_text(study: StudyData, most: int = 3) -> str | None:
    """The cells counted once (one value per row, column and seed), said in the caption."""
    notes = study.duplicates
    if not notes:
        return None
    more = f"; and {len(notes) - most} more" if len(notes) > most else ""
    return "counted once (one value per row, column and seed): " + "; ".join(
        notes[:most]) + more


def caption(study: StudyData, what: str) -> str:
    parts = [
        setup_caption(study),
        f"data: {study.data_label} [source: {study.data_source}]",
        f"model {study.model}",
        f"{len(study.seeds)} seed(s)",
        what,
    ]
    for extra in (study.dense_text(), unfinished_text(study), duplicates_text(study)):
        if extra:
            parts.append(extra)
    return "; ".join(parts) + "."


def _rate_text(s: float | None, u: float | None) -> str:
    return f"{'-' if s is None else f'{s:.2f}%'} / {'-' if u is None else f'{u:.2f}x'}"


def _sparsity_row(study: StudyData, most: int = 3) -> Row:
    """The achieved rate of each column: never an average of different rates (a column
    whose runs differ shows each distinct rate, or "mixed" and the range)."""
    cells = []
    for col in study.columns:
        rates = {}
        for r in study.runs(column=col):
            s, u = r.param_sparsity, r.speedup
            if s is None and u is None:
                continue
            # one rate as displayed: runs that print the same are one rate
            rates.setdefault(_rate_text(s, u), (s, u))
        if not rates:
            cells.append(Cell("-"))
        elif len(rates) == 1:
            text, (s, _) = next(iter(rates.items()))
            cells.append(Cell(text, s, None, 1))
        elif len(rates) <= most:
            cells.append(Cell("mixed: " + " | ".join(sorted(rates)), None, None, len(rates)))
        else:
            sps = sorted(s for s, _ in rates.values() if s is not None)
            sus = sorted(u for _, u in rates.values() if u is not None)
            span = (f"{sps[0]:.2f}-{sps[-1]:.2f}%" if sps else "-") + " / " + (
                f"{sus[0]:.2f}-{sus[-1]:.2f}x" if sus else "-")
            cells.append(Cell(f"mixed: {len(rates)} rates, {span}", None, None, len(rates)))
    return Row("param sparsity / speedup", cells, info=True)


def single_seed_warning(study: StudyData) -> str | None:
    """The warning a single-seed study (or one with single-seed cells) shows: a cell whose
    value comes from one seed (distinct seeds of finished runs, never runs)."""
    counts = []
    for r in study.rows:
        for c in study.columns:
            seeds = {cell.run_seed for cell in study.cells_of(r, c)
                     if cell.run is not None and getattr(cell.run, "test_acc", None) is not None}
            counts.append(len(seeds))
    if not counts or max(counts) == 0 or min(n for n in counts if n) > 1:
        return None
    return ("single seed: these numbers are one run each; differences are not tested for "
            "significance (run the study with --seeds 3 or more)")


def _shown(c: Cell) -> float | None:
    """The cell's mean as the table prints it (its ``digits``)."""
    return None if c.mean is None else float(f"{c.mean:.{c.digits}f}")


def mark_best(t: ReportTable) -> None:
    """Mark the highest mean of every column among the non-info rows (ties: all), as
    displayed: cells that print the same value are all marked."""
    rows = [r for r in t.rows if not r.info]
    for j in range(len(t.columns)):
        means = [_shown(r.cells[j]) for r in rows if j < len(r.cells)
                 and r.cells[j].mean is not None]
        if len(means) < 2:
            continue
        top = max(m for m in means if m is not None)
        for r in rows:
            if j < len(r.cells) and r.cells[j].mean is not None and _shown(r.cells[j]) == top:
                r.cells[j].best = True


def _acc_cell(study: StudyData, row: str, col: str, n: int,
              get: Callable[[RunData], float | None] = lambda r: r.test_acc) -> Cell:
    """Mean ± std over the finished runs; a run that diverged or failed is never averaged
    and is said in the cell (``"diverged (1 run)"``, ``"91.20 (n=1; 1 run diverged)"``)."""
    cell = stat_cell(_values(study.runs(row, col), get), n)
    ended: dict[str, int] = {}
    for c in study.cells_of(row, col):
        if c.status not in ("done", "missing"):
            ended[c.status] = ended.get(c.status, 0) + 1
    if ended:
        if cell.mean is None:  # words first: the text never reads as (or sorts like) a number
            cell.text = ", ".join(f"{s} ({k} run{'s' if k > 1 else ''})"
                                  for s, k in sorted(ended.items()))
            return cell
        what = ", ".join(f"{k} run{'s' if k > 1 else ''} {s}" for s, k in sorted(ended.items()))
        if cell.text.endswith(")"):
            cell.text = f"{cell.text[:-1]}; {what})"
        else:
            cell.text += f" ({what})"
    return cell


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
        t.rows.append(Row(row, [_acc_cell(study, row, col, n) for col in study.columns]))
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
        "both rows have >= 2 seeds (alpha 0.05), else 'single seed: not tested'. A "
        "comparison where a side has a run that diverged, failed or is missing is not "
        "comparable, and a finding held only when every comparison was made and held.",
        ["comparison", "column", "diff", "seeds", "test", "verdict"],
        study=study.name, preset=study.preset, first="finding",
    )
    for f in results:
        label = f"{f.claim}: {f.summary}"
        if not f.comparisons:
            t.rows.append(Row(label, [Cell("-"), Cell("-"), Cell("-"), Cell("-"), Cell("-"),
                                      Cell(f.note or f.status)],
                              csv={"column": "", "mean": "", "n": 0,
                                   "text": f.note or f.status}))
        for c in f.comparisons:
            n = min(c.n_better, c.n_worse)
            diff = "-" if c.diff is None else f"{c.diff:+.2f}"
            t.rows.append(Row(label, [
                Cell(f"{c.better} vs {c.worse}"), Cell(c.column),
                Cell(diff, c.diff), Cell(c.seeds, None, None, n),
                Cell(c.test_text, c.p), Cell(c.verdict)],
                csv={"column": c.column, "mean": "" if c.diff is None else _round(c.diff),
                     "n": n, "text": f"{c.better} vs {c.worse}: diff {diff}; seeds {c.seeds}; "
                                     f"{c.test_text}; {c.verdict}"}))
    return t


def dense_diff_table(study: StudyData) -> ReportTable:
    """Accuracy minus the dense model's (per seed, same base model): the scale-free view."""
    n = _expected_seeds(study)
    t = ReportTable(
        "dense_diff",
        f"{_head(study)}: difference to the dense model (points)",
        caption(study, "cells: mean ± std over seeds of final-epoch accuracy minus the "
                       "accuracy of the dense model the run descends from (the study's "
                       "full-length dense run of that model, else the run's own base "
                       "model)"),
        list(study.columns), study=study.name, preset=study.preset,
    )

    def diff(r: RunData) -> float | None:
        return None if r.test_acc is None or r.dense_acc is None else r.test_acc - r.dense_acc

    for row in study.rows:
        t.rows.append(Row(row, [_acc_cell(study, row, col, n, diff) for col in study.columns]))
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
        cells = [_acc_cell(study, row, col, n, lambda r: r.ta) for col in study.columns]
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


_MD_SPECIAL = "\\`*_|[]"


def md_escape(s: str) -> str:
    """Text as literal Markdown (a table cell, a list item): ``\\``, backticks, ``*``,
    ``_``, ``|`` and brackets escaped, ``<`` as ``&lt;``, line breaks as spaces."""
    s = " ".join(str(s).splitlines()) if s else ""
    s = "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in s)
    return s.replace("<", "&lt;")


_md_escape = md_escape


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
          "|": r"\textbar{}", '"': "{''}", "±": r"$\pm$", "−": r"$-$",
          "\n": " ", "\r": " "}


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
    out: list[dict[str, object]] = []
    for row in t.rows:
        if row.csv is not None:
            out.append({"study": t.study, "preset": t.preset, "table": t.name,
                        "variant": row.label, "column": "", "mean": "", "std": "", "n": 0,
                        "text": "", **row.csv})
            continue
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
