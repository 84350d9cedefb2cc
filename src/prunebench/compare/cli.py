"""CLI commands of the comparison layer (compare, calibrate, crossval, card), registered on
the app by ``register(app)``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from prunebench.console import fail as _fail
from prunebench.errors import PrunebenchError

EXIT_NOT_MET = 3
EXIT_DIVERGED = 4  # a named run diverged (as `run` / `study` exit when a cell diverged)

_console = Console() if sys.stdout.isatty() else Console(width=80)

OutOpt = Annotated[Path, typer.Option("--out", help="run store directory")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _row(t: Table, *cells: object) -> None:
    t.add_row(*(Text(str(c)) for c in cells))




def _print(text: str, bold: bool = False) -> None:
    _console.print(text, markup=False, highlight=False, soft_wrap=True,
                   style="bold" if bold else None)


def _ranking_table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, caption="final-epoch top-1 test % (mean ± std, ddof=1); "
              "vs next: Welch's t-test", caption_justify="left")
    for col in ("rank", "method", "seeds", "test acc", "vs next"):
        t.add_column(col, overflow="fold")
    for r in rows:
        extra = f" (LR {r['chosen_lr']:g})" if r.get("chosen_lr") is not None else ""
        _row(t, r["rank"], r["method"] + extra, len(r["seeds"]),
             r.get("acc_text") or r["text"], _vs_next(r.get("vs_next")))
    return t


def _vs_next(w: dict[str, Any] | None) -> str:
    if not w:
        return ""
    if w.get("p") is None:
        return f"{w['diff']:+.2f} (not tested)"
    return f"{w['diff']:+.2f}, p={w['p']:.2g}" + (" *" if w.get("significant") else "")


def _wrap(text: str, indent: int = 0, hang: int = 4) -> None:
    """One logical line wrapped to the console width (ids and other words never split)."""
    import textwrap

    from prunebench.report.runinfo import plain

    width = max(40, _console.width - 1)
    lines = textwrap.wrap(plain(text), width=width, initial_indent=" " * indent,
                          subsequent_indent=" " * (indent + hang), break_long_words=False,
                          break_on_hyphens=False)
    for line in lines or [""]:
        _print(line)


def _group_table(g: dict[str, Any], i: int) -> Table:
    """The configurations of one comparable set: variant, ratio, LR, seeds, accuracy."""
    ranks = {r["config"]: r for r in g["ranking"] or []}
    t = Table()
    cols = (["rank"] if ranks else []) + ["variant / method", "ratio", "retrain LR", "seeds",
                                           "test acc"] + (["vs next"] if ranks else [])
    for col in cols:
        t.add_column(col, overflow="fold",
                     justify="right" if col in ("rank", "seeds", "test acc") else "left")
    methods = sorted(g["methods"], key=lambda m: (ranks[m["config"]]["rank"] if ranks else 0,
                                                   -((m.get("acc") or {}).get("mean") or 0)))
    for m in methods:
        cells = [ranks[m["config"]]["rank"]] if ranks else []
        lr = m.get("lr") or "-"
        chosen = (ranks.get(m["config"]) or {}).get("chosen_lr")
        if chosen is not None:
            lr = f"{lr} (chose {chosen:g})"
        after = [_vs_next(ranks[m["config"]].get("vs_next"))] if ranks else []
        _row(t, *cells, m["method"], m.get("ratio") or "-", lr, m.get("n_seeds", len(
            m["seeds"])), m.get("acc_text") or "-", *after)
    return t


def _print_compare(rep: dict[str, Any], max_diffs: int = 3) -> None:
    _wrap(f"compare: {rep['runs']} runs, {rep['methods']} configurations, required setup "
          f"{rep['required']}; accuracy: final-epoch top-1 test % (mean ± std over seeds)")
    for i, g in enumerate(rep["groups"], 1):
        _print("")
        _wrap(f"set {i}: same dataset, network and rate (S1)"
              + (f"; setup met by all: {g['setup']}" if g["setup"] else ""))
        _console.print(_group_table(g, i))
        for p in g["pairs"]:
            _wrap(f"{p['a']} vs {p['b']}: {p['label']}", indent=2)
            diffs = p["differences"]
            for d in diffs[:max_diffs]:
                _wrap(f"differs: {d}", indent=6)
            if len(diffs) > max_diffs:
                _wrap(f"(+{len(diffs) - max_diffs} more differences: --json)", indent=6)
        if g["ranking"] is not None:
            from prunebench.compare.comparison import best_of

            top = best_of(g["ranking"])
            best = " and ".join(f"{r['method']} ({r.get('acc_text') or r['text']})"
                                for r in top)
            _wrap(f"Ranking under {rep['required']} (rank column): best {best}"
                  + (" (tied)" if len(top) > 1 else ""), indent=2)
            if any(r["test_acc"]["n"] < 2 for r in g["ranking"]):
                _wrap("warning: single-seed results: differences are not tested "
                      "(run more seeds)", indent=2)
        if g["reason"]:
            _wrap(g["reason"], indent=2)
        for s in g["subsets"]:
            _console.print(_ranking_table(
                s["ranking"], f"Ranking within a subset that meets {rep['required']}"))
    if rep.get("diverged"):
        _print("")
        _wrap(f"diverged (never ranked): {len(rep['diverged'])} runs")
        for d in rep["diverged"]:
            _wrap(f"{d['id']} {d['method']} seed {d['seed']}: {d['reason']}", indent=2)
    if rep.get("duplicates"):
        _print("")
        _wrap(f"duplicates (one run per configuration and seed is compared): "
              f"{len(rep['duplicates'])} runs differ from another only in fields that "
              "cannot change the weights")
        for d in rep["duplicates"]:
            _wrap(f"{d['id']} {d['method']} seed {d['seed']}: same as {d['same_as']} "
                  f"(test {_pct(d['test_acc'])} vs {_pct(d['same_as_test_acc'])})", indent=2)
    if rep.get("tuning"):
        _print("")
        _wrap(f"left out: {len(rep['tuning'])} tuning runs of calibrations (LRs a "
              "calibration did not choose; name them by id to compare them)")
        for d in rep["tuning"]:
            _wrap(f"{d['id']} {d['method']} seed {d['seed']} LR {d['lr']}", indent=2)
    _print("")
    _wrap(rep["verdict"])


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def dumps(obj: Any) -> str:
    """JSON for the terminal: non-finite floats (a Welch t of two zero-variance samples)
    become null, so the output is valid JSON for every reader."""
    from prunebench.io import dumps_json

    return dumps_json(obj, indent=2)


def compare_cmd(
    run_ids: Annotated[list[str] | None, typer.Argument(help="run ids or unique prefixes")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="KEY=VALUE filter on recipe fields, e.g. prune.method=l1 "
                     "(repeatable; all must hold)"),
    ] = None,
    out: OutOpt = Path("runs"),
    require: Annotated[str, typer.Option("--require", help="setup a ranking needs: S1, S2, "
                                         "S3.1, S3.2, S4.1, S4.2, SX-A, SX-B")] = "S3.2",
    json_: JsonOpt = False,
) -> None:
    """Check which runs may be compared (setups S1..SX-B) and rank methods where allowed.

    Exit 0: valid; 3: the required setup is not met (no ranking across it); 2: bad input.
    """
    from prunebench.compare.comparison import compare, load_selection, study_variants

    try:
        sel = load_selection(out, run_ids, where)
        rep = compare(sel.fps, require, diverged=sel.diverged, variants=study_variants(out),
                      tuning=sel.tuning, named=bool(run_ids))
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        typer.echo(dumps(rep))
    else:
        _print_compare(rep)
    if run_ids and rep["diverged"]:
        raise typer.Exit(EXIT_DIVERGED)
    if not rep["valid"]:
        raise typer.Exit(EXIT_NOT_MET)


def _print_calibration(rec: dict[str, Any]) -> None:
    _print(f"calibration {rec['key']}: {rec['signature']}", bold=True)
    _print(f"selection: {rec['selection']}")
    for m in rec["methods"]:
        _print(f"\n{m['label']}: chosen LR {m['chosen_lr']:g} "
               f"({m['chosen_schedule']}), val {m['val']:.2f}, test "
               f"{m['test']['mean']:.2f} ({m['test']['label']})")
        t = Table(title=f"sensitivity: {m['label']}")
        for col in ("LR", "schedule", "val (final epoch)", "test (final epoch)", ""):
            t.add_column(col)
        for c in sorted(m["curve"], key=lambda c: -c["lr"]):
            note = ("chosen" if c["lr"] == m["chosen_lr"] else
                    f"not eligible: {c.get('not_eligible')}" if c.get("eligible") is False
                    else "")
            _row(t, f"{c['lr']:g}", c["schedule"],
                      "-" if c["val"] is None else f"{c['val']:.2f}",
                      "-" if c["test"] is None else f"{c['test']:.2f}", note)
        _console.print(t)


def calibrate_cmd(
    recipe: Annotated[Path, typer.Argument(help="recipe with retrain.calibrate")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override KEY=VALUE")] = None,
    out: OutOpt = Path("runs"),
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="look here for data first")] = None,
    json_: JsonOpt = False,
) -> None:
    """Run an LR calibration (same grid and epochs for every method; selects on validation)."""
    from prunebench.compare.calibrate import calibrate, calibration_requested

    try:
        if not calibration_requested(recipe, set_):
            raise PrunebenchError(f"recipe {str(recipe)!r} has no retrain.calibrate section")
        rec = calibrate(recipe, out, overrides=set_, device=device, data_dir=data_dir)
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        typer.echo(dumps(rec))
    else:
        _print_calibration(rec)


def crossval_cmd(
    a: Annotated[str, typer.Option("--a", help="method A: prune YAML or k=v,... pairs")],
    ft_a: Annotated[str, typer.Option("--ft-a", help="FT_A: retrain YAML or k=v,... pairs")],
    b: Annotated[str, typer.Option("--b", help="method B: prune YAML or k=v,... pairs")],
    ft_b: Annotated[str, typer.Option("--ft-b", help="FT_B: retrain YAML or k=v,... pairs")],
    base: Annotated[Path | None, typer.Option("--base", help="base recipe (default: "
                                              "the built-in defaults)")] = None,
    out: OutOpt = Path("runs"),
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]")] = None,
    data_dir: Annotated[str | None, typer.Option(help="look here for data first")] = None,
    json_: JsonOpt = False,
) -> None:
    """Run A+FT_A, B+FT_A, A+FT_B, B+FT_B and say whether one method wins under both."""
    from prunebench.compare.crossval import crossval

    try:
        rep = crossval(a, ft_a, b, ft_b, base=base, out=out, device=device, data_dir=data_dir)
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        typer.echo(dumps(rep))
        raise typer.Exit(rep.get("exit_code") or 0)
    t = Table(title="Recipe cross-validation", caption="final-epoch top-1 test %")
    t.add_column("method")
    t.add_column("FT_A")
    t.add_column("FT_B")
    cells = {(r["method"], r["ft"]): r["text"] for r in rep["table"]}
    for m in ("A", "B"):
        _row(t, m, cells[(m, "FT_A")], cells[(m, "FT_B")])
    for name, spec in rep["specs"].items():
        _print(f"{name} = {spec}")
    _console.print(t)
    for ft, test in rep["tests"].items():
        _print(f"A vs B under {ft}: {test['text']}")
    _print(rep["verdict"], bold=True)
    # 3: A and B do not meet the required setup under a recipe; 4: a cell diverged/failed
    raise typer.Exit(rep.get("exit_code") or 0)


def card_cmd(
    run_ids: Annotated[
        list[str], typer.Argument(help="run ids or study names (one card for all of them)")
    ],
    out: OutOpt = Path("runs"),
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Markdown file (JSON goes next to it)")
    ] = None,
) -> None:
    """Write a citable benchmark card (Markdown + JSON) for runs or a whole study."""
    from prunebench.compare.card import write_card

    try:
        md, js = write_card(run_ids, out, output)
    except PrunebenchError as exc:
        _fail(exc)
    _print(f"card written: {md} (and {js})")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the prunebench CLI."""
    app.command("compare")(compare_cmd)
    app.command("calibrate")(calibrate_cmd)
    app.command("crossval")(crossval_cmd)
    app.command("card")(card_cmd)
