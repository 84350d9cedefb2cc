"""Where dataset files are looked for, and the checksum-verified download of last resort.

Lookup order (``find_data_dir``), first hit wins:

1. the explicit ``data_dir`` argument: a folder holding the files directly, or a root holding
   ``<name>/`` (for CIFAR also the ``.tar.gz``/``.zip`` file itself). When it is given and holds
   nothing usable, that is an error: it never silently falls back to another copy.
2. the ``PRUNEBENCH_DATA`` environment variable: a root holding ``<name>/`` (or the Debian-style
   ``fashion-mnist/`` spelling).
3. the user cache dir, ``platformdirs.user_cache_dir("prunebench")/<name>``.
4. system paths, ``/usr/share/datasets/<debian-name>`` (Debian's ``dataset-fashion-mnist``).
5. a download from the official source into the cache dir, verified against the official
   checksums (a mismatch deletes the file and raises DataError).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import platformdirs

from prunebench.errors import DataError

T = TypeVar("T")

ENV_VAR = "PRUNEBENCH_DATA"
SYSTEM_ROOTS = (Path("/usr/share/datasets"),)
DOWNLOAD_TIMEOUT_S = 30.0


def cache_root() -> Path:
    """The per-user cache folder of prunebench (honours XDG_CACHE_HOME on Linux)."""
    return Path(platformdirs.user_cache_dir("prunebench"))


def dataset_cache_dir(name: str) -> Path:
    return cache_root() / name


def find_data(
    name: str,
    data_dir: Path | None,
    probe: Callable[[Path], T | None],
    *,
    aliases: Sequence[str] = (),
    expected: str,
) -> T | None:
    """Walk the lookup order (steps 1-4) and return the first ``probe(path)`` that is not None.

    ``probe`` receives a candidate folder (or file, for an explicit path) and returns whatever
    the loader needs to read it, or None when the candidate holds no usable copy. Returns None
    when nothing was found (the caller may then download); raises DataError when an explicit
    ``data_dir`` holds nothing usable.
    """
    names = [name, *aliases]
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.exists():
            raise DataError(f"{name}: data dir {data_dir} does not exist")
        for cand in [data_dir, *(data_dir / n for n in names)]:
            if cand.exists() and (hit := probe(cand)) is not None:
                return hit
        raise DataError(f"{name}: no usable data in {data_dir}; expected {expected}")
    candidates: list[Path] = []
    env = os.environ.get(ENV_VAR)
    if env:
        candidates += [Path(env).expanduser() / n for n in names]
    candidates.append(dataset_cache_dir(name))
    candidates += [root / n for root in SYSTEM_ROOTS for n in names]
    for cand in candidates:
        if cand.exists() and (hit := probe(cand)) is not None:
            return hit
    return None


def where_to_put(name: str, what: str) -> str:
    return f"put {what} in {dataset_cache_dir(name)} or pass --data-dir / set {ENV_VAR}"


def download(name: str, urls: Sequence[str], dest: Path, md5: str, *, what: str) -> Path:
    """Download ``dest.name`` from the first working mirror into ``dest``, md5-verified.

    Streams to a temp file in the destination folder and renames it into place only after the
    checksum matched; on any failure the temp file is removed and a one-line DataError says what
    failed and where to put the files by hand.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5()
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
            ):
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != md5:
                raise DataError(
                    f"could not download {name}: checksum mismatch for {url} "
                    f"(md5 {digest.hexdigest()}, expected {md5}); {where_to_put(name, what)}"
                )
            os.replace(tmp, dest)
            return dest
        except DataError:
            raise
        except Exception as exc:  # network, HTTP, disk: try the next mirror
            errors.append(f"{url}: {type(exc).__name__}: {exc}".replace("\n", " "))
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    raise DataError(f"could not download {name} ({'; '.join(errors)}); {where_to_put(name, what)}")
