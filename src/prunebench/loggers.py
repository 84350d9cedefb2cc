"""Experiment trackers: send a run's per-epoch metrics to TensorBoard, MLflow, W&B or your own.

A logger is any object with three methods (:class:`RunLogger`)::

    start(run_id, recipe)          # the run begins (recipe: the run's recipe as a dict)
    log(metrics, step, phase)      # one finished epoch: {"test_acc": ..., "train_loss": ...}
    finish(record)                 # the run ended: its result record as a dict
                                   # (record["status"]: done / diverged / failed / interrupted)

Select them by name (``--log tensorboard`` on ``run`` / ``study``, repeatable; a recipe's
``log: {to: [tensorboard, mlflow]}``) or pass objects: ``prunebench.run(recipe,
loggers=[MyLogger()])``. Names come from :data:`LOGGERS`; register your own with
``@LOGGERS.register("name")`` on a factory ``(cfg: LogCfg, out: Path) -> RunLogger``.

``step`` is the epoch number within ``phase`` (pretrain, retrain, ...); metric names are
the keys of a metrics line (``test_acc``, ``val_acc``, ``train_loss``, ``lr``, ...), which
the built-in loggers store as ``<phase>/<key>``. Loggers only read: they never change a
run's id or results. They see the epochs trained in this process: a stage reused from the
store (a shared dense model) or a finished run returned from the store is not replayed.

The built-in loggers are optional extras: ``pip install 'prunebench[tensorboard]'``
(``mlflow``, ``wandb``); a missing one is a one-line error before anything runs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prunebench.errors import RecipeError
from prunebench.registry import Registry


@runtime_checkable
class RunLogger(Protocol):
    """What a logger implements (any object with these methods will do)."""

    def start(self, run_id: str, recipe: dict[str, Any]) -> None: ...
    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None: ...
    def finish(self, record: dict[str, Any]) -> None: ...


#: named logger factories: ``factory(cfg: prunebench.recipe.LogCfg, out: Path) -> RunLogger``
LOGGERS: Registry[Callable[..., RunLogger]] = Registry("logger")

#: the Python package each built-in logger needs, and the extra that installs it
EXTRAS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
          "wandb": ("wandb", "wandb")}


def check_loggers(names: Sequence[str]) -> None:
    """Raise a one-line :class:`RecipeError` for an unknown logger name or a missing extra."""
    for name in names:
        if name not in LOGGERS:
            allowed = ", ".join(LOGGERS.names())
            raise RecipeError(f"unknown logger {name!r}; registered: {allowed}")
        if name in EXTRAS:
            module, extra = EXTRAS[name]
            if importlib.util.find_spec(module) is None:
                raise RecipeError(f"--log {name} needs the {module!r} package: "
                                  f"pip install 'prunebench[{extra}]'")


def make_loggers(cfg: Any, out: str | os.PathLike[str]) -> list[RunLogger]:
    """The loggers a recipe's ``log`` section names (checked first)."""
    names = list(dict.fromkeys(cfg.to)) if cfg is not None else []
    check_loggers(names)
    return [LOGGERS.get(n)(cfg, Path(out)) for n in names]


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics line (no phase, no lists, no None)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if v == v and abs(v) != float("inf"):
            out[k] = float(v)
    return out


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a result record (final accuracy, sparsity, speedup, TA)."""
    out = numeric({k: record.get(k) for k in ("test_acc", "val_acc", "test_top5", "seconds")})
    pruned = record.get("pruned") or {}
    out.update(numeric({k: pruned.get(k) for k in ("param_sparsity", "flops_sparsity",
                                                   "speedup")}))
    ta = record.get("ta") or {}
    out.update(numeric({f"ta_{split}": ta.get(split) for split in ("test", "val")}))
    return out


def flat(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested recipe as ``{"retrain.lr": "0.01", ...}`` (hyperparameter tables)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, f"{key}."))
        else:
            out[key] = str(v)
    return out


class LoggingReporter:
    """A training reporter that also sends each finished epoch to ``loggers``, then
    forwards everything to ``inner`` (which may be None: no progress display)."""

    def __init__(self, inner: Any, loggers: Sequence[RunLogger]) -> None:
        self.inner, self.loggers = inner, list(loggers)

    def start_epoch(self, phase: str, epoch: int, total: int, n_batches: int) -> None:
        if self.inner is not None:
            self.inner.start_epoch(phase, epoch, total, n_batches)

    def advance(self) -> None:
        if self.inner is not None:
            self.inner.advance()

    def end_epoch(self, metrics: dict[str, Any]) -> None:
        phase = str(metrics.get("phase", "train"))
        step = int(metrics.get("epoch", 0))
        for lg in self.loggers:
            lg.log(dict(metrics), step, phase)
        if self.inner is not None:
            self.inner.end_epoch(metrics)

    def __getattr__(self, name: str) -> Any:  # warn(), start_cell(), ... of the inner one
        if self.inner is None:
            raise AttributeError(name)
        return getattr(self.inner, name)


# -- the built-in loggers --------------------------------------------------------------------


class TensorBoardLogger:
    """Event files under ``<log.dir or <out>/tensorboard>/<run id>``: scalars
    ``<phase>/<metric>`` per epoch, ``final/<metric>``, and the recipe as text."""

    def __init__(self, cfg: Any, out: Path) -> None:
        self.root = Path(cfg.dir) if cfg is not None and cfg.dir else out / "tensorboard"
        self.writer: Any = None

    def start(self, run_id: str, recipe: dict[str, Any]) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.root / run_id))
        self.writer.add_text("recipe", "```\n" + yaml.safe_dump(recipe, sort_keys=False)
                             + "```", 0)

    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None:
        for k, v in numeric(metrics).items():
            if k != "epoch":
                self.writer.add_scalar(f"{phase}/{k}", v, step)
        self.writer.flush()

    def finish(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in final_metrics(record).items():
            self.writer.add_scalar(f"final/{k}", v, 0)
        self.writer.add_text("status", str(record.get("status")), 0)
        self.writer.close()


class MLflowLogger:
    """One MLflow run per prunebench run (run name: the run id; tag ``prunebench.run_id``)
    in experiment ``log.project``; params: the flattened recipe; metrics ``<phase>/<key>``
    per epoch and ``final/<key>``. ``log.tracking_uri`` (default ``file:<out>/mlruns``)."""

    def __init__(self, cfg: Any, out: Path) -> None:
        uri = cfg.tracking_uri if cfg is not None and cfg.tracking_uri else None
        self.uri = uri or (out.resolve() / "mlruns").as_uri()
        self.experiment = cfg.project if cfg is not None else "prunebench"
        self.client: Any = None
        self.run_id = ""

    def start(self, run_id: str, recipe: dict[str, Any]) -> None:
        if self.uri.startswith("file:"):  # a local file store is what the user asked for
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(
            self.experiment)
        run = self.client.create_run(exp_id, run_name=run_id,
                                     tags={"prunebench.run_id": run_id})
        self.run_id = run.info.run_id
        params = [Param(k, v[:500]) for k, v in flat(recipe).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{phase}/{k}", v, now, step) for k, v in numeric(metrics).items()
                 if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, record: dict[str, Any]) -> None:
        if self.client is None:
            return
        for k, v in final_metrics(record).items():
            self.client.log_metric(self.run_id, f"final/{k}", v)
        self.client.set_tag(self.run_id, "prunebench.status", str(record.get("status")))
        status = {"done": "FINISHED", "interrupted": "KILLED"}.get(record.get("status"),
                                                                  "FAILED")
        self.client.set_terminated(self.run_id, status)


class WandbLogger:
    """One W&B run per prunebench run (name: the run id; config: the recipe) in project
    ``log.project``; ``log.wandb_mode`` offline keeps it local (``wandb sync`` later)."""

    def __init__(self, cfg: Any, out: Path) -> None:
        self.project = cfg.project if cfg is not None else "prunebench"
        self.mode = cfg.wandb_mode if cfg is not None else None
        self.dir = out
        self.run: Any = None

    def start(self, run_id: str, recipe: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(project=self.project, name=run_id, config=recipe,
                              dir=str(self.dir), mode=self.mode, reinit=True)

    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None:
        self.run.log({f"{phase}/{k}": v for k, v in numeric(metrics).items()})

    def finish(self, record: dict[str, Any]) -> None:
        if self.run is None:
            return
        for k, v in final_metrics(record).items():
            self.run.summary[f"final/{k}"] = v
        self.run.finish(exit_code=0 if record.get("status") == "done" else 1)


LOGGERS.register("tensorboard", doc="TensorBoard event files (extra: tensorboard)")(
    TensorBoardLogger)
LOGGERS.register("mlflow", doc="an MLflow tracking store (extra: mlflow)")(MLflowLogger)
LOGGERS.register("wandb", doc="Weights & Biases (extra: wandb)")(WandbLogger)
