"""Loading a study for reporting: its manifest, every cell's run (recipe, result, metrics).

Everything here is plain data (dataclasses over the JSON the runner and pipeline wrote);
tables, figures and the HTML page only read it. A run that is missing (an interrupted
study) leaves its cell empty rather than failing the report.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError, StoreError
from prunebench.store import RunStore


class ReportError(PrunebenchError):
    """A report cannot be made (no manifest, unreadable manifest, unknown study or format)."""


@dataclass
class RunData:
    """One finished run: its effective recipe, result.json and per-epoch metrics."""

    id: str
    recipe: dict[str, Any]
    result: dict[str, Any]
    metrics: list[dict[str, Any]]
    #: the study's full-length dense run of this seed (manifest ``dense_runs``), if any
    reference_dense: float | None = None

    @property
    def test_acc(self) -> float | None:
        """Final-epoch top-1 test accuracy (%), never the best epoch."""
        return _num(self.result.get("test_acc"))

    @property
    def dense_acc(self) -> float | None:
        """The dense model to compare with: the study's full-length dense run of this seed
        when the manifest names one (PxFy runs start from a dense run cut at epoch x),
        else the run's own base model."""
        if self.reference_dense is not None:
            return self.reference_dense
        return _num((self.result.get("dense") or {}).get("test_acc"))

    @property
    def pruned_acc(self) -> float | None:
        """Accuracy right after pruning, before retraining."""
        return _num((self.result.get("pruned") or {}).get("test_acc"))

    @property
    def ta(self) -> float | None:
        """Trainability accuracy (paper Eq. 1) on the test set, when measured."""
        return _num((self.result.get("ta") or {}).get("test"))

    @property
    def ta_epochs(self) -> int | None:
        return (self.result.get("ta") or {}).get("epochs")

    @property
    def param_sparsity(self) -> float | None:
        return _num((self.result.get("pruned") or {}).get("param_sparsity"))

    @property
    def speedup(self) -> float | None:
        return _num((self.result.get("pruned") or {}).get("speedup"))

    @property
    def retrain_lr(self) -> str | None:
        """The effective retraining LR schedule string (standard form)."""
        eff = (self.result.get("retrain") or {}).get("lr")
        return str(eff) if eff is not None else _get(self.recipe, "retrain.lr")

    def curve(self, key: str, phase: str = "retrain") -> list[tuple[int, float]]:
        """(epoch, value) of one metric over one phase's epochs (values that are numbers)."""
        out = []
        for m in self.metrics:
            v = _num(m.get(key))
            if m.get("phase") == phase and v is not None and m.get("epoch") is not None:
                out.append((int(m["epoch"]), v))
        return out


@dataclass
class CellData:
    row: str
    column: str
    value: Any
    seed: int
    run_id: str
    run: RunData | None


@dataclass
class StudyData:
    """A study's manifest with its runs loaded."""

    path: Path
    manifest: dict[str, Any]
    cells: list[CellData] = field(default_factory=list)

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
    def setup(self) -> str:
        return str(self.manifest.get("setup") or "unstated")

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
    def runs(self, row: str | None = None, column: str | None = None) -> list[RunData]:
        """The loaded runs of one row / column / cell (every seed), in manifest order."""
        return [c.run for c in self.cells if c.run is not None
                and (row is None or c.row == row) and (column is None or c.column == column)]

    @property
    def all_runs(self) -> list[RunData]:
        return self.runs()

    @property
    def seeds(self) -> list[int]:
        return sorted({c.seed for c in self.cells})

    @property
    def missing(self) -> int:
        """How many cells have no finished run."""
        return sum(c.run is None for c in self.cells)

    def first(self) -> RunData | None:
        runs = self.all_runs
        return runs[0] if runs else None

    @property
    def data_source(self) -> str:
        r = self.first()
        return str(((r.result.get("data") or {}).get("source")) if r else "") or "unknown"

    @property
    def data_label(self) -> str:
        """The data copy in short, e.g. "CIFAR-10 (JPEG q75 copy)"; never just "CIFAR-10"."""
        return data_label(self.data_source)

    @property
    def data_checksum(self) -> str:
        r = self.first()
        return str((r.result.get("data") or {}).get("checksum") or "") if r else ""

    @property
    def model(self) -> str:
        r = self.first()
        if r is None:
            return "unknown"
        m = r.recipe.get("model") or {}
        kw = m.get("kwargs") or {}
        args = ", ".join(f"{k}={v}" for k, v in kw.items())
        return f"{m.get('name', '?')}({args})" if args else str(m.get("name", "?"))

    @property
    def dense_acc(self) -> float | None:
        """Mean dense (pretrained) accuracy over the distinct base models."""
        accs = {}
        for r in self.all_runs:
            key = (r.result.get("stages") or {}).get("pretrain", r.id)
            if r.dense_acc is not None:
                accs[key] = r.dense_acc
        return statistics.fmean(accs.values()) if accs else None


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
    loaded: dict[str, RunData | None] = {}
    cells = []
    for c in m["cells"]:
        rid = str(c.get("run"))
        if rid not in loaded:
            try:
                raw = rs.load(rid)
                loaded[rid] = None if raw["result"] is None else RunData(
                    raw["id"], raw["recipe"] or {}, raw["result"], raw["metrics"] or [])
            except (StoreError, OSError, ValueError):
                loaded[rid] = None
        cells.append(CellData(str(c.get("row")), str(c.get("column")), c.get("value"),
                              int(c.get("seed", 0)), rid, loaded[rid]))
    refs: dict[int, float] = {}
    for seed, rid in (m.get("dense_runs") or {}).items():
        res = rs.result(str(rid)) or {}
        if _num(res.get("test_acc")) is not None:
            refs[int(seed)] = float(res["test_acc"])
    for c in cells:
        if c.run is not None and c.seed in refs:
            c.run.reference_dense = refs[c.seed]
    return StudyData(path, m, cells)
