"""The command line: a thin typer layer over the library API (``prunebench.api``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from prunebench import api
from prunebench.errors import PrunebenchError
from prunebench.report.terminal import metrics_table, result_rows, results_table, runs_table
from prunebench.store import RunStore


def take_plugins(args: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--plugins X`` / ``--plugins=X`` (anywhere before ``--``) out of ``args``."""
    plugins: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--plugins" and i + 1 < len(args):
            plugins.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--plugins="):
            plugins.append(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    return plugins, rest


class PluginsGroup(typer.core.TyperGroup):
    """The app's group: ``--plugins MODULE_OR_FILE`` (repeatable) is accepted by every
    command, before or after the command name, and imported before anything is looked up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        note = ("Every command also takes --plugins MODULE_OR_FILE (repeatable): a plugin "
                "module or .py file imported first (see docs/extending.md).")
        self.epilog = f"{self.epilog}\n\n{note}" if self.epilog else note

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        plugins, args = take_plugins(list(args))
        if plugins and not ctx.resilient_parsing:
            from prunebench.errors import RegistryError
            from prunebench.recipe import load_plugins

            for item in plugins:
                try:
                    load_plugins([item])
                except PrunebenchError as exc:
                    _fail(exc)
                except Exception as exc:  # noqa: BLE001 - a plugin's own error, as one line
                    msg = " ".join(str(exc).split())
                    if not (isinstance(exc, ValueError) and item in msg):  # load_plugins' own
                        msg = f"plugin {item!r} failed to load: {type(exc).__name__}: {msg}"
                    _fail(RegistryError(msg))
        return super().parse_args(ctx, args)


app = typer.Typer(
    help="prunebench: fair, fast and explainable neural-network pruning comparisons.",
    cls=PluginsGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", help="run store directory")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


class RichReporter:
    """A progress bar per epoch (batches), with the epoch's accuracy when it ends."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None:
        if self.task is None:
            self.progress.start()
        self.task = self.progress.add_task(f"{phase} {epoch + 1}/{total}", total=n_batches, info="")

    def advance(self) -> None:
        self.progress.advance(self.task)

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        info = f"lr {metrics['lr']:g}  test {metrics.get('test_acc', float('nan')):.2f}%"
        self.progress.update(self.task, info=info)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _reporter(quiet: bool) -> RichReporter | None:
    if quiet or not sys.stdout.isatty():
        return None
    return RichReporter(console)


def _fail(exc: PrunebenchError) -> None:
    err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=exc.exit_code)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML (may hold a grid:)")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override KEY=VALUE, e.g. retrain.lr=0:0.001 (repeatable)"),
    ] = None,
    out: OutOpt = Path("runs"),
    data_dir: Annotated[str | None, typer.Option(help="look here for data first")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]")] = None,
    quiet: QuietOpt = False,
    json_: Annotated[bool, typer.Option("--json", help="print results as JSON")] = False,
) -> None:
    """Run a recipe (every cell of its grid): pretrain -> prune -> retrain."""
    reporter = _reporter(quiet or json_)
    try:
        items = api.run_all(
            recipe, out, overrides=set_, reporter=reporter, device=device, data_dir=data_dir
        )
    except PrunebenchError as exc:
        _fail(exc)
    finally:
        if reporter is not None:
            reporter.close()
    bad = api.not_done(items)
    if json_:
        typer.echo(
            json.dumps(
                [{"id": r.id, "cell": c, "status": r.status, "result": r.result} for c, r in items],
                indent=2,
            )
        )
        _exit_incomplete(len(items), [(r.id, c, r.status, r.result.get("error"))
                                      for c, r in bad], quiet=True)
        return
    console.print(results_table(result_rows(items), title=f"Results ({recipe})"))
    from prunebench.compare.calibrate import calibrate, calibration_requested

    if calibration_requested(recipe, set_):  # finished runs: this only reads the store
        from prunebench.compare.cli import _print_calibration

        _print_calibration(calibrate(recipe, out, overrides=set_, device=device,
                                     data_dir=data_dir))
    console.print(f"runs stored in {out}/ (prunebench runs --out {out})")
    _exit_incomplete(len(items), [(r.id, c, r.status, r.result.get("error")) for c, r in bad])


def _exit_incomplete(total: int, bad: list[tuple[str, Any, str, Any]], quiet: bool = False
                     ) -> None:
    """One line on what diverged / failed (``(run id, cell, status, error)``), exit 4."""
    if not bad:
        return
    from prunebench.errors import RunsIncomplete

    if not quiet:
        parts = []
        for rid, cell, status, error in bad:
            where = (", ".join(f"{k}={v}" for k, v in cell.items()) if isinstance(cell, dict)
                     else str(cell or ""))
            parts.append(f"{rid}{f' ({where})' if where else ''} {status}"
                         + (f": {error}" if error else ""))
        from rich.text import Text

        err_console.print(Text("incomplete: ", style="red")
                          + Text(f"{len(bad)} of {total} runs did not finish: " + "; ".join(parts)),
                          highlight=False, soft_wrap=True)
    raise typer.Exit(code=RunsIncomplete.exit_code)


@app.command("runs")
def runs_cmd(
    out: OutOpt = Path("runs"),
    where: Annotated[list[str] | None, typer.Option(
        "--where", help="KEY=VALUE on recipe fields (prune.method=l1) or on a column "
                        "(variant=..., study=..., status=done); repeatable, all must hold")
    ] = None,
    sort: Annotated[str | None, typer.Option(
        "--sort", help="sort by a column: test_acc, ta, speedup, variant, lr, seed, "
                       "created, ... (-COLUMN: descending)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="a JSON list of runs")] = False,
) -> None:
    """List the runs of a store: id, variant (study row), method, ratio, LR, seed, init,
    status, final accuracy, TA, speedup. Ids are never cut."""
    try:
        rows = api.runs(out, where=where, sort=sort)
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        keys = ("id", "status", "name", "variant", "study", "model", "dataset", "method",
                "ratio", "lr", "init", "seed", "test_acc", "ta", "speedup",
                "param_sparsity", "created", "updated", "recipe", "result")
        typer.echo(json.dumps([{k: r.get(k) for k in keys} for r in rows], indent=2))
        return
    if not rows:
        console.print(f"no runs in {out}/" + (" match the filters" if where else ""))
        return
    console.print(runs_table(rows, width=console.width))


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="a run id or a unique prefix")],
    out: OutOpt = Path("runs"),
    json_: Annotated[bool, typer.Option("--json", help="recipe, result, metrics as JSON")] = False,
) -> None:
    """Show one run: its effective recipe, result and per-epoch metrics."""
    try:
        data = api.show(run_id, out)
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        typer.echo(json.dumps({k: v for k, v in data.items() if k != "record"}, indent=2,
                              allow_nan=False))
        return
    rec = data["record"]
    status = rec.status if rec is not None else "incomplete"
    console.print(f"[bold]run {data['id']}[/bold]  status: {status}")
    recipe, notes = api.effective_recipe(data)
    console.print("# effective recipe (what the run trained)", highlight=False, markup=False)
    for note in notes:
        console.print(f"# {note}", highlight=False, markup=False, soft_wrap=True)
    console.print(yaml.safe_dump(recipe, sort_keys=False).rstrip(), highlight=False,
                  markup=False)
    if rec is not None:
        summary: dict[str, Any] = {"test_acc": rec.test_acc, "val_acc": rec.val_acc,
                                   "test_top5": rec.test_top5, "best_val": rec.best_val}
        if rec.retrain is not None:
            summary["retrain (effective)"] = {"epochs": rec.retrain.epochs, "lr": rec.retrain.lr,
                                              "init": rec.retrain.init}
        summary["epochs"] = rec.epochs.model_dump()
        if rec.ta is not None:
            summary["trainability_accuracy"] = rec.ta.model_dump(exclude_none=True)
        if rec.jsv:
            jsv = rec.jsv
            summary["jsv_mean"] = {
                "mode": jsv.get("mode"),
                "dense": (jsv.get("dense") or {}).get("mean"),
                "after_pruning": (jsv.get("pruned") or {}).get("mean"),
                "final": jsv.get("final"),
            }
        summary["data"] = rec.data.source
        if rec.pruned is not None:
            summary["granularity"] = rec.pruned.granularity
            summary["param_sparsity"] = rec.rate_sparsity
            summary["flops_sparsity"] = rec.pruned.flops_sparsity
            summary["speedup"] = rec.rate_speedup
        console.print(yaml.safe_dump({"result": api.rounded(summary)}, sort_keys=False
                                     ).rstrip(), highlight=False, markup=False)
    console.print(metrics_table(data["metrics"]))


@app.command()
def describe(
    model: Annotated[str, typer.Argument(help="a registered model, e.g. resnet56")],
    dataset: Annotated[str, typer.Option(help="dataset whose shapes to use")] = "cifar10",
    prune: Annotated[
        str, typer.Option(help="layer ratios, e.g. '*layer*.conv1:0.5' or 0.5 or [0.5,0.5,0.5]")
    ] = "0.5",
    skip: Annotated[list[str] | None, typer.Option(help="layers never pruned")] = None,
    scheme: Annotated[str, typer.Option(help="layerwise | global")] = "layerwise",
    target_speedup: Annotated[float | None, typer.Option(help="solve the ratio for it")] = None,
    target_param_sparsity: Annotated[
        float | None, typer.Option(help="percent; solve the ratio for it")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Params, MACs, sparsity and speedup of a pruned model, without training or data."""
    from prunebench.pruning.describe import describe as describe_model
    from prunebench.recipe import parse_value

    layers = parse_value(prune)
    try:
        info = describe_model(
            model, dataset, layers, skip=skip or (), scheme=scheme,
            target_speedup=target_speedup, target_param_sparsity=target_param_sparsity,
        )
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        typer.echo(json.dumps(info, indent=2))
        return
    console.print(yaml.safe_dump({k: v for k, v in info.items() if k != "layers"},
                                 sort_keys=False).rstrip(), highlight=False)


@app.command()
def study(
    name: Annotated[str, typer.Argument(help="a built-in study name or a study YAML file")],
    preset: Annotated[str, typer.Option(help="cpu | paper (or the study's own presets)")] = "cpu",
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds per cell")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override KEY=VALUE in every cell")
    ] = None,
    out: OutOpt = Path("runs"),
    quiet: QuietOpt = False,
    report: Annotated[bool, typer.Option(help="write <out>/report.html")] = True,
    workers: Annotated[int, typer.Option(min=1, help="cells run in parallel")] = 1,
    backend: Annotated[str, typer.Option(help="serial | process | ray")] = "process",
    stack: Annotated[int | None, typer.Option(
        min=1, help="train up to K stackable cells as one fused model (1: off; default: "
        "on with 8 copies on CUDA, off on CPU)")] = None,
) -> None:
    """Run a study (finished cells are skipped, interrupted ones resume) and report it."""
    from prunebench.studies import STUDIES, run_studies

    if name in ("list", "ls"):
        for n in STUDIES.names():
            console.print(f"{n:20s} {STUDIES.doc(n)}", highlight=False)
        return
    reporter = _reporter(quiet)
    command = " ".join(["prunebench", "study", name, "--preset", preset]
                       + ([f"--seeds {seeds}"] if seeds else [])
                       + [f"--set {s}" for s in set_ or []] + ["--out", str(out)]
                       + ([f"--stack {stack}"] if stack else []))
    try:
        manifests = run_studies(name, out, preset=preset, seeds=seeds, overrides=set_,
                                reporter=reporter, command=command, workers=workers,
                                backend=backend if workers > 1 else "serial", stack=stack)
    except PrunebenchError as exc:
        _fail(exc)
    finally:
        if reporter is not None:
            reporter.close()
    for manifest in manifests:
        _study_outputs(out, manifest, report)
    total = sum(len(m["cells"]) + len(m.get("dense_runs") or {}) for m in manifests)
    _exit_incomplete(total, [(b["run"], b["cell"], b["status"], b.get("error"))
                             for m in manifests for b in m.get("not_done") or []])


def _study_outputs(out: Path, manifest: dict[str, Any], report: bool) -> None:
    from prunebench.studies import manifest_path

    path = manifest_path(out, manifest["study"], manifest["preset"])
    store = RunStore(out)
    items = [({"variant": f"{c['row']} / {c['column']}" + (f" / seed {c['seed']}"
               if manifest["seeds"] > 1 else "")}, store.run_result(c["run"]))
             for c in manifest["cells"]]
    console.print(results_table(result_rows(items), title=f"Runs of {manifest['study']}"))
    from prunebench.report import study_summary, write_html_report

    console.print(study_summary(path))
    if manifest.get("analysis"):
        console.print(f"[bold]{manifest['analysis']['verdict']}[/bold]")
    if report:
        html = write_html_report(out, path)
        console.print(f"report: {html}")


@app.command()
def doctor(
    out: OutOpt = Path("runs"),
    data_dir: Annotated[str | None, typer.Option(help="look here for data first")] = None,
    json_: Annotated[bool, typer.Option("--json", help="the checks as JSON")] = False,
) -> None:
    """Check this machine: torch and device, datasets, the run store, optional extras.

    Exit 0 when everything needed is fine, 1 when something is wrong (each problem is
    printed with what to do)."""
    from prunebench.doctor import diagnose, healthy, to_json

    checks = diagnose(out, data_dir=data_dir)
    ok = healthy(checks)
    if json_:
        typer.echo(json.dumps(to_json(checks), indent=2))
    else:
        marks = {"ok": ("ok", "green"), "note": ("note", "yellow"),
                 "problem": ("PROBLEM", "red")}
        for c in checks:
            word, color = marks[c.status]
            console.print(f"[{color}]{word:>7s}[/{color}]  [bold]{escape(c.name)}[/bold]: "
                          f"{escape(c.detail)}", highlight=False, soft_wrap=True)
            if c.fix and not c.ok:
                console.print(f"{'':>7s}  -> {escape(c.fix)}", highlight=False, soft_wrap=True)
        n = sum(not c.ok and c.required for c in checks)
        console.print("everything needed is fine" if ok else
                      f"{n} problem(s): see the lines marked PROBLEM", highlight=False)
    raise typer.Exit(0 if ok else 1)


@app.command()
def models() -> None:
    """List the registered models."""
    from prunebench.models import MODELS

    for name in MODELS.names():
        console.print(f"{name:14s} {MODELS.doc(name)}", highlight=False)


@app.command()
def datasets() -> None:
    """List the registered datasets."""
    from prunebench.data import DATASETS

    for name in DATASETS.names():
        console.print(f"{name:14s} {DATASETS.doc(name)}", highlight=False)


def _register_extensions() -> None:
    from prunebench.compare.cli import register as register_compare
    from prunebench.report.cli import register as register_report

    register_compare(app)
    register_report(app)


_register_extensions()


def main() -> None:
    try:
        app()
    except PrunebenchError as exc:  # errors raised outside a command body
        err_console.print(f"error: {exc}", highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
