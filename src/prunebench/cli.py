"""The command line: a thin typer layer over the library API (``prunebench.api``)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from prunebench import runs_view
from prunebench.console import fail as _fail
from prunebench.errors import PrunebenchError
from prunebench.io import dumps_json
from prunebench.report.terminal import metrics_table, result_rows, results_table, runs_table
from prunebench.store import RunStore


class _LazyModule:
    """A module imported on first attribute access: ``prunebench.api`` imports torch,
    which ``--help``, ``runs`` listing and the registries' listings should not pay for."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


api: Any = _LazyModule("prunebench.api")


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


def _one_value(shown: str | None) -> str | None:
    """``<list[str]>`` -> ``<str>``: a repeated parameter takes one value per use."""
    return re.sub(r"list\[(\w+)\]", r"\1", shown) if isinstance(shown, str) else shown


def _option_hint(self: Any, ctx: Any) -> str | None:
    """No ``<bool>`` type hint beside an on/off flag (it takes no value); a repeatable
    option names the type of its one value and says it repeats."""
    if getattr(self, "is_flag", False) and not getattr(self, "count", False):
        return None
    shown = _option_type_rich(self, ctx)
    one = _one_value(shown)
    return f"{one} (repeatable)" if one != shown else one


def _argument_hint(self: Any, ctx: Any) -> str | None:
    """A variadic argument's name already ends in ``...``: show the type of one value."""
    return _one_value(_argument_type_rich(self, ctx))


_option_type_rich = typer.core.TyperOption.display_type_rich
_argument_type_rich = typer.core.TyperArgument.display_type_rich
typer.core.TyperOption.display_type_rich = _option_hint  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _argument_hint  # type: ignore[method-assign]

app = typer.Typer(
    help="prunebench: fair, fast and explainable neural-network pruning comparisons.",
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=PluginsGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True)

def _show_version(value: bool) -> None:
    if value:
        from prunebench import __version__

        typer.echo(f"prunebench {__version__}")
        raise typer.Exit()


@app.callback()
def _app_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="print the version and exit")] = False,
) -> None:
    """prunebench: fair, fast and explainable neural-network pruning comparisons."""


OutOpt = Annotated[Path, typer.Option("--out", help="run store directory")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, int | float) else "-"


class LineReporter:
    """Not on a terminal (CI logs, nohup, Slurm): one plain line per epoch and per
    finished run, flushed at once, on ``stream`` (default: stderr, so stdout keeps only
    the results)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.n, self.label = 0, 0, 1, ""
        self.epochs = 0

    def _emit(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _where(self) -> str:
        if not self.total:
            return ""
        first = self.done + 1
        span = f"{first}-{first + self.n - 1}" if self.n > 1 else f"{first}"
        return f"[{span}/{self.total}] {self.label}  "

    def begin(self, total: int, title: str) -> None:
        self.total, self.done = total, 0
        self._emit(f"{title}: {total} run{'s' if total != 1 else ''}")

    def start_cell(self, label: str, n: int) -> None:
        self.label, self.n = label, n

    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None:
        self.epochs = total

    def advance(self) -> None:
        pass

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        loss = metrics.get("train_loss")
        parts = [f"{metrics.get('phase')} epoch {metrics.get('epoch')}/{self.epochs}",
                 f"loss {loss:.4f}" if isinstance(loss, int | float) else "loss -"]
        if "val_acc" in metrics:
            parts.append(f"val {_pct(metrics['val_acc'])}")
        parts += [f"test {_pct(metrics.get('test_acc'))}", f"lr {metrics.get('lr', 0):g}",
                  f"{metrics.get('seconds') or 0:.1f}s"]
        self._emit(self._where() + "  ".join(parts))

    def end_cell(self, result: Any, progress: Any = None) -> None:
        """A finished run. ``progress`` (parallel backends: a
        :class:`~prunebench.studies.executor.RunProgress`): one line with the study's counts,
        ``[12/40] done <id> <row / column / seed>  test 91.23%  (3 running, 1 failed, ETA
        4m10s)``."""
        self.n = 1
        res = result.result or {}
        if progress is not None:
            self.done = progress.done
            text = f"[{progress.done}/{progress.total}] {result.status} {result.id} " \
                   f"{progress.label}"
            if res.get("test_acc") is not None:
                text += f"  test {_pct(res['test_acc'])}"
            if progress.attempts == 0:
                text += "  (finished before)"
            elif progress.attempts > 1:
                text += f"  after {progress.attempts} attempts"
            if res.get("error"):
                text += f": {res['error']}"
            self._emit(f"{text}  ({progress.running} running, {progress.failed} failed, "
                       f"ETA {progress.eta})")
            return
        where = self._where()
        self.done += 1
        text = f"{where}run {result.id} {result.status}"
        if res.get("test_acc") is not None:
            text += f"  test {_pct(res['test_acc'])}"
        if res.get("error"):
            text += f": {res['error']}"
        self._emit(text)

    def warn(self, message: str) -> None:
        self._emit(f"warning: {message}")

    def close(self) -> None:
        pass


class RichReporter:
    """On a terminal: one study-level display (runs done / total, elapsed, ETA, the running
    run's label, phase, epoch and batch), redrawn in place; never a bar per epoch."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),  # labels are text, not markup
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.label, self.epoch, self.last = "", "", ""
        self.batch, self.n_batches = 0, 0

    def _ensure(self, total: int | None = None, title: str = "runs") -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(title, total=total, info="")

    def _show(self) -> None:
        batches = f" ({self.batch}/{self.n_batches})" if self.n_batches else ""
        info = "  ".join(x for x in (self.label, self.epoch + batches, self.last) if x)
        self.progress.update(self.task, info=info)

    def begin(self, total: int, title: str) -> None:
        if self.task is None:
            self._ensure(total, title)
        else:  # the next table of a study group: the same display, reset
            self.progress.reset(self.task, total=total, description=title, info="")

    def start_cell(self, label: str, n: int) -> None:
        self._ensure()
        self.label, self.epoch, self.last = label, "", ""
        self.batch, self.n_batches = 0, 0
        self._show()

    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None:
        self._ensure()
        self.epoch, self.batch, self.n_batches = f"{phase} {epoch + 1}/{total}", 0, n_batches
        self._show()

    def advance(self) -> None:
        self.batch += 1
        if self.batch == self.n_batches or self.batch % 10 == 0:
            self._show()

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        self.last = f"lr {metrics.get('lr', 0):g}  test {_pct(metrics.get('test_acc'))}"
        self._show()

    def end_cell(self, result: Any, progress: Any = None) -> None:
        self._ensure()
        self.progress.advance(self.task, 1)
        if progress is None:
            return
        # parallel backends: the counts in the display; a run that did not finish also
        # gets a line of its own above it
        self.label = f"{progress.running} running, {progress.failed} failed"
        self.epoch, self.n_batches = "", 0
        self.last = f"last: {progress.label} {result.status}"
        self._show()
        if result.status != "done":
            err = (result.result or {}).get("error")
            tries = f" after {progress.attempts} attempts" if progress.attempts > 1 else ""
            self.progress.console.print(
                f"run {result.id} ({progress.label}) {result.status}{tries}"
                + (f": {err}" if err else ""), highlight=False, markup=False)

    def warn(self, message: str) -> None:
        self.progress.console.print(f"warning: {message}", highlight=False, markup=False)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _reporter(quiet: bool, lines_only: bool = False) -> RichReporter | LineReporter | None:
    """A terminal: one live display; otherwise (piped, CI, Slurm): plain lines on stderr.
    ``lines_only`` (``--json``): never the live display, which would mix into stdout."""
    if quiet:
        return None
    if sys.stdout.isatty():
        return None if lines_only else RichReporter(console)
    return LineReporter(sys.stderr)


LogOpt = Annotated[list[str] | None, typer.Option(
    "--log", help="also send metrics to tensorboard | mlflow | wandb (repeatable; replaces "
                  "the recipe's log.to; optional extras)")]


def _log_overrides(log: list[str] | None, set_: list[str] | None) -> list[str] | None:
    """``--log NAME``... as the override ``log.to=[...]`` (checked first: unknown names and
    missing extras are one-line errors)."""
    if not log:
        return set_
    from prunebench.loggers import check_loggers

    try:
        check_loggers(log)
    except PrunebenchError as exc:
        _fail(exc)
    return [*(set_ or []), f"log.to=[{','.join(dict.fromkeys(log))}]"]




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
    log: LogOpt = None,
    nproc: Annotated[str | None, typer.Option(
        "--nproc", metavar="N", help="run each run data-parallel on N local processes (GPUs "
        "with NCCL, CPU with gloo; grid cells one after another; docs/scale.md)")] = None,
) -> None:
    """Run a recipe (every cell of its grid): pretrain -> prune -> retrain."""
    from prunebench import distributed
    from prunebench.errors import RecipeError

    procs = _nproc(nproc)
    if procs > 1 and distributed.env_world() <= 1:  # launch the ranks; they run this command
        try:  # a bad recipe or --nproc: one line here, not one per rank
            cells = api.load_recipes(recipe, _log_overrides(log, set_))
            distributed.check_nproc(procs, [r for _, r in cells], device)
        except PrunebenchError as exc:
            _fail(exc)
        args = ["run", str(recipe), "--out", str(out), *(["--quiet"] if quiet else []),
                *(["--json"] if json_ else []), "--nproc", str(procs)]
        for item in _log_overrides(log, set_) or []:
            args += ["--set", item]
        for opt, value in (("--data-dir", data_dir), ("--device", device)):
            if value is not None:
                args += [opt, value]
        for plugin in take_plugins(sys.argv[1:])[0]:
            args += ["--plugins", plugin]
        raise typer.Exit(code=distributed.launch(procs, args))
    if procs > 1 and procs != distributed.env_world():
        _fail(RecipeError(f"--nproc {procs} but this process is one of "
                          f"{distributed.env_world()} (torchrun sets the world size)"))
    main = distributed.env_world() <= 1 or distributed.env_rank() == 0
    distributed.pin_device()
    set_ = _log_overrides(log, set_)
    reporter = _reporter(quiet, lines_only=json_) if main else None
    try:
        items = api.run_all(
            recipe, out, overrides=set_, reporter=reporter, device=device, data_dir=data_dir
        )
    except PrunebenchError as exc:
        if not main:  # rank 0 says it
            raise typer.Exit(code=exc.exit_code) from None
        _fail(exc)
    finally:
        if reporter is not None:
            reporter.close()
    bad = api.not_done(items)
    if not main:  # rank 0 prints the results and sets the exit status
        return
    if json_:
        typer.echo(
            dumps_json(
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


def _nproc(value: str | None) -> int:
    """``--nproc N``: an int >= 1 (a one-line error, exit 2, otherwise)."""
    from prunebench.errors import RecipeError

    if value is None:
        return 1
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        _fail(RecipeError(f"--nproc must be an integer >= 1 (processes for one run), "
                          f"got {value!r}"))
    return n


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
    """List the runs of a store (full ids, never cut).

    Columns: id, variant (study row), method, ratio, LR, seed, init, status, final
    accuracy, TA, speedup."""
    try:
        rows = runs_view.runs(out, where=where, sort=sort)
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        keys = ("id", "status", "name", "variant", "variants", "study", "studies", "model",
                "dataset", "method", "ratio", "lr", "init", "seed", "test_acc", "ta", "speedup",
                "param_sparsity", "created", "updated", "recipe", "result")
        typer.echo(dumps_json([{k: r.get(k) for k in keys} for r in rows], indent=2))
        return
    if not rows:
        console.print(f"no runs in {out}/" + (" match the filters" if where else ""),
                      markup=False, highlight=False)
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
        data = runs_view.show(run_id, out)
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        # "recipe" is what the run trained (a Scratch-E run: its real epochs and LR), as
        # the text view shows; the recipe as written is kept beside it
        effective, notes = runs_view.effective_recipe(data)
        out_json = {k: v for k, v in data.items() if k != "record"}
        out_json = {"id": out_json.get("id"), "recipe": effective,
                    "declared_recipe": data.get("recipe"), "effective_notes": notes,
                    **{k: v for k, v in out_json.items() if k not in ("id", "recipe")}}
        typer.echo(dumps_json(out_json, indent=2))
        return
    rec = data["record"]
    status = rec.status if rec is not None else "incomplete"
    console.print(f"[bold]run {data['id']}[/bold]  status: {status}")
    recipe, notes = runs_view.effective_recipe(data)
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
        console.print(yaml.safe_dump({"result": runs_view.rounded(summary)}, sort_keys=False
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
    input_size: Annotated[int | None, typer.Option(
        min=1, help="square input side in pixels instead of the dataset's (e.g. 128, the "
        "ImageNet presets' training crop)")] = None,
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
            input_size=input_size,
        )
    except PrunebenchError as exc:
        _fail(exc)
    if json_:
        typer.echo(dumps_json(info, indent=2))
        return
    from prunebench.pruning.describe import summary_lines

    for line in summary_lines(info):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
def study(
    name: Annotated[str, typer.Argument(
        help="a built-in study name or a study YAML file; `list`: the built-ins and their "
             "presets")],
    preset: Annotated[str, typer.Option(help="cpu | paper (or the study's own presets)")] = "cpu",
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds per cell")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override KEY=VALUE in every cell")
    ] = None,
    out: OutOpt = Path("runs"),
    quiet: QuietOpt = False,
    report: Annotated[bool, typer.Option(help="write <out>/report.html")] = True,
    workers: Annotated[int | None, typer.Option(
        min=1, help="jobs run in parallel (default 1; with --backend ray: as many as the "
        "cluster's resources allow)")] = None,
    backend: Annotated[str, typer.Option(
        help="serial | process (local processes, with --workers > 1) | ray (Ray tasks; "
        "docs/scale.md)")] = "process",
    stack: Annotated[int | None, typer.Option(
        min=1, help="train up to K stackable cells as one fused model (1: off; default: "
        "on with 8 copies on CUDA, off on CPU)")] = None,
    retries: Annotated[int, typer.Option(
        help="run a cell that fails or diverges again up to N times (any backend)")] = 0,
    cpus_per_run: Annotated[float | None, typer.Option(
        help="CPUs (torch threads) per job (default: CPU count // workers; Ray: 1 "
             "without --workers)")] = None,
    gpus_per_run: Annotated[float | None, typer.Option(
        help="Ray: GPUs per job, fractions share a GPU, e.g. 0.25 (default: 1 when the "
             "cluster has GPUs and the device is auto/cuda, else 0)")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray: join the cluster at auto | HOST:PORT (default: start a local Ray)")
    ] = None,
    log: LogOpt = None,
) -> None:
    """Run a study (finished cells are skipped, interrupted ones resume) and report it.

    `prunebench study list` lists the built-in studies and their presets."""
    from prunebench.studies import STUDIES, run_studies

    if name in ("list", "ls"):
        from prunebench.studies import load_study

        for n in STUDIES.names():
            console.print(f"{n:20s} {STUDIES.doc(n)}", highlight=False)
            console.print(f"{'':20s} presets: {', '.join(load_study(n).presets)}",
                          highlight=False)
        return
    from prunebench.studies.executor import check_options

    try:  # bad values: one line, exit 2, nothing written
        check_options(backend=backend, workers=workers, retries=retries,
                      cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, address=address)
    except PrunebenchError as exc:
        _fail(exc)
    reporter = _reporter(quiet)
    command = " ".join(["prunebench", "study", name, "--preset", preset]
                       + ([f"--seeds {seeds}"] if seeds else [])
                       + [f"--set {s}" for s in set_ or []] + ["--out", str(out)]
                       + ([f"--stack {stack}"] if stack else [])
                       + ([f"--retries {retries}"] if retries else []))
    set_ = _log_overrides(log, set_)
    if backend != "ray" and (workers or 1) == 1:
        backend = "serial"  # one process pool worker: this process, with its epoch lines
    try:
        manifests = run_studies(name, out, preset=preset, seeds=seeds, overrides=set_,
                                reporter=reporter, command=command,
                                workers=workers if backend == "ray" else workers or 1,
                                backend=backend, stack=stack, retries=retries,
                                cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                                address=address)
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
        console.print(Text(str(manifest["analysis"]["verdict"]), style="bold"))
    if report:
        html = write_html_report(out, path)
        console.print(f"report: {html}", markup=False, highlight=False)


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
        typer.echo(dumps_json(to_json(checks), indent=2))
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
def methods() -> None:
    """List the registered pruning criteria and pruning schedules.

    Criteria are prune.method values (and say which need data); schedules are
    prune.granularity / prune.schedule values."""
    import prunebench.pruning  # noqa: F401  (registers the built-in criteria)
    from prunebench.pruning.context import CRITERIA, criterion_needs_data
    from prunebench.pruning.schedules import PRUNE_SCHEDULES

    console.print("criteria (prune.method):", highlight=False)
    for name in CRITERIA.names():
        data = "needs data" if criterion_needs_data(name) else "no data"
        doc = _first_line(_doc(CRITERIA.get(name), CRITERIA.doc(name)))
        console.print(f"  {name:14s} {data:10s}  {doc}", highlight=False, markup=False)
    console.print("pruning schedules (prune.granularity/prune.schedule):", highlight=False)
    for name in PRUNE_SCHEDULES.names():
        console.print(f"  {name:26s} {_first_line(PRUNE_SCHEDULES.doc(name))}",
                      highlight=False, markup=False)


def _doc(obj: Any, fallback: str | None) -> str | None:
    import inspect

    return inspect.getdoc(obj) or fallback


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n\n")[0].replace("\n", " ").strip()


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
    __import__("prunebench.data.cli", fromlist=["register"]).register(app)


_register_extensions()


def main() -> None:
    try:
        app()
    except PrunebenchError as exc:  # errors raised outside a command body
        err_console.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
