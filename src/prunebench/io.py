"""Atomic file writes: every write goes through a temp file, fsync and rename.

A crash or kill at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from prunebench.errors import StoreError


def _atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files: give the result the usual umask-based mode
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def finite_json(obj: Any) -> Any:
    """JSON has no NaN or infinity (``json.dumps`` writes ``NaN`` / ``Infinity``, which
    strict readers reject): non-finite floats become ``None``, in nested dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """Valid JSON for every reader: :func:`finite_json`, then ``allow_nan=False``."""
    return json.dumps(finite_json(obj), allow_nan=False, default=str, **kwargs)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, dumps_json(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """torch.save through the atomic helper (load back with ``weights_only=True``)."""
    import torch

    return _atomic(path, lambda fh: torch.save(obj, fh))


class CorruptFileError(StoreError, ValueError):
    """A stored file cannot be parsed (damaged by hand or by a disk fault: the atomic
    writes never leave half a file). A one-line project error, and still a ValueError for
    callers that catch parse errors."""


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One JSON object per line; a damaged file is a one-line :class:`CorruptFileError`."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise CorruptFileError(f"{str(path)!r} is not UTF-8 text (damaged?)") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise CorruptFileError(f"{str(path)!r} line {n} is not valid JSON (truncated or "
                                   "damaged)") from None
    return out


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
    return write_text(path, text)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def unwritable_reason(directory: str | os.PathLike[str]) -> str | None:
    """Why nothing can be written in the existing folder ``directory`` (``"Read-only file
    system"``, ``"Permission denied"``, ...), or ``None`` when a file can be created there.
    Tried for real (a temporary file, removed at once), so it holds for root, read-only
    mounts and ACLs alike; nothing is left behind."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".prunebench-write-test-", dir=directory)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def check_output(path: str | os.PathLike[str], what: str = "output file",
                 hint: str = "") -> Path:
    """``path`` if a file can be written there (atomically: see :func:`write_bytes`), else a
    one-line :class:`StoreError` naming it and why: it is a directory, a folder above it is
    a file, or the nearest existing folder above it is not writable (read-only, no
    permission). ``hint`` ends the message (e.g. ``"; write it elsewhere with -o PATH"``).
    Checked before anything is written; writes nothing."""
    path = Path(path)
    shown = repr(str(path))
    try:
        if path.is_dir():
            raise StoreError(f"{what} {shown} is a directory: give a file path{hint}")
        folder = None
        for p in path.parents:
            if p.is_dir():
                folder = p
                break
            if p.exists() or p.is_symlink():
                raise StoreError(f"cannot write {what} {shown}: {str(p)!r} is a file, not a "
                                 f"folder{hint}")
    except OSError as exc:  # a name too long, a folder we may not look into
        raise StoreError(f"cannot write {what} {shown}: {exc.strerror or exc}{hint}") from None
    why = unwritable_reason(folder if folder is not None else Path("."))
    if why is not None:
        where = "" if folder == path.parent else " (its nearest existing folder)"
        raise StoreError(f"cannot write {what} {shown}: folder "
                         f"{str(folder if folder is not None else '.')!r}{where} is not "
                         f"writable ({why}){hint}")
    return path
