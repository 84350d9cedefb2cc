"""The run store: run folders, stage folders, the SQLite index, locks.

Layout under ``<out>/``::

    <id>/recipe.yaml          the effective recipe (after overrides)
    <id>/metrics.jsonl        one line per epoch (pretrain, prune, retrain phases)
    <id>/result.json          final result (written last: its presence means done)
    <id>/checkpoints/         latest.pt (resume), pruned.pt, final.pt (+ structure.json)
    stages/<kind>-<key>/      shared stage artefacts (a dense model trained once per key)
    index.sqlite              a queryable index of runs; rebuilt from the folders if lost
                              (on a network filesystem, or per ``PRUNEBENCH_INDEX``, it
                              lives on local disk instead: :func:`index_location`)
    **/.lock.lease            a held lock (:func:`locked`: lease files, no ``flock``)

Every file is written atomically (:mod:`prunebench.io`). The index is a cache of what the
folders hold: :meth:`RunStore.reindex` rebuilds it, :meth:`RunStore.list_runs` reconciles
it with the folders on every read (a row whose ``result.json`` changed since it was recorded
is re-recorded from the folder, folders missing from the index are added), and an index
file that is not a readable SQLite database is moved aside (``index.sqlite.bad-<time>``)
and rebuilt. Study workers never write the index (``RunStore(out, index_writes=False)``,
or ``PRUNEBENCH_INDEX_WRITES=0``): only the driver does, from the folders they wrote.

Containment: no user-supplied string becomes a path outside the store. Run ids (and
prefixes) must be lowercase hex (:data:`ID_LENGTH` digits, see :func:`check_run_id`);
study and preset names must be slugs (:func:`check_name`, the rule of :func:`slugify`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from prunebench.errors import StoreError
from prunebench.io import read_jsonl, unwritable_reason
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

#: columns added after the first schema; added to older index files on open.
#: ``result_mtime``/``result_size`` and ``recipe_mtime``/``recipe_size``: the
#: ``result.json`` and ``recipe.yaml`` the row was recorded from (the reconciliation
#: compares them with the folder's files)
_EXTRA_COLUMNS = {"ta": "REAL", "jsv_pruned": "REAL", "param_sparsity": "REAL",
                  "speedup": "REAL", "result_mtime": "REAL", "result_size": "INTEGER",
                  "recipe_mtime": "REAL", "recipe_size": "INTEGER"}
_BASE_COLUMNS = {"id", "status", "created", "updated", "recipe", "result"}

log = logging.getLogger("prunebench.store")

#: run ids are the planner's content keys: this many lowercase hex digits
#: (:func:`prunebench.recipe.recipe_hash`'s default length)
ID_LENGTH = 12
_ID_RE = re.compile(r"[0-9a-f]+")
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: longest study / preset name (a file name stays far below any file-system limit)
NAME_MAX = 64


def check_run_id(run_id: object, *, prefix: bool = False) -> str:
    """``run_id`` if it is a run id (``ID_LENGTH`` lowercase hex digits; with ``prefix``,
    1 to ``ID_LENGTH`` of them), else a one-line :class:`StoreError`. An id is never a
    path: ``..``, ``/``, absolute paths, NUL and non-ASCII text are all refused here."""
    ok = (isinstance(run_id, str) and _ID_RE.fullmatch(run_id) is not None
          and (1 <= len(run_id) <= ID_LENGTH if prefix else len(run_id) == ID_LENGTH))
    if not ok:
        what = "a run id or a unique prefix of one" if prefix else "a run id"
        raise StoreError(f"no run {_show(run_id)}: not {what} (run ids are {ID_LENGTH} "
                         "lowercase hex digits; list them: prunebench runs)")
    return run_id  # type: ignore[return-value]


def slugify(text: str) -> str:
    """The slug rule for names that become file names (study and preset names):

    Unicode is NFKC-normalised and reduced to ASCII (accents dropped), every run of
    characters other than ASCII letters, digits, ``.``, ``_`` and ``-`` becomes one ``-``,
    leading and trailing ``.``, ``_`` and ``-`` are stripped, and the result is cut to
    :data:`NAME_MAX` characters. ``"../../x"`` -> ``"x"``, ``"LR 1e-3 (cpu)"`` ->
    ``"LR-1e-3-cpu"``, ``"/etc/passwd"`` -> ``"etc-passwd"``; it may be empty.
    """
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", str(text)))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    text = re.sub(r"\.{2,}", ".", text)  # no '..' anywhere
    return text.strip("._-")[:NAME_MAX].rstrip("._-")


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is its own slug (:func:`slugify`), else a one-line
    :class:`StoreError` suggesting the slug. Names are file names inside the store."""
    if isinstance(name, str) and _SLUG_RE.fullmatch(name) and slugify(name) == name:
        return name
    slug = slugify(name) if isinstance(name, str) else ""
    hint = f" (e.g. {slug!r})" if slug else ""
    raise StoreError(f"{what} {_show(name)} is not allowed: use ASCII letters, digits, '.', "
                     f"'_' and '-' (no '..', at most {NAME_MAX} characters){hint}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _CorruptIndex(Exception):
    """The index file is not a usable SQLite database of runs."""


class IndexUnavailable(StoreError):
    """The index cannot be opened or written (a read-only store, no permission, a folder
    where the file should be, a lock held too long). Writers get it as a one-line error;
    readers (:meth:`RunStore.list_runs`) read the run folders instead."""


class RunStore:
    """The run store at ``root``.

    ``index_writes=False`` (the default in study worker processes, where the executor sets
    ``PRUNEBENCH_INDEX_WRITES=0``): this object never opens the shared index; it writes run
    folders only, and its index is a private in-memory one built from the folders. The
    driver records the workers' runs (:meth:`record_folders`) after each finished cell.
    """

    def __init__(self, root: str | os.PathLike[str] = "runs", *,
                 index_writes: bool | None = None) -> None:
        self.root = Path(root)
        _check_root(self.root)
        if index_writes is None:
            index_writes = os.environ.get("PRUNEBENCH_INDEX_WRITES", "1").strip().lower() \
                not in ("0", "false", "no", "off")
        self.index_writes = index_writes
        #: set when a reader found the index unusable: the runs are listed from a private
        #: in-memory index built from the folders (nothing is written)
        self._read_folders = False
        self._mem: sqlite3.Connection | None = None
        self._index_path: Path | None = None

    @property
    def _in_memory(self) -> bool:
        return not self.index_writes or self._read_folders

    # -- paths --------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def stage_dir(self, kind: str, key: str) -> Path:
        if not re.fullmatch(r"[a-z_]+", kind) or not _ID_RE.fullmatch(str(key)):
            raise StoreError(f"bad stage {kind!r}-{key!r}: stage keys are lowercase hex")
        return self.root / "stages" / f"{kind}-{key}"

    def study_manifest_path(self, study: str, preset: str) -> Path:
        """``<out>/studies/<study>-<preset>.json``; both names must be slugs
        (:func:`check_name`), so the manifest never lands outside ``<out>/studies/``."""
        name = f"{check_name(study, 'study name')}-{check_name(preset, 'preset name')}"
        return self.root / "studies" / f"{name}.json"

    @property
    def index_path(self) -> Path:
        """Where the index lives (:func:`index_location`): ``<out>/index.sqlite``, or a
        per-store file on local disk when the store is on a network filesystem or
        ``PRUNEBENCH_INDEX`` says so."""
        if self._index_path is None:
            self._index_path = index_location(self.root)
        return self._index_path

    def _index_lock(self) -> Path:
        return self.index_path.with_name(f".{self.index_path.stem}.lock")

    def record_folders(self, run_ids: Iterable[str]) -> None:
        """Record runs in the index from their folders (the driver does this for the runs
        its workers wrote); ids without a folder are skipped."""
        for rid in dict.fromkeys(run_ids):
            d = self.run_dir(rid)
            if (d / "recipe.yaml").is_file():
                self._record_folder(d)

    # -- index --------------------------------------------------------------------------
    def _mkroot(self) -> None:
        _check_root(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the run store {str(self.root)!r}: "
                             f"{exc.strerror or exc}") from None

    def _open(self) -> sqlite3.Connection:
        """A connection with the schema checked; :class:`_CorruptIndex` when the file is
        not a usable index (garbage, truncated, another program's database)."""
        if self._in_memory:
            if self._mem is None:
                self._mem = sqlite3.connect(":memory:")
                self._mem.execute(_SCHEMA)
                for col, kind in _EXTRA_COLUMNS.items():
                    self._mem.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
            return self._mem
        where = str(self.index_path)
        try:
            if self.index_path.is_dir():
                raise IndexUnavailable(f"cannot open the index {where!r}: it is a directory, "
                                       "not an index file (move it away: the index is rebuilt "
                                       "from the run folders)")
            self.index_path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.index_path, timeout=60)
        except sqlite3.OperationalError as exc:
            raise IndexUnavailable(f"cannot open the index {where!r}: {exc}") from None
        except OSError as exc:
            raise IndexUnavailable(f"cannot open the index {where!r}: "
                                   f"{exc.strerror or exc}") from None
        try:
            con.execute(_SCHEMA)
            have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
            if not have >= _BASE_COLUMNS:
                raise _CorruptIndex("the runs table lacks columns")
            for col, kind in _EXTRA_COLUMNS.items():
                if col not in have:
                    con.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
        except BaseException as exc:
            con.close()
            if _is_corrupt(exc):
                raise _CorruptIndex(str(exc)) from None
            if isinstance(exc, sqlite3.OperationalError):  # read-only, locked too long
                raise IndexUnavailable(f"cannot use the index {where!r}: {exc}") from None
            raise
        return con

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self._mkroot()
        try:
            con = self._open()
        except _CorruptIndex as exc:
            self._recover_index(str(exc))
            con = self._open()
        try:
            yield con
            con.commit()
        finally:
            if con is not self._mem:
                con.close()

    def _recover_index(self, reason: str) -> None:
        """Move an unusable index aside (``index.sqlite.bad-<timestamp>``) and rebuild it
        from the run folders. Under a lock, so concurrent readers rebuild it once. A store
        where that cannot be done (read-only) is :class:`IndexUnavailable`."""
        try:
            moved = self._move_index_aside(reason)
        except OSError as exc:
            raise IndexUnavailable(f"cannot replace the unreadable index "
                                   f"{str(self.index_path)!r} ({reason}): "
                                   f"{exc.strerror or exc}") from None
        if moved:
            self.reindex()

    def _move_index_aside(self, reason: str) -> bool:
        """Whether the index was moved aside (False: another process rebuilt it)."""
        with locked(self._index_lock()):
            try:  # another process may have rebuilt it meanwhile
                self._open().close()
                return False
            except _CorruptIndex:
                pass
            stamp = time.strftime("%Y%m%d-%H%M%S")
            bad = self.index_path.with_name(f"{self.index_path.name}.bad-{stamp}")
            n = 1
            while bad.exists():
                n += 1
                bad = self.index_path.with_name(f"{self.index_path.name}.bad-{stamp}-{n}")
            os.replace(self.index_path, bad)
            for extra in ("-journal", "-wal", "-shm"):
                side = self.index_path.with_name(self.index_path.name + extra)
                with contextlib.suppress(OSError):
                    os.replace(side, bad.with_name(bad.name + extra))
            log.warning("warning: the run index %s is not readable (%s): moved aside to %s "
                        "and rebuilt from the run folders", self.index_path, reason, bad.name)
        return True

    def _query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        for attempt in (0, 1):
            try:
                with self._db() as con:
                    con.row_factory = sqlite3.Row
                    return con.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    if isinstance(exc, sqlite3.OperationalError):  # read-only, locked
                        raise IndexUnavailable(f"cannot update the index "
                                               f"{str(self.index_path)!r}: {exc}") from None
                    raise
                if attempt:
                    raise
                self._recover_index(str(exc))
        raise AssertionError("unreachable")

    def open_index(self) -> None:
        """Open the index for writing (created when missing, a garbage one rebuilt): a
        one-line :class:`IndexUnavailable` when it cannot be written. A run calls it before
        it writes anything into the store, so a bad index never leaves a half-made run."""
        if self._in_memory:
            return
        try:
            with self._db() as con:  # a write, rolled back: fails when read-only
                con.execute("BEGIN IMMEDIATE")
                version = con.execute("PRAGMA user_version").fetchone()[0]
                con.execute(f"PRAGMA user_version = {int(version)}")
                con.rollback()
        except sqlite3.DatabaseError as exc:
            raise IndexUnavailable(f"cannot write the index {str(self.index_path)!r}: "
                                   f"{exc}") from None

    def check_writable(self) -> None:
        """Before a run writes anything: a one-line :class:`StoreError` when runs cannot be
        stored here (``--out`` or a folder above it is a file, the store or the folder it
        would be made in is not writable, e.g. a read-only file system, or the index path is
        a directory). Writes nothing."""
        _check_root(self.root)
        folder = _nearest_dir(self.root)
        why = unwritable_reason(folder)
        if why is not None:
            where = ("" if folder == self.root
                     else f" (it would be made in {str(folder)!r})")
            raise StoreError(f"cannot write to the run store {str(self.root)!r}{where}: {why}; "
                             "give --out a writable folder")
        if self._in_memory:
            return
        index = self.index_path
        if index.is_dir():
            raise IndexUnavailable(f"cannot open the index {str(index)!r}: it is a directory, "
                                   "not an index file (move it away: the index is rebuilt "
                                   "from the run folders)")
        index_folder = _nearest_dir(index.parent)
        why = unwritable_reason(index_folder) if index_folder != folder else None
        if why is None and index.exists() and not os.access(index, os.R_OK | os.W_OK):
            why = "Permission denied"
        if why is not None:
            raise IndexUnavailable(f"cannot write the index {str(index)!r}: {why}")

    def record(
        self, run_id: str, status: str, recipe: dict[str, Any], record: RunRecord | None = None,
        *, created: float | None = None,
    ) -> None:
        """Insert or update a run's row (status: running | done | failed); ``created`` (a
        new row's creation time) defaults to now."""
        check_run_id(run_id)
        now = time.time()
        mtime, size = _stat(self.root / run_id / "result.json")
        recipe_mtime, recipe_size = _stat(self.root / run_id / "recipe.yaml")
        prune = recipe.get("prune") or {}
        result = record.to_json() if record is not None else None
        rate = record.pruned if record is not None else None
        row = {
            "id": run_id,
            "status": status,
            "created": now if created is None else created,
            "updated": now,
            "name": recipe.get("name"),
            "model": (recipe.get("model") or {}).get("name"),
            "dataset": (recipe.get("data") or {}).get("name"),
            # no recipe (an unreadable recipe.yaml): no label at all, never a default one
            "method": prune.get("method") if prune else ("dense" if recipe else None),
            "ratio": str(prune.get("layers")) if prune else None,
            "test_acc": record.test_acc if record is not None else None,
            "ta": record.ta.test if record is not None and record.ta is not None else None,
            "jsv_pruned": _jsv_pruned(record),
            "param_sparsity": rate.rate_sparsity if rate is not None else None,
            "speedup": rate.rate_speedup if rate is not None else None,
            "recipe": json.dumps(recipe, sort_keys=True),
            "result": json.dumps(result, sort_keys=True) if result is not None else None,
            "result_mtime": mtime,
            "result_size": size,
            "recipe_mtime": recipe_mtime,
            "recipe_size": recipe_size,
        }
        cols = ", ".join(row)
        params = ", ".join(f":{k}" for k in row)
        updates = ", ".join(f"{k}=excluded.{k}" for k in row if k not in ("id", "created"))
        self._query(f"INSERT INTO runs ({cols}) VALUES ({params}) "
                    f"ON CONFLICT(id) DO UPDATE SET {updates}", row)

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run of the store, from the index reconciled with the folders.

        A reader: a folder with neither runs nor an index is an empty store, and nothing is
        written into it (no index is created). An index that cannot be opened or updated (a
        read-only store, no permission) is no error: the runs are read from their folders
        (a private in-memory index, with a warning), and nothing is written."""
        if not self.root.is_dir():
            return []
        if not self._in_memory and not self.index_path.is_file() and not self._run_folders():
            return []
        if self._in_memory:
            return self._list_runs()
        try:
            return self._list_runs()
        except (IndexUnavailable, OSError) as exc:
            if isinstance(exc, OSError) and not _unwritable_error(exc):
                raise
            why = str(exc) if isinstance(exc, StoreError) else \
                f"cannot write the store: {exc.strerror or exc}"
            log.warning("warning: %s: the runs are read from their folders (the index is "
                        "not updated)", why)
            self._read_folders = True
            self._mem = None
            return self._list_runs()

    def _list_runs(self) -> list[dict[str, Any]]:
        if self._in_memory:
            if self._mem is None:
                self.reindex()
        elif not self.index_path.exists():
            self.reindex()
        rows = self._query("SELECT * FROM runs ORDER BY created, id")
        if self._reconcile(rows):
            rows = self._query("SELECT * FROM runs ORDER BY created, id")
        out = []
        for r in rows:
            d = dict(r)
            for col in ("result_mtime", "result_size", "recipe_mtime", "recipe_size"):
                d.pop(col, None)
            try:
                d["recipe"] = json.loads(d["recipe"])
                result = json.loads(d["result"]) if d["result"] else None
            except ValueError:
                d["recipe"], result = d["recipe"] if isinstance(d["recipe"], dict) else {}, None
            d["record"] = _parse(result, d["recipe"])
            d["result"] = d["record"].to_json() if d["record"] is not None else None
            out.append(d)
        return out

    def _run_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir()
                      if _ID_RE.fullmatch(p.name) and len(p.name) == ID_LENGTH
                      and (p / "recipe.yaml").is_file())

    def _reconcile(self, rows: list[sqlite3.Row]) -> int:
        """Re-record rows whose folder's ``result.json`` or ``recipe.yaml`` differs from
        what the row was recorded from (a kill between writing the result and updating the
        index leaves a finished run ``running``; a recipe damaged since), and add folders
        the index lacks. Cheap: two stats per row and one listing of the store. Returns how
        many rows changed."""
        known = {}
        for r in rows:
            known[r["id"]] = r
        changed = 0
        for d in self._run_folders():
            row = known.get(d.name)
            if row is not None:
                now = (*_stat(d / "result.json"), *_stat(d / "recipe.yaml"))
                then = (row["result_mtime"], row["result_size"], row["recipe_mtime"],
                        row["recipe_size"])
                # as recorded (a "done" row without a result file never is)
                if now == then and (now[0] is not None or row["status"] != "done"):
                    continue
            self._record_folder(d)
            changed += 1
        return changed

    def _record_folder(self, d: Path) -> None:
        recipe, _ = _recipe_of(d)
        record = self._read_record(d, recipe)
        status = record.status if record is not None else "incomplete"
        try:
            created = (d / "recipe.yaml").stat().st_mtime
        except OSError:
            created = None
        self.record(d.name, status, recipe or {}, record, created=created)

    def reindex(self) -> int:
        """Rebuild the index from the run folders (the folders are the truth)."""
        folders = self._run_folders()
        for d in folders:
            self._record_folder(d)
        return len(folders)

    # -- runs ---------------------------------------------------------------------------
    @staticmethod
    def _read_result(d: Path) -> dict[str, Any] | None:
        """The folder's ``result.json``; ``None`` (with a warning) when it is unreadable:
        a truncated result means an unfinished run, which re-running its recipe redoes."""
        p = d / "result.json"
        if not p.is_file():
            return None
        try:
            result = json.loads(p.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as exc:
            _warn_result(d, f"it is not valid JSON ({type(exc).__name__})")
            return None
        if not isinstance(result, dict):
            _warn_result(d, f"it holds a {type(result).__name__}, not an object")
            return None
        return result

    def _read_record(self, d: Path, recipe: dict[str, Any] | None = None) -> RunRecord | None:
        """The run's parsed record; ``None`` while it has no result, and (with a warning)
        when ``result.json`` or ``recipe.yaml`` is unreadable: a run whose recipe cannot be
        read is unfinished (it is never labelled with a default recipe). ``recipe``: the
        folder's recipe when the caller read it already."""
        result = self._read_result(d)
        if result is None:
            return None
        if recipe is None:
            recipe, why = _recipe_of(d)
            if recipe is None:
                _warn_recipe(d, why or "it is missing")
                return None
        try:
            return RunRecord.parse(result, recipe)
        except (StoreError, ValueError, TypeError, KeyError, AttributeError) as exc:
            _warn_result(d, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None

    def result(self, run_id: str) -> RunRecord | None:
        """The run's parsed record (``None`` while it has none, or an unreadable one)."""
        return self._read_record(self.run_dir(run_id))

    def run_result(self, run_id: str) -> RunResult:
        """A stored run as a :class:`prunebench.record.RunResult`."""
        d = self.run_dir(run_id)
        recipe, _ = _recipe_of(d)
        record = self._read_record(d, recipe)
        return RunResult(run_id, d, record.to_json() if record is not None else {},
                         recipe or {})

    def resolve(self, prefix: str) -> str:
        """A full run id from an id or a unique prefix of one (lowercase hex, never a
        path: anything else is a one-line :class:`StoreError`)."""
        check_run_id(prefix, prefix=True)
        if len(prefix) == ID_LENGTH and (self.run_dir(prefix) / "recipe.yaml").is_file():
            return prefix
        matches = [p.name for p in self._run_folders() if p.name.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise StoreError(f"no run {prefix!r} in {str(self.root)!r}; list them: prunebench runs")
        raise StoreError(f"run id prefix {prefix!r} is ambiguous: {', '.join(matches[:5])}")

    def load(self, run_id: str) -> dict[str, Any]:
        run_id = self.resolve(run_id)
        d = self.run_dir(run_id)
        recipe, _ = _recipe_of(d)
        record = self._read_record(d, recipe)
        return {
            "id": run_id,
            "recipe": recipe or {},
            "result": record.to_json() if record is not None else None,
            "record": record,
            "metrics": read_jsonl(d / "metrics.jsonl"),
        }


#: filesystem types where SQLite locking and ``flock`` are not to be trusted
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "ncpfs", "afs", "ceph",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "sshfs", "lustre", "gpfs", "beegfs",
    "fuse.beegfs", "9p", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.cephfs", "panfs",
    "orangefs", "pvfs2", "fuse.rclone", "virtiofs",
})


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (its nearest existing folder), from
    ``/proc/self/mountinfo``; ``None`` where that is not known (not Linux)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    p = p.resolve()
    best, kind = "", None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or not rest:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = str(p) == mount or str(p).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, rest[0]
    return kind


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prunebench" / "index"


def index_location(root: Path) -> Path:
    """The index file of the store at ``root``, by ``PRUNEBENCH_INDEX``:

    - unset or ``auto``: ``<out>/index.sqlite``, unless the store is on a network
      filesystem (:data:`NETWORK_FS`): then as ``local``;
    - ``store``: always ``<out>/index.sqlite``;
    - ``local``: a per-store file in the user cache dir
      (``$XDG_CACHE_HOME/prunebench/index/<name>-<hash of the store's absolute path>.sqlite``);
    - any other value: a folder, holding per-store files named the same way.

    The index is a cache of the run folders: wherever it lives, it is rebuilt from them.
    """
    mode = os.environ.get("PRUNEBENCH_INDEX", "").strip()
    in_store = root / "index.sqlite"
    if mode in ("", "auto"):
        if filesystem_type(root) not in NETWORK_FS:
            return in_store
        mode = "local"
    if mode == "store":
        return in_store
    folder = _cache_dir() if mode == "local" else Path(os.path.expanduser(mode))
    absolute = os.path.abspath(root)
    digest = hashlib.sha256(absolute.encode()).hexdigest()[:16]
    name = slugify(Path(absolute).name)[:32] or "store"
    return folder / f"{name}-{digest}.sqlite"


def _check_root(root: Path) -> None:
    """A one-line error when ``--out`` (or a folder above it) is not a directory."""
    for p in (root, *root.parents):
        try:
            if p.is_dir():
                return
            if p.exists() or p.is_symlink():
                what = ("the run store" if p == root
                        else f"a folder above the run store {str(root)!r}")
                raise StoreError(f"{str(p)!r} is a file, not a directory: it cannot be {what}; "
                                 "give --out a folder")
        except OSError as exc:
            raise StoreError(f"cannot use the run store {str(root)!r}: {exc}") from None


def _is_corrupt(exc: BaseException) -> bool:
    """An SQLite error that means "this file is not a usable index" (not a lock timeout)."""
    if isinstance(exc, _CorruptIndex):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if isinstance(exc, sqlite3.OperationalError):
        msg = str(exc).lower()
        return "no such column" in msg or "malformed" in msg or "not a database" in msg
    return True


def _stat(path: Path) -> tuple[float | None, int | None]:
    try:
        st = path.stat()
    except OSError:
        return None, None
    return st.st_mtime, st.st_size


def _nearest_dir(path: Path) -> Path:
    """``path`` or the nearest existing folder above it (where it would be made)."""
    p = Path(os.path.abspath(path)) if not path.is_dir() else path
    while not p.is_dir() and p != p.parent:
        p = p.parent
    return p


def _unwritable_error(exc: OSError) -> bool:
    """An OSError that means "this store cannot be written" (a reader carries on)."""
    import errno

    return exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


def _warn_result(d: Path, why: str) -> None:
    log.warning("warning: run %s: result.json is unreadable (%s): the run counts as "
                "unfinished; running its recipe again redoes it", d.name, why)


def _warn_recipe(d: Path, why: str) -> None:
    log.warning("warning: run %s: recipe.yaml is unreadable (%s): the run counts as "
                "unfinished; running its recipe again redoes it", d.name, why)


def _recipe_of(d: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run folder's ``recipe.yaml`` as a mapping, or ``(None, why)`` when it is
    missing, unreadable (not UTF-8, not YAML), empty or not a mapping. Silent: the caller
    that decides the run is damaged warns (:func:`_warn_recipe`)."""
    p = d / "recipe.yaml"
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return None, "it is missing"
    except OSError as exc:
        return None, f"it cannot be read: {exc.strerror or type(exc).__name__}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    if "\x00" in text:
        return None, "it holds NUL bytes"
    try:
        recipe = yaml.safe_load(text)
    except (ValueError, TypeError, OverflowError, RecursionError, yaml.YAMLError) as exc:
        return None, f"it is not valid YAML ({type(exc).__name__})"
    if not isinstance(recipe, dict) or not recipe:
        what = "empty" if recipe is None or recipe == {} else \
            f"a {type(recipe).__name__}, not a mapping"
        return None, f"it is {what}"
    return recipe, None


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


# -- lease locks ------------------------------------------------------------------------
#
# ``fcntl.flock`` is unreliable on NFS (and per-host at best), so a lock is a *lease file*
# next to the lock path: ``<path>.lease``, created atomically (a hard link of a fully
# written temporary file, or ``O_CREAT | O_EXCL`` where links are not supported; both are
# atomic on NFS) and holding its owner (host, pid, a random token) and a heartbeat time that
# a daemon thread refreshes every few seconds while the lock is held. A waiter takes over a
# *stale* lease: one whose heartbeat is older than the lease timeout (also as seen by the
# waiter's own clock, so clock skew between machines cannot keep a dead lease alive), or
# one whose owner is a dead process on this host (same host name, boot and pid namespace).
# Takeover and release rename the lease to a unique name first and read it back, so two
# waiters never both win and a release never removes somebody else's lease. A lost worker
# therefore never leaves a stage locked forever. Locks are re-entrant within one thread.

#: seconds without a heartbeat after which a lease is stale (env ``PRUNEBENCH_LEASE_TIMEOUT``)
LEASE_TIMEOUT = 60.0
_held = threading.local()


def lease_timeout() -> float:
    raw = os.environ.get("PRUNEBENCH_LEASE_TIMEOUT")
    try:
        value = float(raw) if raw else LEASE_TIMEOUT
    except ValueError:
        value = LEASE_TIMEOUT
    return value if value > 0 else LEASE_TIMEOUT


def lease_path(path: Path) -> Path:
    """The lease file of the lock ``path``."""
    return path.with_name(path.name + ".lease")


def _read_lease(lease: Path) -> dict[str, Any] | None:
    """The lease's owner record; ``None`` when there is no lease; ``{}`` when it cannot be
    parsed (treated as owned by somebody unknown)."""
    try:
        text = lease.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _pid_dead(pid: object) -> bool:
    """``pid`` (on this host) is certainly not a running process (a zombie counts as dead)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].startswith(("Z", "X"))
    except (OSError, ValueError):
        return False


_NODE: str | None = None


def _node() -> str:
    """This host and pid namespace (host name, boot id, pid-namespace inode): pids are only
    comparable between processes with the same node (two machines or containers may share
    a host name)."""
    global _NODE
    if _NODE is None:
        parts = [socket.gethostname()]
        with contextlib.suppress(OSError):
            parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        with contextlib.suppress(OSError):
            parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
        _NODE = "/".join(parts)
    return _NODE


def _lease_text(token: str, heartbeat: float, acquired: float) -> bytes:
    return json.dumps({"host": socket.gethostname(), "node": _node(), "pid": os.getpid(),
                       "token": token, "acquired": acquired, "heartbeat": heartbeat}).encode()


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` exclusively (FileExistsError if it exists) with ``data``, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tmp(lease: Path, token: str, data: bytes) -> Path:
    tmp = lease.with_name(f"{lease.name}.{token}.{time.monotonic_ns()}.tmp")
    _write_new(tmp, data)
    return tmp


def _create_lease(lease: Path, token: str, data: bytes) -> bool:
    """Atomically create ``lease`` with ``data``; False when it exists already."""
    tmp = _write_tmp(lease, token, data)
    try:
        try:
            os.link(tmp, lease)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create instead
            pass
        try:
            _write_new(lease, data)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _remove_lease(lease: Path, token: str, expected: str | None) -> bool:
    """Remove ``lease`` if it still holds the token ``expected`` (None: an unreadable
    lease). Rename first, read back: a lease that changed meanwhile is put back."""
    grabbed = lease.with_name(f"{lease.name}.{token}.{time.monotonic_ns()}.gone")
    try:
        os.rename(lease, grabbed)
    except FileNotFoundError:
        return False
    data = _read_lease(grabbed) or {}
    if data.get("token") == expected:
        with contextlib.suppress(OSError):
            os.unlink(grabbed)
        return True
    try:  # not the lease we meant: restore it
        os.link(grabbed, lease)
    except FileExistsError:
        pass
    except OSError:  # no hard links here
        with contextlib.suppress(OSError):
            if not lease.exists():
                os.rename(grabbed, lease)
    with contextlib.suppress(OSError):
        os.unlink(grabbed)
    return False


def _owner_gone(data: dict[str, Any], timeout: float) -> bool:
    """A lease's owner is gone: its recorded heartbeat is older than ``timeout``, or it is
    a dead process on this node."""
    beat = data.get("heartbeat")
    if isinstance(beat, (int, float)) and time.time() - beat > timeout:
        return True
    return data.get("node") == _node() and _pid_dead(data.get("pid"))


class _Lease:
    def __init__(self, path: Path) -> None:
        self.lease = lease_path(path)
        self.token = secrets.token_hex(8)
        self.timeout = lease_timeout()
        self.interval = max(0.05, min(5.0, self.timeout / 4))
        self.acquired = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        self.lease.parent.mkdir(parents=True, exist_ok=True)
        seen: tuple[Any, float] | None = None  # (lease content, when first seen unchanged)
        delay = 0.02
        warned = False
        while True:
            now = time.time()
            self.acquired = now
            if _create_lease(self.lease, self.token, _lease_text(self.token, now, now)):
                break
            data = _read_lease(self.lease)
            if data is None:
                continue  # released meanwhile: try again at once
            key = json.dumps(data, sort_keys=True)
            if seen is None or seen[0] != key:
                seen = (key, time.monotonic())
            if self._stale(data, time.monotonic() - seen[1]):
                if _remove_lease(self.lease, self.token, data.get("token")):
                    log.warning("warning: took over the stale lock %s (owner %s pid %s)",
                                self.lease, data.get("host", "?"), data.get("pid", "?"))
                seen = None
                continue
            if not warned and time.monotonic() - (seen[1] if seen else 0) > 30:
                log.info("waiting for the lock %s (held by %s pid %s)", self.lease,
                         data.get("host", "?"), data.get("pid", "?"))
                warned = True
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.lease.name}",
                                        daemon=True)
        self._thread.start()

    def _stale(self, data: dict[str, Any], unchanged_for: float) -> bool:
        if unchanged_for > self.timeout:
            return True  # no heartbeat seen for a whole timeout, by our own clock
        return _owner_gone(data, self.timeout)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            data = _read_lease(self.lease)
            if data is None:  # moved aside for a moment by a waiter's takeover check
                continue
            if data.get("token") != self.token:
                log.warning("warning: the lock %s was taken over by %s pid %s while held "
                            "(no heartbeat for %.0f s)", self.lease, data.get("host", "?"),
                            data.get("pid", "?"), self.timeout)
                return
            with contextlib.suppress(OSError):
                tmp = _write_tmp(self.lease, self.token,
                                 _lease_text(self.token, time.time(), self.acquired))
                try:
                    os.replace(tmp, self.lease)
                except OSError:
                    os.unlink(tmp)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        data = _read_lease(self.lease)
        if data is not None and data.get("token") == self.token:
            _remove_lease(self.lease, self.token, self.token)


def clear_stale_lock(path: Path) -> bool:
    """Remove the lease of the lock ``path`` when its owner is gone (no heartbeat for a
    lease timeout, or a dead process on this node); a live owner's lease is left alone.
    For locks nobody will take again: a finished run's, when a kill came between its
    result and the release of its lock. Whether one was removed."""
    lease = lease_path(Path(path))
    data = _read_lease(lease)
    if not data:
        return False
    if not _owner_gone(data, lease_timeout()):
        return False
    try:
        return _remove_lease(lease, secrets.token_hex(8), data.get("token"))
    except OSError:  # a read-only store: the lease is garbage, not an error
        return False


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes and machines (a lease file, see
    above), so two workers never build one stage. Re-entrant within one thread."""
    held: dict[str, int] = _held.__dict__.setdefault("paths", {})
    key = os.path.abspath(path)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    lease = _Lease(Path(path))
    lease.acquire()
    held[key] = 1
    try:
        yield
    finally:
        held.pop(key, None)
        lease.release()
