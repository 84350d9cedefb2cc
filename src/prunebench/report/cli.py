"""CLI commands of the report layer, registered on the main app."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from prunebench.console import fail as _fail
from prunebench.errors import PrunebenchError

_console = Console() if sys.stdout.isatty() else Console(width=160)




def report(
    source: Annotated[Path | None, typer.Argument(
        help="a run store (its studies, or its runs when it has none), or one study "
             "manifest (.json); default: --out")] = None,
    format_: Annotated[str, typer.Option(
        "--format", "-f", help="terminal | md | latex | csv | html")] = "terminal",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="file to write (html: default <DIR>/report.html; "
                               "others: stdout)")] = None,
    study: Annotated[str | None, typer.Option(
        help="report only this study (name, or name-preset)")] = None,
    against: Annotated[str | None, typer.Option(
        help="'paper': the paper's own numbers beside ours, with the differences")] = None,
    where: Annotated[list[str] | None, typer.Option(
        "--where", help="report these runs: KEY=VALUE on recipe fields, e.g. "
                        "prune.method=l1 (repeatable; implies --runs)")] = None,
    runs: Annotated[bool, typer.Option(
        "--runs", help="report the store's runs (grouped by configuration and rate) "
                       "instead of its studies")] = False,
    out: Annotated[Path | None, typer.Option(
        "--out", help="run store directory, as for every other command (the positional "
                      "SOURCE is kept; default: runs)")] = None,
) -> None:
    """Tables, findings, figures and an HTML page for a run store's studies or runs.

    A store without studies is reported by its runs (all, or those of --runs / --where)."""
    from prunebench.report.api import (
        check_against,
        check_format,
        load_studies,
        render,
        rich_renderable,
        write_report,
    )

    if source is not None and out is not None and source != out:
        _fail(PrunebenchError(f"report takes one store: got {str(source)!r} and "
                              f"--out {str(out)!r}"))
    source = source if source is not None else out if out is not None else Path("runs")
    try:
        fmt = check_format(format_)
        check_against(against)
        if fmt == "html":
            default = (source.parent.parent if source.is_file()
                       and source.parent.name == "studies" else
                       source.parent if source.is_file() else source) / "report.html"
            path = write_report(source, "html", output or default, study=study,
                                against=against, where=where, runs=runs)
            _console.print(f"report: {path}", highlight=False, markup=False)
            return
        if output is not None:
            path = write_report(source, fmt, output, study=study, against=against,
                                where=where, runs=runs)
            _console.print(f"report: {path}", highlight=False, markup=False)
            return
        studies = load_studies(source, study, where=where, runs=runs)
        if fmt == "terminal":
            _console.print(rich_renderable(studies, against))
        else:
            sys.stdout.write(render(studies, fmt, against))
            sys.stdout.flush()
    except PrunebenchError as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the prunebench CLI."""
    app.command("report")(report)
