"""The identity of a dataset copy: a content checksum of the files that will be loaded.

A path is not an identity (the same recipe may point at the official CIFAR-10 or at its JPEG
copy, at a download or at a corrected re-download), so the plan puts this checksum into the
dense stage's key and every downstream key changes with it (``prunebench.plan``).

It is cheap: the sha256 of every file is cached by (absolute path, size, mtime_ns,
ctime_ns, inode: an edit that puts the mtime back still moves the ctime), in
memory and in a small JSON file in the user cache dir (``<cache>/checksums.json``, written
atomically), so a dataset is hashed once, not once per run. Resolving an identity finds the
files (the loaders' lookup order, download included) but never decodes them. Synthetic data
has no files: its identity is a hash of its generation parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prunebench.data.paths import cache_root
from prunebench.errors import DataError

CACHE_NAME = "checksums.json"
CACHE_VERSION = 2  # 2: stamps with ctime and inode
#: cache entries kept at most (the oldest-inserted are dropped first)
MAX_ENTRIES = 4096

_MEMO: dict[tuple[str, str], str] = {}


def _sha256_file(path: Path) -> str:
    """The full sha256 of one file's bytes (the one place that reads data to hash it)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_file() -> Path:
    return cache_root() / CACHE_NAME


def _read_cache() -> dict[str, Any]:
    try:
        blob = json.loads(_cache_file().read_text())
    except (OSError, ValueError):  # missing or corrupt: start afresh
        return {}
    if not isinstance(blob, dict) or blob.get("version") != CACHE_VERSION:
        return {}
    entries = blob.get("entries")
    return entries if isinstance(entries, dict) else {}


def _write_cache(entries: dict[str, Any]) -> None:
    from prunebench import io

    if len(entries) > MAX_ENTRIES:
        entries = dict(list(entries.items())[-MAX_ENTRIES:])
    with contextlib.suppress(OSError):  # a read-only cache only costs speed
        # insertion order kept (not sorted): the oldest entries are the first dropped
        text = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=0)
        io.write_text(_cache_file(), text + "\n")


def _unreadable(path: Path | str, exc: OSError) -> DataError:
    return DataError(f"cannot read data file {path}: {exc.strerror or exc}")


def _stat(path: Path) -> tuple[str, str]:
    """``(absolute path, stamp)``: a cached digest is reused only while the stamp holds.
    The stamp has the change time and inode besides size and mtime (as git's index does):
    ``cp -p``, ``rsync -t`` or ``os.utime`` can put an edited file's mtime back, but every
    write (and every utime) moves its ctime, so an in-place edit is always hashed again."""
    try:
        resolved = path.resolve()
        st = resolved.stat()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return str(resolved), f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _cached(items: list[tuple[str, str, Any]]) -> list[str]:
    """Digests of ``(key, stamp, compute)`` items: from memory, then from the JSON cache
    (when the stamp matches), else ``compute()`` (and both caches learn it)."""
    out = [_MEMO.get((key, stamp)) for key, stamp, _ in items]
    if all(o is not None for o in out):
        return [str(o) for o in out]
    cache = _read_cache()
    dirty = False
    for i, (key, stamp, compute) in enumerate(items):
        if out[i] is not None:
            continue
        entry = cache.get(key)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == stamp:
            digest = str(entry[1])
        else:
            digest = compute()
            cache.pop(key, None)  # re-insert: newest last, the oldest are dropped first
            cache[key] = [stamp, digest]
            dirty = True
        _MEMO[(key, stamp)] = digest
        out[i] = digest
    if dirty:
        _write_cache(cache)
    return [str(o) for o in out]


def _hash(path: str) -> str:
    try:
        return _sha256_file(Path(path))
    except OSError as exc:
        raise _unreadable(path, exc) from None


def file_checksums(paths: Iterable[Path]) -> list[str]:
    """The sha256 of each file, hashing only those not cached under their :func:`_stat`."""
    items = []
    for p in paths:
        key, stamp = _stat(Path(p))
        items.append((key, stamp, lambda key=key: _hash(key)))
    return _cached(items)


def file_checksum(path: Path) -> str:
    """The sha256 of one file (cached by absolute path and :func:`_stat` stamp)."""
    return file_checksums([path])[0]


def tree_checksum(root: Path, rel_paths: Iterable[str]) -> str:
    """One sha256 over many files under ``root`` (an image-folder copy): their relative
    paths and contents. Cached as one entry whose stamp covers every file's relative path
    and :func:`_stat` stamp, so a changed, added or removed file hashes the tree again."""
    rels = sorted(rel_paths)
    stamp = hashlib.sha256()
    for rel in rels:
        _key, file_stamp = _stat(root / rel)
        stamp.update(f"{rel}\0{file_stamp}\n".encode())

    def compute() -> str:
        h = hashlib.sha256()
        for rel in rels:
            h.update(f"{rel}\0{_hash(str(root / rel))}\n".encode())
        return h.hexdigest()

    key = "tree:" + str(root.resolve())
    return _cached([(key, stamp.hexdigest(), compute)])[0]


def identity_of(name: str, kind: str, files: dict[str, Path]) -> str:
    """The identity (16 hex) of the dataset ``name`` read as ``kind`` from ``files``
    (role -> path; the role names a file's place in the copy, never its folder)."""
    sums = dict(zip(files, file_checksums(list(files.values())), strict=True))
    return params_identity(name, {"kind": kind, "files": sums})


def params_identity(name: str, params: dict[str, Any]) -> str:
    """A 16-hex identity of ``name`` and JSON-able ``params`` (e.g. generation parameters)."""
    text = json.dumps(
        {"dataset": name, **params}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clear_memo() -> None:
    """Forget the in-memory checksums (the JSON cache stays)."""
    _MEMO.clear()


__all__ = [
    "clear_memo",
    "file_checksum",
    "file_checksums",
    "identity_of",
    "params_identity",
    "tree_checksum",
]
