"""LR calibration under one budget: every method gets the same LR grid and epochs.

A recipe asks for it with a ``calibrate`` key under ``retrain`` (or ``finetune``)::

    retrain:
      epochs: 120
      lr: "0:0.01,60:0.001,90:0.0001"     # the shape (milestones, decay factors)
      calibrate: {lrs: [0.1, 0.03, 0.01, 0.003, 0.001], schedule: step, metric: val}

``calibrate`` is handled on the raw recipe dict *before* validation (the ``Recipe`` model
has no such field): :func:`expand_calibration` expands the grid (``grid:``, ``seeds:``),
applies ``--set`` overrides, pops ``calibrate`` and makes one recipe per LR:

* ``schedule: step`` (default): ``retrain.lr`` (a step schedule; the default recipe's
  ``0:0.01,60:0.001,90:0.0001`` when absent) with every LR multiplied by
  ``lr / initial_lr``: same milestones, same decay factors, initial LR ``lr``.
* ``schedule: cosine``: ``cosine:LR:FINAL`` with ``final_lr`` (key under ``calibrate``,
  default 0). A ``;warmup=N`` of ``retrain.lr`` is kept in both.

Selection (:func:`select_lr`) per method (grid cell without the seed) uses the validation
split only: the final-epoch validation accuracy, averaged over seeds; ties go to the
smaller LR. The test split is never looked at. An LR where any seed diverged or failed (or
has no validation accuracy) is not eligible: a mean over the seeds that survived would
favour an LR that is unstable. Its curve entry says so (``eligible: false``, ``diverged``
/ ``failed`` counts, ``not_eligible``: why; ``val`` and ``test`` are ``null``). The outcome
is written to ``<out>/calibrations/<key>.json``: per method the chosen LR, its test
accuracy (mean over its seeds, all finished) and the sensitivity curve (val and test per
LR). A method where no LR of the grid is eligible gets no choice: it is listed under
``no_choice`` (label, cell, reason, curve) instead of ``methods``, and :func:`calibrate`
then raises :class:`NoEligibleLR` (one line, exit code 4 like a grid with a diverged cell)
after the record is written.

Integration: ``prunebench.api.run_all`` routes a recipe for which
:func:`calibration_requested` is true to :func:`run_calibration` (so ``prunebench run``
works too); ``prunebench calibrate`` runs it and prints the report.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench import io
from prunebench.compare.errors import CompareError
from prunebench.compare.stats import summarize
from prunebench.errors import RunsIncomplete
from prunebench.recipe import Recipe, RetrainCfg, apply_overrides, build_recipe, read_yaml
from prunebench.recipe import recipe_hash as _hash
from prunebench.record import RunRecord
from prunebench.schedule import Schedule, parse_schedule

_KEYS = {"lrs", "schedule", "metric", "final_lr"}

SELECTION = ("final-epoch validation accuracy (mean over seeds); an LR where any seed "
             "diverged, failed or has no validation accuracy is not eligible; ties -> smaller "
             "LR; test never used")


class NoEligibleLR(CompareError, RunsIncomplete):
    """A calibration ran, but for some method every LR of the grid had a seed that diverged
    or failed: that method has no calibrated result (exit code 4: runs did not finish)."""

    exit_code = 4


@dataclass(frozen=True)
class Grid:
    """A calibration grid: LRs, schedule shape, selection metric."""

    lrs: tuple[float, ...]
    schedule: str = "step"
    metric: str = "val"
    final_lr: float = 0.0

    def signature(self, base_lr: str) -> str:
        """The shared retraining recipe of every method calibrated over this grid."""
        lrs = ",".join(f"{x:g}" for x in self.lrs)
        shape = shape_of(base_lr, self)
        return f"calibrated(lrs={lrs}; {self.schedule} {shape}; select=final {self.metric})"

    def to_dict(self) -> dict[str, Any]:
        return {"lrs": list(self.lrs), "schedule": self.schedule, "metric": self.metric,
                "final_lr": self.final_lr}


def parse_grid(cfg: Any) -> Grid:
    """Validate a ``calibrate`` mapping (one-line errors)."""
    if not isinstance(cfg, dict):
        raise CompareError(f"retrain.calibrate must be a mapping with lrs, got {cfg!r}")
    unknown = sorted(set(cfg) - _KEYS)
    if unknown:
        raise CompareError(
            f"retrain.calibrate: unknown key {unknown[0]!r}: allowed {', '.join(sorted(_KEYS))}"
        )
    lrs = cfg.get("lrs")
    if not isinstance(lrs, list) or not lrs or not all(
        isinstance(x, int | float) and not isinstance(x, bool) and x > 0 for x in lrs
    ):
        raise CompareError(
            f"retrain.calibrate.lrs must be a non-empty list of LRs > 0, got {lrs!r}"
        )
    if len(set(lrs)) != len(lrs):
        raise CompareError(f"retrain.calibrate.lrs has duplicates: {lrs!r}")
    schedule = cfg.get("schedule", "step")
    if schedule not in ("step", "cosine"):
        raise CompareError(f"retrain.calibrate.schedule {schedule!r}: allowed step, cosine")
    metric = cfg.get("metric", "val")
    if metric != "val":
        raise CompareError(
            f"retrain.calibrate.metric {metric!r}: only 'val' (selection never uses the test split)"
        )
    final = cfg.get("final_lr", 0.0)
    if isinstance(final, bool) or not isinstance(final, int | float) or final < 0:
        raise CompareError(f"retrain.calibrate.final_lr must be a number >= 0, got {final!r}")
    if schedule == "step" and "final_lr" in cfg:
        raise CompareError("retrain.calibrate.final_lr belongs to schedule: cosine")
    return Grid(tuple(float(x) for x in sorted(lrs, reverse=True)), schedule, metric, float(final))


def _base_schedule(base_lr: str) -> Schedule:
    if isinstance(base_lr, str) and base_lr.replace(" ", "").startswith("pxfy:"):
        raise CompareError("retrain.calibrate cannot take its shape from a 'pxfy:' retrain.lr")
    return parse_schedule(base_lr)


def shaped_lr(base_lr: str, lr: float, grid: Grid) -> str:
    """The retraining schedule of one grid point (canonical string)."""
    base = _base_schedule(base_lr)
    if grid.schedule == "cosine":
        return Schedule("cosine", start=lr, end=grid.final_lr, warmup=base.warmup).canonical()
    if base.kind != "step":
        raise CompareError(
            f"retrain.calibrate.schedule step takes its milestones from a step retrain.lr, "
            f"got {base_lr!r}"
        )
    initial = base.initial_lr
    if initial <= 0:
        raise CompareError(f"retrain.lr {base_lr!r} starts at 0: nothing to scale")
    steps = tuple((k, float(f"{v / initial * lr:.6g}")) for k, v in base.steps)
    return Schedule("step", steps, warmup=base.warmup).canonical()


def shape_of(base_lr: str, grid: Grid) -> str:
    """The schedule shape shared by the grid: step LRs relative to the first, or cosine."""
    base = _base_schedule(base_lr)
    warm = f";warmup={base.warmup}" if base.warmup else ""
    if grid.schedule == "cosine":
        return f"cosine:LR:{grid.final_lr:g}{warm}"
    return f"LR*({shaped_lr(base_lr, 1.0, grid)})"


def _retrain_key(raw: dict[str, Any]) -> str | None:
    for key in ("retrain", "finetune"):
        sec = raw.get(key)
        if isinstance(sec, dict) and "calibrate" in sec:
            return key
    return None


def calibration_requested(
    source: str | os.PathLike[str] | dict[str, Any], overrides: list[str] | None = None
) -> bool:
    """Whether a recipe (file or dict), after ``--set`` overrides, has ``retrain.calibrate``."""
    raw = source if isinstance(source, dict) else read_yaml(source)
    return _retrain_key(apply_overrides(raw, overrides)) is not None


@dataclass(frozen=True)
class Point:
    """One recipe of a calibration: its method cell, seed, grid LR and validated recipe."""

    method: dict[str, Any]  # the grid cell without seed
    seed: int
    lr: float
    recipe: Recipe


def expand_calibration(
    raw: dict[str, Any], overrides: list[str] | None = None, source: str = "recipe"
) -> tuple[Grid, str, list[Point]]:
    """``(grid, signature, points)``: one validated recipe per (grid cell, seed, LR)."""
    from prunebench.studies.grid import check_grid_overrides, expand_grid

    raw = copy.deepcopy(raw)
    check_grid_overrides(raw, overrides)
    grid_axes = raw.get("grid") or {}
    if isinstance(grid_axes, dict) and any(
        k.split(".", 1)[0] in ("retrain", "finetune") and k.split(".")[-1] == "lr"
        for k in grid_axes
    ):
        raise CompareError("give retrain.calibrate or a grid over retrain.lr, not both")
    grid: Grid | None = None
    signature = ""
    points: list[Point] = []
    for cell, cell_raw in expand_grid(raw):
        cell_raw = apply_overrides(cell_raw, overrides)
        sec = cell_raw.get("retrain")
        if not isinstance(sec, dict) or "calibrate" not in sec:
            raise CompareError("retrain.calibrate was removed by an override")
        cal = sec.pop("calibrate")
        this = parse_grid(cal)
        base_lr = sec.get("lr", RetrainCfg.model_fields["lr"].default)
        sig = this.signature(base_lr)
        if grid is not None and (this != grid or sig != signature):
            raise CompareError("every grid cell must share one calibration grid and shape")
        grid, signature = this, sig
        method = {k: v for k, v in cell.items() if k != "seed"}
        for lr in this.lrs:
            r = copy.deepcopy(cell_raw)
            r["retrain"]["lr"] = shaped_lr(base_lr, lr, this)
            recipe = build_recipe(r, source=source)
            if recipe.retrain is None:
                raise CompareError("retrain.calibrate needs a retraining stage")
            if recipe.data.val_size == 0:
                raise CompareError("retrain.calibrate selects on validation: data.val_size > 0")
            points.append(Point(method, recipe.seed, lr, recipe))
    assert grid is not None
    return grid, signature, points


def select_lr(points: list[dict[str, Any]], metric: str = "val") -> float:
    """The LR with the highest ``metric`` (final-epoch validation accuracy); ties -> the
    smaller LR. ``points``: ``[{"lr": float, "val": float, ...}]``; a point with
    ``eligible: false`` (a seed diverged or failed) or no ``val`` never wins; other keys
    (test) are ignored by construction."""
    if metric != "val":
        raise CompareError(f"calibration metric {metric!r}: only 'val'")
    usable = [p for p in points if p.get("val") is not None and p.get("eligible", True)]
    if not usable:
        raise CompareError("calibration: no eligible LR to select on (every LR had a seed "
                           "that diverged or failed, or data.val_size is 0)")
    best = max(usable, key=lambda p: (round(float(p["val"]), 9), -float(p["lr"])))
    return float(best["lr"])


def _method_label(method: dict[str, Any], recipe: Recipe) -> str:
    from prunebench.compare.fingerprint import method_label

    label = method_label(recipe.model_dump(mode="json"))
    extra = ", ".join(f"{k}={v}" for k, v in method.items() if k != "prune.method")
    return f"{label} ({extra})" if extra else label


def _curve_point(lr: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One LR of a method's sensitivity curve. Eligible only when every seed finished with a
    validation and a test accuracy; ``val`` / ``test`` are means over those seeds (``None``
    when not eligible: a mean over the surviving seeds would hide the instability)."""
    diverged = sum(r["status"] == "diverged" for r in runs)
    failed = sum(r["status"] not in ("done", "diverged") for r in runs)
    missing = sum(r["status"] == "done" and (r["val_acc"] is None or r["test_acc"] is None)
                  for r in runs)
    n = len(runs)
    why = [f"{k} of {n} seeds {what}" for k, what in (
        (diverged, "diverged"), (failed, "failed"), (missing, "without a final accuracy")) if k]
    eligible = not why
    return {"lr": lr, "schedule": runs[0]["lr_schedule"],
            "val": summarize([r["val_acc"] for r in runs]).mean if eligible else None,
            "test": summarize([r["test_acc"] for r in runs]).mean if eligible else None,
            "eligible": eligible, "diverged": diverged, "failed": failed,
            "not_eligible": "; ".join(why) or None, "runs": runs}


def build_record(grid: Grid, signature: str, points: list[Point],
                 results: list[RunRecord]) -> dict[str, Any]:
    """The stored calibration: per method, every LR's runs, the choice and its test acc;
    methods where no LR is eligible under ``no_choice``."""
    by_method: dict[str, dict[str, Any]] = {}
    for point, res in zip(points, results, strict=True):
        key = json.dumps(point.method, sort_keys=True, default=str)
        m = by_method.setdefault(key, {"label": _method_label(point.method, point.recipe),
                                       "cell": point.method, "lrs": {}})
        m["lrs"].setdefault(point.lr, []).append(
            {"id": res.id, "seed": point.seed, "status": res.status,
             "lr_schedule": point.recipe.retrain.lr if point.recipe.retrain else None,
             "val_acc": res.val_acc, "test_acc": res.test_acc})
    methods = []
    no_choice = []
    for m in by_method.values():
        curve = [_curve_point(lr, runs) for lr, runs in m["lrs"].items()]
        if not any(c["eligible"] for c in curve):
            reasons = "; ".join(f"lr {c['lr']:g}: {c['not_eligible']}" for c in curve)
            no_choice.append({"label": m["label"], "cell": m["cell"], "curve": curve,
                              "reason": f"no eligible LR ({reasons})"})
            continue
        chosen = select_lr(curve, grid.metric)
        pick = next(c for c in curve if c["lr"] == chosen)
        tests = [r["test_acc"] for r in pick["runs"] if r["test_acc"] is not None]
        methods.append({
            "label": m["label"], "cell": m["cell"], "chosen_lr": chosen,
            "chosen_schedule": pick["schedule"], "chosen_runs": [r["id"] for r in pick["runs"]],
            "val": pick["val"], "test": summarize(tests).to_dict(), "curve": curve,
        })
    ids = sorted(r.id for r in results)
    return {"key": _hash({"signature": signature, "runs": ids}), "signature": signature,
            "grid": grid.to_dict(), "selection": SELECTION, "methods": methods,
            "no_choice": no_choice}


def record_run_ids(rec: dict[str, Any]) -> list[str]:
    """Every run id a calibration record holds (chosen or not, with or without a choice)."""
    entries = [*rec.get("methods", []), *rec.get("no_choice", [])]
    return [r["id"] for m in entries for c in m["curve"] for r in c["runs"]]


def run_calibration(
    source: str | os.PathLike[str] | dict[str, Any],
    out: str | os.PathLike[str] = "runs",
    *,
    overrides: list[str] | None = None,
    reporter: Any = None,
    device: str | None = None,
    data_dir: str | None = None,
) -> list[tuple[dict[str, Any], Any]]:
    """Run every (method, seed, LR) of a calibration recipe, select per method on
    validation, store the record; returns ``[(cell, RunResult), ...]`` like ``run_all``.
    Every recipe is validated before any runs."""
    from prunebench.pipeline import run_cell, validate_recipes

    raw = source if isinstance(source, dict) else read_yaml(source)
    label = "recipe" if isinstance(source, dict) else str(source)
    grid, signature, points = expand_calibration(raw, overrides, label)
    # every (method, seed, LR) is checked before the first one runs
    recipes = validate_recipes([(f"calibration LR {p.lr:g}", p.recipe) for p in points],
                               device=device, data_dir=data_dir)
    items = []
    for p, recipe in zip(points, recipes, strict=True):
        res = run_cell(recipe, out, reporter=reporter)
        cell = {**p.method, **({"seed": p.seed} if len({q.seed for q in points}) > 1 else {}),
                "retrain.lr": p.recipe.retrain.lr if p.recipe.retrain else None}
        items.append((cell, res))
    record = build_record(grid, signature, points, [r.record for _, r in items])
    io.write_json(Path(out) / "calibrations" / f"{record['key']}.json", record)
    return items


def calibrate(
    source: str | os.PathLike[str] | dict[str, Any],
    out: str | os.PathLike[str] = "runs",
    **kwargs: Any,
) -> dict[str, Any]:
    """Run a calibration recipe and return its stored record (see :func:`build_record`).
    When a method has no eligible LR (every LR had a seed that diverged or failed), the
    record is written and :class:`NoEligibleLR` is raised (one line, exit code 4)."""
    items = run_calibration(source, out, **kwargs)
    ids = sorted(r.id for _, r in items)
    for rec in load_records(out):
        if sorted(record_run_ids(rec)) == ids:
            if rec.get("no_choice"):
                where = Path(out) / "calibrations" / f"{rec['key']}.json"
                raise NoEligibleLR(
                    "calibration: no calibrated result for "
                    + "; ".join(f"{m['label']}: {m['reason']}" for m in rec["no_choice"])
                    + f"; every LR of the grid needs all its seeds finished (record: {where})")
            return rec
    raise CompareError("calibration record was not written")  # pragma: no cover


def load_records(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every calibration record of a run store. A damaged record is a one-line
    :class:`CompareError`, never skipped: without it the tuning runs it lists could not be
    told from results (they would be ranked as ordinary runs)."""
    d = Path(out) / "calibrations"
    if not d.is_dir():
        return []
    return [_read_record(p) for p in sorted(d.glob("*.json"))]


def _read_record(path: Path) -> dict[str, Any]:
    fix = ("move it aside and run the calibration again (`prunebench calibrate RECIPE`: "
           "finished runs are reused)")
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not valid JSON (truncated?)"
        raise CompareError(f"calibration record {str(path)!r} cannot be read: {why}; "
                           f"{fix}") from None
    try:
        ok = isinstance(rec, dict) and isinstance(rec["signature"], str) and all(
            isinstance(m["chosen_runs"], list) and "chosen_lr" in m for m in rec["methods"])
        record_run_ids(rec)
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise CompareError(f"calibration record {str(path)!r} is not a calibration record "
                           f"(damaged); {fix}")
    return rec


def calibrated_picks(out: str | os.PathLike[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """``(picks, members)``: run id -> ``{signature, chosen_lr}`` for the chosen runs of
    every calibration; the ids of every run a calibration made."""
    picks: dict[str, dict[str, Any]] = {}
    members: set[str] = set()
    for rec in load_records(out):
        members.update(record_run_ids(rec))
        for m in rec["methods"]:
            for rid in m["chosen_runs"]:
                picks[rid] = {"signature": rec["signature"], "chosen_lr": m["chosen_lr"]}
    return picks, members
