"""The run store: run folders, stage folders, the SQLite index, locks.

Layout under ``<out>/``::

    <id>/recipe.yaml          the effective recipe (after overrides)
    <id>/metrics.jsonl        one line per epoch (pretrain, prune, retrain phases)
    <id>/result.json          final result (written last: its presence means done)
    <id>/checkpoints/         latest.pt (resume), pruned.pt, final.pt (+ structure.json)
    stages/<kind>-<key>/      shared stage artefacts (a dense model trained once per key)
    index.sqlite              a queryable index of runs; rebuilt from the folders if lost

Every file is written atomically (:mod:`prunebench.io`). The index is a cache of what the
folders hold: :meth:`RunStore.reindex` rebuilds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from prunebench.errors import StoreError
from prunebench.io import read_jsonl
from prunebench.record import RunRecord, RunResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    name TEXT,
    model TEXT,
    dataset TEXT,
    method TEXT,
    ratio TEXT,
    test_acc REAL,
    recipe TEXT NOT NULL,
    result TEXT
)
"""

#: columns added after the first schema; added to older index files on open
_EXTRA_COLUMNS = {"ta": "REAL", "jsv_pruned": "REAL", "param_sparsity": "REAL",
                  "speedup": "REAL"}


class RunStore:
    def __init__(self, root: str | os.PathLike[str] = "runs") -> None:
        self.root = Path(root)

    # -- paths --------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def stage_dir(self, kind: str, key: str) -> Path:
        return self.root / "stages" / f"{kind}-{key}"

    @property
    def index_path(self) -> Path:
        return self.root / "index.sqlite"

    # -- index --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.index_path, timeout=60)
        try:
            con.execute(_SCHEMA)
            have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
            for col, kind in _EXTRA_COLUMNS.items():
                if col not in have:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
            yield con
            con.commit()
        finally:
            con.close()

    def record(
        self, run_id: str, status: str, recipe: dict[str, Any], record: RunRecord | None = None
    ) -> None:
        """Insert or update a run's row (status: running | done | failed)."""
        now = time.time()
        prune = recipe.get("prune") or {}
        result = record.to_json() if record is not None else None
        rate = record.pruned if record is not None else None
        row = {
            "id": run_id,
            "status": status,
            "created": now,
            "updated": now,
            "name": recipe.get("name"),
            "model": (recipe.get("model") or {}).get("name"),
            "dataset": (recipe.get("data") or {}).get("name"),
            "method": prune.get("method") if prune else "dense",
            "ratio": str(prune.get("layers")) if prune else None,
            "test_acc": record.test_acc if record is not None else None,
            "ta": record.ta.test if record is not None and record.ta is not None else None,
            "jsv_pruned": _jsv_pruned(record),
            "param_sparsity": rate.rate_sparsity if rate is not None else None,
            "speedup": rate.rate_speedup if rate is not None else None,
            "recipe": json.dumps(recipe, sort_keys=True),
            "result": json.dumps(result, sort_keys=True) if result is not None else None,
        }
        with self._db() as con:
            cols = ", ".join(row)
            params = ", ".join(f":{k}" for k in row)
            updates = ", ".join(f"{k}=excluded.{k}" for k in row if k not in ("id", "created"))
            con.execute(
                f"INSERT INTO runs ({cols}) VALUES ({params}) "
                f"ON CONFLICT(id) DO UPDATE SET {updates}",
                row,
            )

    def list_runs(self) -> list[dict[str, Any]]:
        if not self.index_path.exists():
            if not self.root.exists():
                return []
            self.reindex()
        with self._db() as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM runs ORDER BY created, id").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["recipe"] = json.loads(d["recipe"])
            d["record"] = _parse(json.loads(d["result"]) if d["result"] else None, d["recipe"])
            d["result"] = d["record"].to_json() if d["record"] is not None else None
            out.append(d)
        return out

    def reindex(self) -> int:
        """Rebuild the index from the run folders (the folders are the truth)."""
        n = 0
        for d in sorted(p for p in self.root.iterdir() if (p / "recipe.yaml").is_file()):
            recipe = yaml.safe_load((d / "recipe.yaml").read_text()) or {}
            record = self._read_record(d, recipe)
            status = record.status if record is not None else "incomplete"
            self.record(d.name, status, recipe, record)
            n += 1
        return n

    # -- runs ---------------------------------------------------------------------------
    @staticmethod
    def _read_result(d: Path) -> dict[str, Any] | None:
        p = d / "result.json"
        return json.loads(p.read_text()) if p.is_file() else None

    @staticmethod
    def _read_recipe(d: Path) -> dict[str, Any]:
        p = d / "recipe.yaml"
        return (yaml.safe_load(p.read_text()) or {}) if p.is_file() else {}

    def _read_record(self, d: Path, recipe: dict[str, Any] | None = None) -> RunRecord | None:
        result = self._read_result(d)
        if result is None:
            return None
        return RunRecord.parse(result, self._read_recipe(d) if recipe is None else recipe)

    def result(self, run_id: str) -> RunRecord | None:
        """The run's parsed record (``None`` while it has none)."""
        return self._read_record(self.run_dir(run_id))

    def run_result(self, run_id: str) -> RunResult:
        """A stored run as a :class:`prunebench.record.RunResult`."""
        d = self.run_dir(run_id)
        recipe = self._read_recipe(d)
        record = self._read_record(d, recipe)
        return RunResult(run_id, d, record.to_json() if record is not None else {}, recipe)

    def resolve(self, prefix: str) -> str:
        """A full run id from an id or a unique prefix of one."""
        if (self.run_dir(prefix) / "recipe.yaml").is_file():
            return prefix
        matches = (
            sorted(
                p.name
                for p in self.root.iterdir()
                if p.name.startswith(prefix) and (p / "recipe.yaml").is_file()
            )
            if self.root.is_dir() and prefix
            else []
        )
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no run {prefix!r} in {str(self.root)!r}; list them: prunebench runs")
        raise StoreError(f"run id prefix {prefix!r} is ambiguous: {', '.join(matches[:5])}")

    def load(self, run_id: str) -> dict[str, Any]:
        run_id = self.resolve(run_id)
        d = self.run_dir(run_id)
        recipe = self._read_recipe(d)
        record = self._read_record(d, recipe)
        return {
            "id": run_id,
            "recipe": recipe,
            "result": record.to_json() if record is not None else None,
            "record": record,
            "metrics": read_jsonl(d / "metrics.jsonl"),
        }


def _parse(result: dict[str, Any] | None, recipe: dict[str, Any]) -> RunRecord | None:
    """The index row's record; an unreadable one is no record (the run is not finished
    as far as any comparison is concerned), never a guess."""
    if not result:
        return None
    try:
        return RunRecord.parse(result, recipe)
    except StoreError:
        return None


def _jsv_pruned(record: RunRecord | None) -> float | None:
    jsv = record.jsv if record is not None else None
    pruned = (jsv or {}).get("pruned")
    return pruned.get("mean") if isinstance(pruned, dict) else None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (a lock file), so two workers never build one stage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
