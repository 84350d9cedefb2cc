"""Loading a study for reporting: its manifest, every cell's run (recipe, record, metrics).

Everything here is plain data (dataclasses over what the runner and pipeline wrote; each
run's result is its typed :class:`prunebench.record.RunRecord`, parsed once by the store);
tables, figures and the HTML page only read it. A run that is missing (an interrupted
study) leaves its cell empty rather than failing the report.

**Setups are computed, never taken on trust.** A study YAML may *declare* the setup its
rows share (``setup: S3.1``) and a row label may *claim* one (``"P30F90 LR 0.01 (S4.2)"``).
:meth:`StudyData.column_setups` computes, per column (one ratio: the cells meant to be
compared), the setup every row's runs actually share, from their fingerprints
(:func:`prunebench.compare.setups.group_satisfied`), seed by seed (runs of different seeds
never share a base model) and intersected over the seeds; :meth:`StudyData.row_setups`
computes what each row shares with the study's first row in that column. Both are
:class:`SetupCheck` objects that put the declaration or claim beside the computed setup
and say whether it is met. Every output (terminal, Markdown, LaTeX, CSV, HTML, the card)
shows these; a run that is missing or unfinished is skipped and listed.

**One value per (row, column, seed).** :func:`mark_duplicates` keeps one run where a cell
holds several of one seed (manifest seeds that map to one run, repeated runs in a plain
store) and says which; seeds are the runs' own. A run that did not finish has no
accuracy (:attr:`RunData.test_acc` is ``None``): it is never ranked or averaged. Each
run's dense reference is the dense model it descends from (:attr:`RunData.dense_acc`).
"""

from __future__ import annotations

import copy
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunebench.compare.calibrate import calibrated_picks
from prunebench.compare.errors import CompareError
from prunebench.compare.fingerprint import Fingerprint, config_key, fingerprint
from prunebench.compare.setups import (
    SETUPS,
    group_satisfied,
    satisfied_setups,
    setup_label,
)
from prunebench.errors import PrunebenchError, StoreError
from prunebench.record import RunRecord
from prunebench.store import RunStore


class ReportError(PrunebenchError):
    """A report cannot be made (no manifest, unreadable manifest, unknown study or format)."""


@dataclass
class RunData:
    """One stored run: its effective recipe, typed record and per-epoch metrics."""

    id: str
    recipe: dict[str, Any]
    record: RunRecord
    metrics: list[dict[str, Any]]
    #: the accuracy of the study's full-length dense run (manifest ``dense_runs``) that
    #: this run descends from (same ``record.origin``), if any
    reference_dense: float | None = None
    #: the run's calibration (``{signature, chosen_lr}``) when it is a calibrated pick
    calibration: dict[str, Any] | None = None
    #: the id of the study's dense run behind :attr:`reference_dense`
    reference_run: str | None = None
    _fp: Fingerprint | str | None = field(default=None, repr=False, compare=False)

    @property
    def row(self) -> dict[str, Any]:
        """The run as a store row (``id``, ``recipe``, ``record``): what compare reads."""
        return {"id": self.id, "recipe": self.recipe, "record": self.record,
                "metrics": self.metrics}

    @property
    def result(self) -> dict[str, Any]:
        """The record as ``result.json`` holds it (read-only JSON view for callers outside
        the report; the report itself reads the typed :attr:`record`)."""
        return self.record.to_json()

    @property
    def finished(self) -> bool:
        return self.record.finished

    @property
    def fingerprint(self) -> Fingerprint | None:
        """The run's setup fingerprint; ``None`` when it is not comparable (unfinished)."""
        if self._fp is None:
            try:
                self._fp = fingerprint(self.row, calibration=self.calibration)
            except CompareError as exc:
                self._fp = str(exc)
        return self._fp if isinstance(self._fp, Fingerprint) else None

    @property
    def not_comparable(self) -> str | None:
        """Why the run has no fingerprint (``None`` when it has one)."""
        return None if self.fingerprint is not None else str(self._fp)

    @property
    def seed(self) -> int:
        """The seed the run used (its recipe's)."""
        return _seed(self.recipe.get("seed"), 0)

    @property
    def status(self) -> str:
        """``done`` for a finished run, else the record's status (``diverged``, ...)."""
        return "done" if self.finished else (
            "no result" if self.record.status == "done" else str(self.record.status))

    @property
    def test_acc(self) -> float | None:
        """Final-epoch top-1 test accuracy (%), never the best epoch; ``None`` for a run
        that did not finish (diverged, failed): such a run is never ranked or averaged."""
        return _num(self.record.test_acc) if self.finished else None

    @property
    def dense_acc(self) -> float | None:
        """The dense model this run descends from: the study's full-length dense run when
        the run's weights descend from it (same ``record.origin``: PxFy runs start from it
        cut at epoch x), else the run's own base model (``record.dense``)."""
        if self.reference_dense is not None:
            return self.reference_dense
        return _num(self.record.dense.test_acc)

    @property
    def dense_key(self) -> str:
        """The identity of the dense model :attr:`dense_acc` is measured on: the whole
        dense run (``record.origin``), cut at the pruning epoch when the run's own base
        model is a PxFy cut."""
        origin = self.record.origin or f"run:{self.id}"
        if self.reference_dense is None and self.record.pruned_at is not None:
            return f"{origin}@{self.record.pruned_at}"
        return origin

    @property
    def pruned_acc(self) -> float | None:
        """Accuracy right after pruning, before retraining."""
        p = self.record.pruned
        return None if p is None else _num(p.test_acc)

    @property
    def ta(self) -> float | None:
        """Trainability accuracy (paper Eq. 1) on the test set, when measured (``None``
        for a run that did not finish)."""
        ta = self.record.ta
        return None if ta is None or not self.finished else _num(ta.test)

    @property
    def ta_epochs(self) -> int | None:
        ta = self.record.ta
        return None if ta is None else ta.epochs

    @property
    def param_sparsity(self) -> float | None:
        """The compression rate (%): non-zero sparsity for masked runs, else from shapes."""
        p = self.record.pruned
        return None if p is None else _num(p.rate_sparsity)

    @property
    def speedup(self) -> float | None:
        """Speedup from removed structure (``None`` for masked runs: zeros do not speed up)."""
        p = self.record.pruned
        return None if p is None else _num(p.rate_speedup)

    @property
    def retrain_lr(self) -> str | None:
        """The effective retraining LR schedule string (standard form)."""
        eff = self.record.retrain
        if eff is not None and eff.lr is not None:
            return str(eff.lr)
        declared = _get(self.recipe, "retrain.lr")
        return None if declared is None else str(declared)

    @property
    def retrain_init(self) -> str | None:
        """The effective retraining initialisation (``inherit``, ``scratch``, ``orthp``...)."""
        eff = self.record.retrain
        if eff is not None and eff.init is not None:
            return str(eff.init)
        declared = _get(self.recipe, "retrain.init")
        return None if declared is None else str(declared)

    def curve(self, key: str, phase: str = "retrain") -> list[tuple[int, float]]:
        """(epoch, value) of one metric over one phase's epochs (values that are numbers)."""
        out = []
        for m in self.metrics:
            v = _num(m.get(key))
            if m.get("phase") == phase and v is not None and m.get("epoch") is not None:
                out.append((int(m["epoch"]), v))
        return out


_SETUP_TOKEN = re.compile(r"SX-[AB]|S\d(?:\.\d)?", re.IGNORECASE)


def setup_tokens(text: str | None) -> list[str]:
    """The setup names in a declaration or a row label's parentheses, e.g. ``"S4.2"``."""
    if not text:
        return []
    return [next(s for s in SETUPS if s.lower() == t.lower())
            for t in _SETUP_TOKEN.findall(text) if t.lower() in {s.lower() for s in SETUPS}]


def label_claim(label: str) -> str | None:
    """The setup a row label claims in its last parentheses (``"P30F90 LR 0.01 (S4.2)"``
    -> ``"S4.2"``), or ``None``."""
    m = re.search(r"\(([^()]*)\)\s*$", label)
    if not m or not setup_tokens(m.group(1)):
        return None
    return " ".join(setup_tokens(m.group(1)))


@dataclass
class SetupCheck:
    """The setup a set of runs *actually* shares, beside what was declared or claimed.

    ``computed``: the setups every seed-matched comparison met (intersected over seeds);
    ``None`` when there was nothing to compare (no seed with two finished runs).
    ``declared``: the study's ``setup:`` or the row label's claim (``None``: none made).
    ``skipped``: the runs left out (missing or unfinished), said so in the text.
    """

    computed: list[str] | None
    declared: str | None = None
    skipped: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # the seeds compared
    word: str = "declared"  # "declared" (study) or "label claims" (row)
    reference: bool = False  # the row the others are compared with

    @property
    def label(self) -> str:
        """``"S3.1 +SX-A"``, ``"none (not even S1)"`` or ``"not computed"``."""
        return "not computed" if self.computed is None else setup_label(self.computed)

    @property
    def short(self) -> str:
        """``"computed S3.1"`` or ``"not computed"`` (nothing to compare)."""
        return "not computed" if self.computed is None else f"computed {self.label}"

    @property
    def met(self) -> bool | None:
        """Whether the declaration holds (``None``: none made, or nothing to check)."""
        tokens = setup_tokens(self.declared)
        if not tokens or self.computed is None:
            return None
        return all(t in self.computed for t in tokens)

    @property
    def flagged(self) -> bool:
        return self.met is False

    @property
    def verdict(self) -> str:
        if self.declared is None:
            return ""
        m = self.met
        return ("met" if m else "not met" if m is False
                else "unchecked: nothing to compare" if self.computed is None
                else "unchecked: not a setup name")

    @property
    def text(self) -> str:
        """E.g. ``"computed S2 (declared S3.1: not met)"``, ``"computed S3.1 (declared
        S3.1: met)"``, ``"reference"``, with ``"; skipped: ..."`` for runs left out."""
        if self.reference:
            out = "reference"
        elif self.computed is None:
            out = "not computed (no seed with two finished runs)"
        else:
            out = f"computed {self.label}"
        if self.declared is not None and not self.reference:
            out += f" ({self.word} {self.declared}: {self.verdict})"
        if self.skipped:
            out += f"; skipped {len(self.skipped)}: {', '.join(self.skipped)}"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"computed": self.computed, "label": self.label, "declared": self.declared,
                "met": self.met, "seeds": self.seeds, "skipped": self.skipped,
                "text": self.text}


@dataclass
class CellData:
    row: str
    column: str
    value: Any
    seed: int  # the manifest's seed of the cell
    run_id: str
    run: RunData | None
    #: set when the cell is not counted: the run id that holds the value of its row,
    #: column and seed (the same run under several manifest seeds, or several runs of one
    #: configuration and seed); see :attr:`StudyData.duplicates`
    duplicate_of: str | None = None

    @property
    def run_seed(self) -> int:
        """The seed the cell's run actually used (its recipe's), else the manifest's."""
        recipe = getattr(self.run, "recipe", None)
        if isinstance(recipe, dict) and "seed" in recipe:
            return _seed(recipe.get("seed"), self.seed)
        return self.seed

    @property
    def status(self) -> str:
        """``done`` (a finished run), ``missing`` (no run in the store), or the run's
        status (``diverged``, ``failed``, ``running``...)."""
        if self.run is None:
            return "missing"
        status = getattr(self.run, "status", None)
        if status is None:  # a run given as plain data: finished when it has an accuracy
            return "done" if getattr(self.run, "test_acc", None) is not None else "no result"
        return str(status)


def _seed(v: Any, default: int) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def mark_duplicates(cells: list[CellData]) -> list[str]:
    """One value per (row, column, seed): marks the cells that are not counted
    (:attr:`CellData.duplicate_of`) and says which, one line per case.

    A run that several manifest seeds of one cell map to (an override set the seed) is
    one run of one seed, counted once; several runs of one row, column and seed (runs that
    differ only in fields that do not change the result, or a repeated run) are one value:
    the smallest run id counts (an outcome-blind choice)."""
    notes: list[str] = []
    first: dict[tuple[str, str, str], CellData] = {}
    repeats: dict[tuple[str, str, str], list[int]] = {}
    for c in cells:
        c.duplicate_of = None
        k = (c.row, c.column, c.run_id)
        if k in first:
            c.duplicate_of = c.run_id
            repeats.setdefault(k, [first[k].seed]).append(c.seed)
        else:
            first[k] = c
    for k, seeds in repeats.items():
        row, col, rid = k
        notes.append(f"{row} / {col}: manifest seeds {', '.join(map(str, seeds))} are one run "
                     f"({rid}, seed {first[k].run_seed}), counted once")
    groups: dict[tuple[str, str, int], list[CellData]] = {}
    for c in cells:
        if c.duplicate_of is None:
            groups.setdefault((c.row, c.column, c.run_seed), []).append(c)
    for (row, col, seed), group in groups.items():
        if len(group) < 2:
            continue
        keep = min(group, key=lambda c: c.run_id)
        for c in group:
            if c is not keep:
                c.duplicate_of = keep.run_id
        ids = ", ".join(sorted(c.run_id for c in group))
        notes.append(f"{row} / {col} seed {seed}: {len(group)} runs of one row, column "
                     f"and seed ({ids}), counted once: {keep.run_id} (smallest id)")
    return notes


@dataclass
class StudyData:
    """A study's manifest with its runs loaded."""

    path: Path
    manifest: dict[str, Any]
    cells: list[CellData] = field(default_factory=list)
    #: the run store the cells' runs are in
    store: Path | None = None
    _setups: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: the cells not counted, one line each (see :func:`mark_duplicates`)
    duplicates: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        # one value per (row, column, seed), whoever built the cells
        self.duplicates = mark_duplicates(self.cells)

    # -- manifest fields ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.manifest.get("study") or self.path.stem)

    @property
    def preset(self) -> str:
        return str(self.manifest.get("preset") or "")

    @property
    def key(self) -> str:
        """``<study>-<preset>``: the manifest's file stem, used for figure file names."""
        return f"{self.name}-{self.preset}" if self.preset else self.name

    @property
    def title(self) -> str:
        return str(self.manifest.get("title") or self.name)

    @property
    def description(self) -> str:
        return str(self.manifest.get("description") or "")

    @property
    def note(self) -> str:
        return str(self.manifest.get("note") or "")

    @property
    def declared_setup(self) -> str | None:
        """The setup the study YAML declares for its rows (a claim: see
        :meth:`column_setups` for what the runs share)."""
        v = self.manifest.get("setup")
        return None if v in (None, "") else str(v)

    @property
    def rows(self) -> list[str]:
        return [str(r) for r in self.manifest.get("rows") or []]

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in (self.manifest.get("columns") or {}).get("labels") or []]

    @property
    def column_key(self) -> str:
        return str((self.manifest.get("columns") or {}).get("key") or "")

    @property
    def column_values(self) -> list[Any]:
        return list((self.manifest.get("columns") or {}).get("values") or [])

    @property
    def command(self) -> str:
        return str(self.manifest.get("command") or "")

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def figures(self) -> list[str]:
        return [str(f) for f in self.manifest.get("figures") or []]

    # -- runs -----------------------------------------------------------------------------
    @property
    def counted(self) -> list[CellData]:
        """The cells that hold a value: one per (row, column, seed) (see
        :func:`mark_duplicates`)."""
        return [c for c in self.cells if c.duplicate_of is None]

    def cells_of(self, row: str | None = None, column: str | None = None) -> list[CellData]:
        """The counted cells of one row / column / cell, in manifest order."""
        return [c for c in self.counted
                if (row is None or c.row == row) and (column is None or c.column == column)]

    def runs(self, row: str | None = None, column: str | None = None) -> list[RunData]:
        """The loaded runs of one row / column / cell (one per seed), in manifest order;
        a run that did not finish is here too (its accuracy is ``None``)."""
        return [c.run for c in self.cells_of(row, column) if c.run is not None]

    @property
    def all_runs(self) -> list[RunData]:
        """Every loaded run once (a run in several cells is listed once)."""
        out: dict[Any, RunData] = {}
        for r in self.runs():
            out.setdefault(getattr(r, "id", None) or id(r), r)
        return list(out.values())

    @property
    def seeds(self) -> list[int]:
        """The distinct seeds of the counted cells (the seeds the runs actually used)."""
        return sorted({c.run_seed for c in self.counted})

    def unfinished(self) -> dict[str, int]:
        """``{status: count}`` of the counted cells without a finished run (``missing``,
        ``diverged``, ``failed``...)."""
        out: dict[str, int] = {}
        for c in self.counted:
            if c.status != "done":
                out[c.status] = out.get(c.status, 0) + 1
        return out

    @property
    def missing(self) -> int:
        """How many counted cells have no finished run (missing, diverged, failed...)."""
        return sum(self.unfinished().values())

    def first(self) -> RunData | None:
        runs = self.all_runs
        return runs[0] if runs else None

    @property
    def run_ids(self) -> list[str]:
        """Every cell's run id (once each), in manifest order, loaded or not."""
        return list(dict.fromkeys(c.run_id for c in self.cells))

    # -- setups, computed from the runs ---------------------------------------------------
    def _cell_fps(self, column: str, seed: int) -> tuple[dict[str, Fingerprint],
                                                          dict[str, str]]:
        """``({row: fingerprint}, {row: why it was skipped})`` of one column and seed."""
        fps: dict[str, Fingerprint] = {}
        skipped: dict[str, str] = {}
        for c in self.counted:
            if c.column != column or c.run_seed != seed or c.row in fps:
                continue
            if c.run is None:
                skipped[c.row] = f"{c.row} seed {seed} (run {c.run_id} missing)"
            elif c.run.fingerprint is None:
                skipped[c.row] = (f"{c.row} seed {seed} (run {c.run_id} unfinished: "
                                  f"status {c.run.record.status})")
            else:
                fps[c.row] = c.run.fingerprint
        return fps, skipped

    def column_setups(self) -> dict[str, SetupCheck]:
        """Per column: the setup the runs of all its rows actually share (every pair of one
        seed, intersected over the seeds), beside the study's declared setup."""
        if "columns" not in self._setups:
            out: dict[str, SetupCheck] = {}
            for col in self.columns:
                common: set[str] | None = None
                seeds: list[int] = []
                skipped: list[str] = []
                for seed in self.seeds:
                    fps, sk = self._cell_fps(col, seed)
                    skipped += sk.values()
                    if len(fps) < 2:
                        continue
                    sat = set(group_satisfied(list(fps.values())))
                    common = sat if common is None else common & sat
                    seeds.append(seed)
                computed = None if common is None else [s for s in SETUPS if s in common]
                out[col] = SetupCheck(computed, self.declared_setup, skipped, seeds)
            self._setups["columns"] = out
        return dict(self._setups["columns"])

    def row_setups(self) -> dict[tuple[str, str], SetupCheck]:
        """Per (row, column): the setup the row's runs share with the study's first row's
        runs of the same seed (intersected over seeds), beside the setup the row label
        claims in parentheses (``"P30F90 LR 0.01 (S4.2)"``). The first row is the
        reference."""
        if "rows" not in self._setups:
            out: dict[tuple[str, str], SetupCheck] = {}
            ref = self.rows[0] if self.rows else None
            for col in self.columns:
                per_seed = {seed: self._cell_fps(col, seed) for seed in self.seeds}
                for row in self.rows:
                    claim = label_claim(row)
                    skipped = [sk[r] for _, sk in per_seed.values() for r in dict.fromkeys(
                        [row, ref]) if r in sk]
                    if row == ref:
                        out[(row, col)] = SetupCheck(None, claim, skipped, word="label claims",
                                                     reference=True)
                        continue
                    common: set[str] | None = None
                    seeds: list[int] = []
                    for seed, (fps, _) in per_seed.items():
                        if row in fps and ref in fps:
                            sat = set(satisfied_setups(fps[ref], fps[row]))
                            common = sat if common is None else common & sat
                            seeds.append(seed)
                    computed = None if common is None else [s for s in SETUPS if s in common]
                    out[(row, col)] = SetupCheck(computed, claim, skipped, seeds,
                                                 word="label claims")
            self._setups["rows"] = out
        return dict(self._setups["rows"])

    def setup_summary(self) -> str:
        """One line for headings: the computed setup of the columns (per column when they
        differ), with the declaration beside it, e.g. ``"computed S2 (declared S3.1: not
        met)"`` or ``"PR 0.3: computed S3.1; PR 0.5: computed S2 (declared S3.1: not met
        in PR 0.5)"``."""
        checks = self.column_setups()
        if not checks:
            return ("no columns" + (f" (declared {self.declared_setup}: unchecked)"
                                    if self.declared_setup else ""))
        labels = {c.short for c in checks.values()}
        if len(labels) == 1:
            text = next(iter(labels))
        else:
            text = "; ".join(f"{col}: {c.short}" for col, c in checks.items())
        if self.declared_setup is not None:
            bad = [col for col, c in checks.items() if c.flagged]
            if bad:
                where = "" if len(bad) == len(checks) else f" in {', '.join(bad)}"
                text += f" (declared {self.declared_setup}: not met{where})"
            elif all(c.met for c in checks.values()):
                text += f" (declared {self.declared_setup}: met)"
            else:
                text += f" (declared {self.declared_setup}: unchecked)"
        return text

    @property
    def setup_flagged(self) -> bool:
        """Whether a declared or claimed setup is not met somewhere."""
        return (any(c.flagged for c in self.column_setups().values())
                or any(c.flagged for c in self.row_setups().values()))

    @property
    def data_source(self) -> str:
        """The data the runs used; every distinct source (``" | "``) when they differ."""
        return " | ".join(self._sources()) or "unknown"

    def _sources(self) -> list[str]:
        return list(dict.fromkeys(str(r.record.data.source) for r in self.all_runs
                                  if r.record.data.source))

    @property
    def data_label(self) -> str:
        """The data copy in short, e.g. "CIFAR-10 (JPEG q75 copy)"; never just "CIFAR-10"
        (every distinct one, ``" | "``, when the runs differ)."""
        return " | ".join(dict.fromkeys(data_label(s) for s in self._sources())) or "unknown"

    @property
    def data_checksum(self) -> str:
        r = self.first()
        checksum = r.record.data.checksum if r is not None else None
        return str(checksum) if checksum else ""

    @property
    def model(self) -> str:
        """The network the runs trained; every distinct one (``" | "``) when they differ
        (a column over ``model.kwargs.width``), never the first run's for all."""
        models = []
        for r in self.all_runs:
            m = r.recipe.get("model") or {}
            kw = m.get("kwargs") or {}
            args = ", ".join(f"{k}={v}" for k, v in kw.items())
            models.append(f"{m.get('name', '?')}({args})" if args else str(m.get("name", "?")))
        models = list(dict.fromkeys(models))
        return " | ".join(models) if models else "unknown"

    # -- the dense models the runs descend from ------------------------------------------
    def _dense_by_seed(self, row: str | None = None, column: str | None = None
                       ) -> dict[int, dict[str, float]]:
        """``{seed: {dense model: accuracy}}`` of the runs of a row / column / cell."""
        out: dict[int, dict[str, float]] = {}
        for c in self.cells_of(row, column):
            acc = getattr(c.run, "dense_acc", None)
            if c.run is None or acc is None:
                continue
            key = getattr(c.run, "dense_key", None) or f"cell:{c.row}/{c.column}"
            out.setdefault(c.run_seed, {})[key] = acc
        return out

    def dense_for(self, row: str | None = None, column: str | None = None) -> float | None:
        """The dense accuracy the runs of a row / column / cell (all: the study) descend
        from, the mean over seeds, when for every seed they descend from one dense model;
        ``None`` when they descend from several (or none is known)."""
        by_seed = self._dense_by_seed(row, column)
        if not by_seed or any(len(v) != 1 for v in by_seed.values()):
            return None
        return statistics.fmean(next(iter(v.values())) for v in by_seed.values())

    @property
    def dense_acc(self) -> float | None:
        """The dense accuracy every run descends from (mean over seeds); ``None`` when the
        cells descend from several dense models (see :meth:`dense_text`)."""
        return self.dense_for()

    def dense_text(self) -> str | None:
        """``"dense model 93.50%"`` when every cell descends from one dense model (per
        seed), else ``"dense: per cell, 98.83% (w16), 63.67% (w4)"``; ``None`` when
        no dense accuracy is known."""
        one = self.dense_acc
        if one is not None:
            return f"dense model {one:.2f}%"
        groups: dict[str, list[tuple[str, str]]] = {}
        for row in self.rows:
            for col in self.columns:
                if not self._dense_by_seed(row, col):
                    continue
                v = self.dense_for(row, col)
                groups.setdefault("several" if v is None else f"{v:.2f}%", []).append(
                    (row, col))
        if not groups:
            return None
        return "dense: per cell, " + "; ".join(
            f"{text} ({self._where(cells)})" for text, cells in groups.items())

    def _where(self, cells: list[tuple[str, str]], most: int = 6) -> str:
        """Cells named shortly: whole columns, then whole rows, then ``row / column``."""
        have = {(r, c) for r in self.rows for c in self.columns if self._dense_by_seed(r, c)}
        left = set(cells)
        parts = []
        for col in self.columns:
            whole = {(r, c) for r, c in have if c == col}
            if len(self.columns) > 1 and whole and whole <= left:
                parts.append(f"column {col}")
                left -= whole
        for row in self.rows:
            whole = {(r, c) for r, c in have if r == row}
            if len(self.rows) > 1 and whole and whole <= left:
                parts.append(f"row {row}")
                left -= whole
        parts += [f"{r} / {c}" for r, c in cells if (r, c) in left]
        if len(parts) > most:
            parts = [*parts[:most], f"{len(parts) - most} more"]
        return ", ".join(parts) if parts else "every cell"


def data_label(source: str) -> str:
    """``"CIFAR-10 (JPEG q75 copy, ImageFolder at /x)"`` -> ``"CIFAR-10 (JPEG q75 copy)"``."""
    m = re.match(r"^\s*([^()]+?)\s*\((.*)\)\s*$", source)
    if not m:
        return source.strip()
    name, inner = m.group(1), m.group(2)
    kind = inner.split(",")[0].split(":")[0].strip()
    return f"{name} ({kind})" if kind else name


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return None if math.isnan(v) else float(v)


def _get(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def layers_spec(layers: Any) -> str:
    """A ``prune.layers`` value in full, one text per pruning: ``0.5``, ``fc1:0.5,fc2:0.5``
    (whitespace dropped), ``a:0.5,b:0.3`` for a mapping, ``0.5/0.3`` for a list."""
    if layers is None:
        return "-"
    if isinstance(layers, bool):
        return str(layers)
    if isinstance(layers, int | float):
        return f"{layers:g}"
    if isinstance(layers, dict):
        return ",".join(f"{k}:{layers_spec(v)}" for k, v in layers.items())
    if isinstance(layers, list | tuple):
        return "/".join(layers_spec(v) for v in layers)
    return re.sub(r"\s+", "", str(layers))


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1; None for a single value)."""
    if not values:
        raise ValueError("mean_std of no values")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def find_manifests(path: str | Path, study: str | None = None) -> list[Path]:
    """Manifests under a run store (``<dir>/studies/*.json``), or the manifest file given.

    ``study`` picks one: a study name (every preset of it) or ``<name>-<preset>``.
    """
    p = Path(path)
    if p.is_file():
        found = [p]
    elif p.is_dir():
        folder = p / "studies" if (p / "studies").is_dir() else p
        found = sorted(folder.glob("*.json"))
        if not found:
            raise ReportError(f"no study manifests in {str(p)!r}: expected {str(p)}/studies/"
                              "*.json (run `prunebench study NAME --out DIR` first)")
    else:
        raise ReportError(f"report source {str(p)!r} does not exist: give a run store "
                          "directory or a study manifest (.json)")
    if study is None:
        return found
    picked = []
    for f in found:
        m = _read_manifest(f)
        if study in (m.get("study"), f.stem, f"{m.get('study')}-{m.get('preset')}"):
            picked.append(f)
    if not picked:
        names = ", ".join(sorted({f.stem for f in found}))
        raise ReportError(f"no study {study!r} in {str(p)!r}; studies: {names}")
    return picked


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"study manifest {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(m, dict) or "cells" not in m or "rows" not in m:
        raise ReportError(f"{str(path)!r} is not a study manifest (needs 'rows' and 'cells')")
    return m


def load_study_data(manifest: str | Path, store: str | Path | None = None) -> StudyData:
    """A study's manifest and runs. ``store`` defaults to the folder above ``studies/``."""
    path = Path(manifest)
    m = _read_manifest(path)
    root = Path(store) if store is not None else (
        path.parent.parent if path.parent.name == "studies" else path.parent)
    rs = RunStore(root)
    picks, _ = calibrated_picks(root)  # a damaged record is an error, never "no picks"
    loaded: dict[str, RunData | None] = {}
    cells = []
    for c in m["cells"]:
        rid = str(c.get("run"))
        if rid not in loaded:
            try:
                raw = rs.load(rid)
                rec = raw["record"]
                loaded[rid] = None if rec is None else RunData(
                    raw["id"], raw["recipe"] or {}, rec, raw["metrics"] or [],
                    calibration=picks.get(raw["id"]))
            except (StoreError, OSError, ValueError):
                loaded[rid] = None
        cells.append(CellData(str(c.get("row")), str(c.get("column")), c.get("value"),
                              int(c.get("seed", 0)), rid, loaded[rid]))
    # a cell's reference is the study's dense run its weights descend from (the same
    # origin: the whole dense run, whatever epoch a PxFy cell was cut at), never the dense
    # run of another model, width or pretraining
    refs: dict[str, tuple[str, float]] = {}
    for rid in (m.get("dense_runs") or {}).values():
        try:
            rec = rs.result(str(rid))
        except StoreError:
            rec = None
        if (rec is not None and rec.finished and _num(rec.test_acc) is not None
                and rec.origin):
            refs[rec.origin] = (str(rid), float(rec.test_acc))  # type: ignore[arg-type]
    for c in cells:
        if c.run is not None and c.run.record.origin in refs:
            c.run.reference_run, c.run.reference_dense = refs[c.run.record.origin]
    return StudyData(path, m, cells, root)


def has_manifests(path: str | Path) -> bool:
    """Whether a run store (or folder) holds study manifests."""
    p = Path(path)
    if not p.is_dir():
        return False
    folder = p / "studies" if (p / "studies").is_dir() else p
    return any(folder.glob("*.json"))


def load_runs_data(store: str | Path, where: list[str] | None = None) -> StudyData:
    """Any set of runs as one table: every finished run of a store (``where``: the
    ``--where KEY=VALUE`` filters of ``compare``), rows = configurations (a study's variant
    name when the run is in a study manifest, else a short method summary with its LR),
    columns = rates, cells = seeds. Setups are computed per column like a study's.
    Calibration tuning runs are left out (the calibrated picks stay)."""
    from prunebench.compare.comparison import matches, parse_where
    from prunebench.report.runinfo import (
        layers_text,
        lr_text,
        method_summary,
        study_index,
        variant_of,
    )

    root = Path(store)
    if not root.is_dir():
        raise ReportError(f"report source {str(root)!r} does not exist: give a run store "
                          "directory or a study manifest (.json)")
    filters = parse_where(where)
    # a damaged record is an error: read as "no calibrations" it let rejected LRs be ranked
    picks, members = calibrated_picks(root)
    index = study_index(root)
    runs: list[RunData] = []
    for r in RunStore(root).list_runs():
        rec = r.get("record")
        if rec is None or not rec.finished or not matches(r["recipe"] or {}, filters):
            continue
        if r["id"] in members and r["id"] not in picks:
            continue
        runs.append(RunData(r["id"], r["recipe"] or {}, rec, [],
                            calibration=picks.get(r["id"])))
    if not runs:
        what = " matching the filters" if filters else ""
        raise ReportError(f"no finished runs{what} in {str(root)!r}: nothing to report "
                          "(run `prunebench run RECIPE --out DIR` first)")
    models = {(str((r.recipe.get("model") or {}).get("name")),
               str((r.recipe.get("data") or {}).get("name"))) for r in runs}

    def row_label(r: RunData) -> str:
        variant = variant_of(index.get(r.id))
        if variant is not None:
            base = variant
        elif not r.recipe.get("prune"):
            base = "dense"
        else:
            base = f"{method_summary(r.recipe)}, LR {lr_text(r.recipe, r.record)}"
        if len(models) > 1:
            m = r.recipe.get("model") or {}
            base = f"{m.get('name')}/{(r.recipe.get('data') or {}).get('name')}: {base}"
        return base

    def col_key(r: RunData) -> tuple[str, str]:
        """(the column: the pruning as declared, in full; its short label)."""
        prune = r.recipe.get("prune")
        if not prune:
            return "dense", "dense"
        layers = prune.get("layers")
        spec = layers_spec(layers)
        for key, unit in (("target_speedup", "x"), ("target_param_sparsity", "%")):
            if prune.get(key):
                short = f"target {prune[key]:g}{unit}"
                return (short + ("" if layers is None else f" (layers {spec})"), short)
        return f"PR {spec}", "PR " + layers_text(layers)

    keys = {r.id: col_key(r) for r in runs}
    # a short label ("PR 0.5") names one pruning only: where two prunings share it
    # (``0.5`` and ``fc1:0.5``), those columns show the pruning in full
    shorts: dict[str, set[str]] = {}
    for full, short in keys.values():
        shorts.setdefault(short, set()).add(full)
    col_label = {full: short if len(shorts[short]) == 1 else full
                 for full, short in keys.values()}

    def row_config(r: RunData) -> str:
        """The run's configuration without its column (the pruning rate): what tells two
        configurations of one row label apart."""
        if r.fingerprint is None:
            return r.id
        rec = copy.deepcopy(r.recipe)
        if isinstance(rec.get("prune"), dict):
            for k in ("layers", "target_speedup", "target_param_sparsity"):
                rec["prune"][k] = None
        return config_key(rec, r.record, calibrated=r.calibration is not None)

    labels = {r.id: (row_label(r), col_label[keys[r.id][0]]) for r in runs}
    configs: dict[tuple[str, str], set[str]] = {}
    row_cfg = {r.id: row_config(r) for r in runs}
    for r in runs:
        configs.setdefault(labels[r.id], set()).add(row_cfg[r.id])
    clash = {row for (row, _), cfgs in configs.items() if len(cfgs) > 1}
    cells = []
    for r in runs:
        row, col = labels[r.id]
        if row in clash:
            row = f"{row} [{row_cfg[r.id][:6]}]"
        cells.append(CellData(row, col, (r.recipe.get("prune") or {}).get("layers"),
                              r.seed, r.id, r))
    rows = list(dict.fromkeys(c.row for c in cells))
    cols = sorted(dict.fromkeys(c.column for c in cells),
                  key=lambda c: (c != "dense", c))
    spelled = [f"{label} = prune.layers {full.removeprefix('PR ')}"
               for full, label in sorted(col_label.items()) if label != full]
    manifest = {
        "study": "runs", "preset": "",
        "title": f"Runs in {root}",
        "description": ("Every finished run of the store (filters: "
                        + (", ".join(where or []) or "none") + "), one row per "
                        "configuration (the study variant name when a study holds it, else "
                        "method and retraining LR), one column per pruning (prune.layers "
                        "as declared, or the target rate); the setups are "
                        "computed from the runs of each column; one value per row, column "
                        "and seed (repeated runs of one seed are counted once)."
                        + (f" Columns: {'; '.join(spelled)}." if spelled else "")),
        "rows": rows, "columns": {"key": "prune.layers", "labels": cols, "values": [
            next((f for f, lab in col_label.items() if lab == c), c) for c in cols]},
        "seeds": len({c.seed for c in cells}), "figures": [],
        "command": "prunebench report " + str(root) + "".join(
            f" --where {w}" for w in where or []),
        "complete": True,
        "cells": [{"row": c.row, "column": c.column, "seed": c.seed, "run": c.run_id}
                  for c in cells],
    }
    return StudyData(root / "runs.json", manifest, cells, root)
