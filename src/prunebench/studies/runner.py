"""Running a study: expand its cells, run each (skipping finished ones), write a manifest.

The manifest (``<out>/studies/<name>-<preset>.json``) maps every table cell (row, column,
seed) to its run id; reports read it together with the runs' results and metrics.

Every cell is validated (recipe, layer patterns against the built model, the files it
names) before the manifest or any run is written. A cell that diverges or fails does not
stop the others: the manifest records each cell's ``status`` and lists the ones that did
not finish under ``not_done``; ``complete`` is true only when every cell is done. With
``retries`` N such a cell runs again up to N times first; each cell records ``attempts``
(0: finished before this start) and, on Ray, ``placement`` (node, GPU ids, device).

With stacking (``stack`` k > 1; automatic: on when the recipes train on CUDA) the cells
whose retraining can stack train as fused models of up to k copies
(:mod:`prunebench.stacked_runs`); each is still its own run with its own id. The manifest
records ``stack`` (the k asked for) and each cell's ``stack`` (the copies it trained with).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunebench import io
from prunebench.errors import RecipeError, StoreError
from prunebench.pipeline import RunResult, validate_recipes
from prunebench.plan import plan
from prunebench.recipe import Recipe, apply_overrides, build_recipe, set_path
from prunebench.stacked_runs import auto_stack, stack_jobs
from prunebench.store import RunStore, clear_stale_lock
from prunebench.studies.executor import (
    check_options,
    connect_ray,
    ray_gpus,
    run_cells,
    run_job,
)
from prunebench.studies.spec import StudySpec, load_study
from prunebench.train import Reporter, report


@dataclass
class Cell:
    row: str
    column: str
    value: Any
    seed: int
    recipe: Recipe


def expand_study(
    spec: StudySpec, preset: str, *, seeds: int | None = None, overrides: list[str] | None = None
) -> list[Cell]:
    """Every cell of the study's table as a validated recipe (all validated before any run)."""
    p = spec.preset(preset)
    check_overrides(spec, preset, overrides)
    n_seeds = seeds if seeds is not None else p.seeds
    base_seed = p.base.get("seed", 0)
    cells = []
    for row in p.rows:
        for value, label in zip(p.columns.values, p.columns.labels or [], strict=True):
            for seed in range(base_seed, base_seed + n_seeds):
                raw = apply_overrides(p.base, None)
                set_path(raw, p.columns.key, value)
                for key, v in row.set.items():
                    set_path(raw, key, v)
                raw = apply_overrides(raw, overrides)  # --set wins over the rows' values
                raw["seed"] = seed  # last: the seed axis is the study's, nothing overrides it
                recipe = build_recipe(raw, source=f"study {spec.name} row {row.label!r}")
                cells.append(Cell(row.label, label, value, seed, recipe))
    _check_distinct(spec, preset, cells)
    return cells


def check_overrides(spec: StudySpec, preset: str, overrides: list[str] | None) -> None:
    """``--set`` may change a study's base, never its axes: a ``seed`` would make every seed
    of a cell one run (the report then shows "3 seeds +- 0.00"), the columns' key every
    column of a row one run under several column labels, a key a row sets that row's
    variant (its label would then name what it did not run). One-line errors, before
    anything runs."""
    from prunebench.studies.spec import SEED_AXIS, overlaps

    key_of_columns = spec.preset(preset).columns.key
    for item in overrides or []:
        if not isinstance(item, str) or "=" not in item:
            continue  # apply_overrides names the malformed ones
        key = item.partition("=")[0].strip()
        if overlaps(key, "seed"):
            raise RecipeError(f"--set {item.strip()}: {SEED_AXIS}")
        if overlaps(key, key_of_columns):
            raise RecipeError(
                f"--set {item.strip()}: {key!r} replaces the columns' key {key_of_columns!r} "
                f"of study {spec.name} ({preset}): every column would run the same recipe "
                "under its own label; change the columns in the study file instead")
        for row in spec.preset(preset).rows:
            hit = next((k for k in row.set if overlaps(key, k)), None)
            if hit is not None:
                raise RecipeError(
                    f"--set {item.strip()}: {key!r} replaces {hit!r}, which row {row.label!r} "
                    f"of study {spec.name} ({preset}) sets: the row's label would name a "
                    "setting it did not run; change the rows in the study file instead")


def _check_distinct(spec: StudySpec, preset: str, cells: list[Cell]) -> None:
    """Every cell of a row is its own recipe: two seeds of one cell, or two columns of one
    row, that came out as one recipe would be one run shown (and averaged) as several."""
    seen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        h = cell.recipe.short_hash()
        other = seen.get((cell.row, h))
        if other is not None:
            what = (f"seeds {other.seed} and {cell.seed} of column {cell.column!r}"
                    if other.column == cell.column
                    else f"columns {other.column!r} and {cell.column!r}")
            raise RecipeError(
                f"study {spec.name} ({preset}) row {cell.row!r}: {what} give the same recipe "
                "(one run shown as several cells); each cell must differ")
        seen[(cell.row, h)] = cell


def dense_recipes(
    spec: StudySpec, preset: str, *, seeds: int | None = None, overrides: list[str] | None = None
) -> dict[int, Recipe]:
    """Per seed, the study's full-length dense model as a run of its own (no prune, no
    retrain): the reference for "difference to dense". Where the cells share pretraining it
    reuses their stage; PxFy cells start from dense runs cut at epoch x, so it is needed."""
    p = spec.preset(preset)
    n_seeds = seeds if seeds is not None else p.seeds
    check_overrides(spec, preset, overrides)
    base_seed = p.base.get("seed", 0)
    out = {}
    for seed in range(base_seed, base_seed + n_seeds):
        raw = apply_overrides(p.base, overrides)
        raw["seed"] = seed  # the study's seed axis, as in its cells
        raw["prune"], raw["retrain"] = None, None
        out[seed] = build_recipe(raw, source=f"study {spec.name} dense reference")
    return out


def manifest_path(out: str | os.PathLike[str], study: str, preset: str) -> Path:
    """Where a study preset's manifest lives in a run store (names checked: slugs only)."""
    return RunStore(out).study_manifest_path(study, preset)


def run_study(
    study: str | Path | StudySpec,
    out: str | os.PathLike[str] = "runs",
    *,
    preset: str = "cpu",
    seeds: int | None = None,
    overrides: list[str] | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
    workers: int | None = None,
    backend: str = "serial",
    validate: bool = True,
    stack: int | None = None,
    retries: int = 0,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run every cell (finished ones return at once, interrupted ones resume); the manifest.

    ``workers > 1`` runs cells in parallel (``backend`` "process"; None: 1) or caps the
    jobs in flight on Ray (None: as many as the cluster's resources allow). Every cell is
    validated first (``validate=False``: the caller already did); a cell that diverges or
    fails is recorded in the manifest (``status``, ``not_done``) and the others still run.
    ``stack`` k trains up to k stackable cells as one fused model (1: off; None: on, with
    :data:`prunebench.stacked_runs.DEFAULT_STACK` copies, when the device is CUDA); with
    workers each worker takes one stack.

    ``retries`` N: a cell that fails or diverges runs again up to N times (the manifest's
    cells and ``not_done`` say how often: ``attempts``). Ray (``backend="ray"``): each job
    is a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (default: 1 when
    the cluster has GPUs and the device is auto / cuda, else 0) on the cluster at
    ``address`` ("auto", HOST:PORT; None: a local Ray); ``workers`` caps the jobs in
    flight (None: as many as the cluster's resources allow). See
    :mod:`prunebench.studies.executor`.
    """
    check_options(backend=backend, workers=workers, retries=retries,
                  cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, address=address)
    spec = study if isinstance(study, StudySpec) else load_study(study)
    cells = expand_study(spec, preset, seeds=seeds, overrides=overrides)
    dense = dense_recipes(spec, preset, seeds=seeds, overrides=overrides)
    p = spec.preset(preset)
    labels = _labels(spec, preset, cells, dense)
    recipes = [*(c.recipe for c in cells), *dense.values()]
    if validate:
        validate_recipes(list(zip(labels, recipes, strict=True)))
    chains = [plan(r) for r in recipes]  # stage keys, once per recipe (hashes a base file)
    k = auto_stack(recipes, stack)
    if k < 1:
        raise RecipeError(f"stack must be >= 1, got {k}")
    t0 = time.perf_counter()
    manifest: dict[str, Any] = {
        "study": spec.name,
        "title": spec.title,
        "description": spec.description,
        "setup": spec.setup,
        "findings": [f.model_dump() for f in spec.findings_for(preset)],
        "figures": spec.figures,
        "preset": preset,
        "note": p.note,
        "rows": [r.label for r in p.rows],
        "columns": {"key": p.columns.key, "labels": p.columns.labels,
                    "values": p.columns.values},
        "seeds": seeds if seeds is not None else p.seeds,
        "stack": k,
        "execution": {"backend": backend, "workers": workers, "retries": retries,
                      **({"cpus_per_run": cpus_per_run} if cpus_per_run else {}),
                      **({"gpus_per_run": gpus_per_run} if gpus_per_run is not None else {}),
                      **({"address": address} if address else {})},
        "command": command or f"prunebench study {spec.name} --preset {preset}",
        "pretrain_stages": sorted({chain[0].key for chain in chains[: len(cells)]}),
        "dense_runs": {str(seed): chain[-1].key
                       for seed, chain in zip(dense, chains[len(cells):], strict=True)},
        "cells": [],
    }
    path = manifest_path(out, spec.name, preset)
    # run ids are content keys, known before anything runs: the manifest is written first,
    # so a killed study still maps every cell to the run that will hold it
    for cell, chain in zip(cells, chains, strict=False):
        manifest["cells"].append({"row": cell.row, "column": cell.column, "value": cell.value,
                                  "seed": cell.seed, "run": chain[-1].key})
    io.write_json(path, {**manifest, "complete": False})

    short = [*(f"{c.row} / {c.column}" + (f" / seed {c.seed}" if manifest["seeds"] > 1
                                            else "") for c in cells),
             *(f"dense reference, seed {seed}" for seed in dense)]
    report(reporter, "begin", len(recipes), f"study {spec.name} ({preset})")

    def serial(job: list[int]) -> list[RunResult]:  # run_cells reports each end_cell
        report(reporter, "start_cell", " + ".join(short[i] for i in job), len(job))
        return run_job([recipes[i] for i in job], str(out), k, reporter)

    # finished runs and repeated recipes are not stacked (they return from the store)
    store, seen, skip, finished = RunStore(out), set[str](), list[bool](), list[bool]()
    for chain in chains:
        rid = chain[-1].key
        finished.append(_done(store, rid))
        skip.append(rid in seen or finished[-1])
        seen.add(rid)
    attempts: dict[int, int] = {}
    results = run_cells(
        [r.model_dump(mode="json") for r in recipes],
        [chain[0].key for chain in chains],
        str(out), workers=workers, backend=backend, serial=serial,
        jobs=stack_jobs(recipes, k, skip), stack=k, retries=retries, reporter=reporter,
        labels=short, finished=finished, cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run, address=address, attempts=attempts,
    )
    assert [r.id for r in results[: len(cells)]] == [c["run"] for c in manifest["cells"]]
    manifest["not_done"] = []
    for i, res in enumerate(results):
        if i < len(cells):
            manifest["cells"][i]["status"] = res.status
            manifest["cells"][i]["attempts"] = attempts.get(i, 1)
            if res.result.get("stack") is not None:
                manifest["cells"][i]["stack"] = res.result["stack"]
            if res.result.get("placement") is not None:
                manifest["cells"][i]["placement"] = res.result["placement"]
        if res.status != "done":
            manifest["not_done"].append({"cell": labels[i], "run": res.id, "status": res.status,
                                         "error": res.result.get("error"),
                                         "attempts": attempts.get(i, 1)})
    if spec.analysis == "crossval":
        if manifest["not_done"]:
            manifest["analysis"] = {"verdict": "no cross-validation verdict: "
                                    f"{len(manifest['not_done'])} cells did not finish"}
        else:
            manifest["analysis"] = _crossval(out, manifest)
    manifest["complete"] = not manifest["not_done"]
    manifest["seconds"] = round(time.perf_counter() - t0, 3)
    io.write_json(path, manifest)
    return manifest


def _done(store: RunStore, rid: str) -> bool:
    rec = store.result(rid)
    done = rec is not None and rec.status == "done"
    if done:  # a kill between its result and the release of its lock left a lease
        clear_stale_lock(store.run_dir(rid) / ".lock")
    return done


def _labels(spec: StudySpec, preset: str, cells: list[Cell], dense: dict[int, Recipe]
            ) -> list[str]:
    """How errors and the ``not_done`` list name each recipe of a study."""
    head = f"study {spec.name} ({preset})"
    return [*(f"{head} row {c.row!r} / column {c.column!r} / seed {c.seed}" for c in cells),
            *(f"{head} dense reference, seed {seed}" for seed in dense)]


def _crossval(out: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """A+FT_A, B+FT_A, A+FT_B, B+FT_B from the 2 x 2 table: one method wins both, or not."""
    from prunebench.compare.crossval import cell_fingerprints, verdict

    methods = dict(zip(manifest["rows"], ("A", "B"), strict=True))
    fts = dict(zip(manifest["columns"]["labels"], ("FT_A", "FT_B"), strict=True))
    acc: dict[tuple[str, str], list[float]] = {}
    ids: dict[tuple[str, str], list[str]] = {}
    store = RunStore(out)
    for c in manifest["cells"]:
        key = (methods[c["row"]], fts[c["column"]])
        rec = store.result(c["run"])
        if rec is None or not rec.finished:
            raise StoreError(f"crossval cell {c['row']} / {c['column']}: run {c['run']!r} "
                             "has no finished result")
        acc.setdefault(key, []).append(float(rec.test_acc))  # type: ignore[arg-type]
        ids.setdefault(key, []).append(c["run"])
    specs = {"A": manifest["rows"][0], "B": manifest["rows"][1],
             "FT_A": manifest["columns"]["labels"][0], "FT_B": manifest["columns"]["labels"][1]}
    # A and B must meet S3.2 under each recipe, or there is no verdict (rates, bases...)
    return verdict(acc, ids, specs, fps=cell_fingerprints(out, ids))


def run_studies(
    study: str | Path | StudySpec, out: str | os.PathLike[str] = "runs", *, preset: str = "cpu",
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run a preset, or every member of a preset group; one manifest per table.

    Everything is checked before anything is written: the options (``backend``,
    ``retries``, ...), every cell of every table, and (Ray) the cluster connection."""
    check_options(**{k: v for k, v in kwargs.items() if k in (
        "backend", "workers", "retries", "cpus_per_run", "gpus_per_run", "address")})
    spec = study if isinstance(study, StudySpec) else load_study(study)
    names = spec.resolve(preset)
    every: list[Recipe] = []
    for name in names:  # validate every cell of every table before anything is written
        seeds, overrides = kwargs.get("seeds"), kwargs.get("overrides")
        cells = expand_study(spec, name, seeds=seeds, overrides=overrides)
        dense = dense_recipes(spec, name, seeds=seeds, overrides=overrides)
        recipes = [*(c.recipe for c in cells), *dense.values()]
        validate_recipes(list(zip(_labels(spec, name, cells, dense), recipes, strict=True)))
        every += recipes
    store = RunStore(out)
    store.check_writable()  # writes nothing
    if kwargs.get("backend") == "ray":
        ray_gpus(connect_ray(kwargs.get("address")), [r.model_dump(mode="json")
                                                      for r in every],
                 kwargs.get("gpus_per_run"))
    # the last check, the first write: a store that cannot be written (read-only, a file,
    # an index folder) stops the study here, not as every cell failing on its workers
    store.open_index()
    return [run_study(spec, out, preset=name, validate=False, **kwargs) for name in names]
