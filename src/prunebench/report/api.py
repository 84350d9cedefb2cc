"""The report layer's functions: load studies, render them in a format, write files."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from prunebench.report.data import (
    ReportError,
    StudyData,
    find_manifests,
    has_manifests,
    load_runs_data,
    load_study_data,
)
from prunebench.report.html import CardFn, build_html, default_card
from prunebench.report.paper import against_tables, describe_missing
from prunebench.report.tables import (
    ReportTable,
    accuracy_table,
    study_tables,
    to_csv,
    to_latex,
    to_markdown,
    to_rich,
)

FORMATS = ("terminal", "md", "latex", "csv", "html")
_ALIASES = {"markdown": "md", "tex": "latex", "term": "terminal", "text": "terminal"}
AGAINST = ("paper",)


def check_format(fmt: str) -> str:
    f = _ALIASES.get(fmt.lower(), fmt.lower())
    if f not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r}; formats: {', '.join(FORMATS)}")
    return f


def check_against(against: str | None) -> str | None:
    if against is not None and against not in AGAINST:
        raise ReportError(f"unknown --against {against!r}; allowed: {', '.join(AGAINST)}")
    return against


def load_studies(manifest_or_dir: str | Path, study: str | None = None,
                 store: str | Path | None = None, *, where: list[str] | None = None,
                 runs: bool = False) -> list[StudyData]:
    """Every study of a run store (``<dir>/studies/*.json``), or one manifest, loaded.

    ``store`` is where the runs are (default: the folder above ``studies/``). A store
    without study manifests, ``runs=True`` or ``where`` filters report the store's runs
    themselves (:func:`prunebench.report.data.load_runs_data`): one table of every
    finished run grouped by configuration and rate."""
    p = Path(manifest_or_dir)
    if runs or where or (p.is_dir() and not has_manifests(p)):
        if study is not None:
            raise ReportError(f"no study {study!r}: {str(p)!r} is reported as plain runs "
                              "(it has no study manifests, or --runs / --where was given)")
        return [load_runs_data(store or p, where)]
    return [load_study_data(p, store) for p in find_manifests(manifest_or_dir, study)]


def tables_for(studies: list[StudyData], against: str | None = None) -> list[ReportTable]:
    tables: list[ReportTable] = []
    for s in studies:
        tables += study_tables(s)
        if against == "paper":
            tables += against_tables([s])
    return tables


def _notes(studies: list[StudyData], against: str | None) -> list[str]:
    if against != "paper":
        return []
    missing = describe_missing(studies)
    return ([f"The paper has no table for: {', '.join(missing)}."] if missing else [])


def rich_renderable(studies: list[StudyData], against: str | None = None) -> Group:
    parts: list[object] = [to_rich(t) for t in tables_for(studies, against)]
    parts += _notes(studies, against)
    return Group(*parts)  # type: ignore[arg-type]


def render(studies: list[StudyData], fmt: str, against: str | None = None) -> str:
    """The report as text in ``terminal`` (plain), ``md``, ``latex`` or ``csv`` format."""
    fmt = check_format(fmt)
    against = check_against(against)
    tables = tables_for(studies, against)
    notes = _notes(studies, against)
    if fmt == "md":
        from prunebench.report.findings import evaluate
        from prunebench.report.tables import md_escape as esc

        head = []
        for s in studies:
            flag = (" (⚠ a declared or claimed setup is not met: see the setups table)"
                    if s.setup_flagged else "")
            head.append(f"## {esc(s.title)} [{s.key}]\n\nData: **{esc(s.data_label)}** · "
                        f"setup **{esc(s.setup_summary())}** (from the runs){flag} · "
                        f"reproduce: `{s.command}`\n")
            found = evaluate(s)
            if found:
                head.append("What this study found:\n\n" + "\n".join(
                    f"- {esc(f.claim)}: **{esc(f.summary)}**" for f in found) + "\n")
        return "\n".join(head + [to_markdown(t) for t in tables] + notes)
    if fmt == "latex":
        return ("% needs \\usepackage{booktabs}\n" + "\n".join(to_latex(t) for t in tables)
                + "".join(f"% {n}\n" for n in notes))
    if fmt == "csv":
        return to_csv(tables)
    if fmt == "terminal":
        buf = io.StringIO()
        Console(file=buf, width=160, no_color=True, force_terminal=False).print(
            rich_renderable(studies, against))
        return buf.getvalue()
    raise ReportError("html is written with write_report(..., 'html', path), not rendered")


def write_report(manifest_or_dir: str | Path, fmt: str, path: str | Path, *,
                 study: str | None = None, against: str | None = None,
                 card: CardFn = default_card, store: str | Path | None = None,
                 where: list[str] | None = None, runs: bool = False) -> Path:
    """Write the report of one manifest or of every study in a run store to ``path``.

    ``html`` also writes the figures (PNG + SVG) to ``<path's folder>/figures/<study>/``.

    ``path`` is checked before anything is loaded or written: a directory, a path below a
    file or in a folder that cannot be written is a one-line error naming it.
    """
    from prunebench import io as pio

    fmt = check_format(fmt)
    against = check_against(against)
    path = check_report_path(path, fmt)
    studies = load_studies(manifest_or_dir, study, store, where=where, runs=runs)
    try:
        if fmt == "html":
            ag = ({s.key: against_tables([s]) for s in studies} if against == "paper"
                  else None)
            return build_html(studies, path, against=ag, card=card,
                              notes=_notes(studies, against))
        return pio.write_text(path, render(studies, fmt, against))
    except OSError as exc:  # the disk filled up, a folder vanished meanwhile
        raise ReportError(f"cannot write the report {str(path)!r}: "
                          f"{exc.strerror or exc}") from None


def check_report_path(path: str | Path, fmt: str = "html") -> Path:
    """``path`` if the report (and, for html, its ``figures/`` folder beside it) can be
    written there; else a one-line error naming it (a directory, a path below a file, a
    folder that is read-only or not ours to write). Writes nothing."""
    from prunebench import io as pio

    path = pio.check_output(Path(path), "the report file", " (e.g. -o report.html)"
                            if Path(path).is_dir() else "")
    if check_format(fmt) == "html":
        figures = path.parent / "figures"
        if figures.exists() and not figures.is_dir():
            raise ReportError(f"cannot write the report's figures: {str(figures)!r} is a "
                              "file, not a folder (move it, or give -o another folder)")
    return path


def study_summary(manifest_path: str | Path) -> Table:
    """The study's accuracy table (paper layout) as a rich Table."""
    return to_rich(accuracy_table(load_study_data(manifest_path)))


def write_html_report(out_dir: str | Path, manifest_path: str | Path) -> Path:
    """``<out_dir>/report.html`` (+ ``figures/``): the given study first, then every other
    study of the store, so running a second study into one store keeps the first."""
    first = Path(manifest_path)
    others = []
    folder = Path(out_dir) / "studies"
    if folder.is_dir():
        others = [p for p in sorted(folder.glob("*.json")) if p.resolve() != first.resolve()]
    studies = [load_study_data(first, out_dir)]
    for p in others:
        try:
            studies.append(load_study_data(p, out_dir))
        except ReportError:
            continue  # a foreign or broken json next to the manifests: not ours to report
    return build_html(studies, Path(out_dir) / "report.html")
