"""``prunebench doctor``: is this machine ready to run prunebench, and what to do if not.

Checks (each one a :class:`Check` with what was found and, for a problem, what to do):

* ``python``, ``torch``: versions (torch must import);
* ``device``: CUDA available? which GPU(s)? (no GPU is fine: runs use the CPU);
* ``data:<name>``: where each registered dataset was found by the lookup order of
  :mod:`prunebench.data.paths` (``--data-dir``, ``$PRUNEBENCH_DATA``, the user cache, system
  paths such as Debian's ``/usr/share/datasets/fashion-mnist``), never downloading;
* ``store``: the run store (``--out``) is a directory prunebench can write (or can create),
  and its index is readable (an unreadable one is rebuilt on next use);
* ``extra:<module>``: dependencies and optional extras installed (torch-pruning,
  matplotlib, scipy, ray, hypothesis).

A check is *required* when prunebench cannot do its default job without it (torch, the
store, the default dataset ``fashion_mnist``, the torch-pruning and matplotlib
dependencies); the others are
reported as notes. :func:`diagnose` returns every check; ``ok`` is ``False`` when a required
one failed (the CLI then exits 1).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prunebench.errors import PrunebenchError

#: the dataset a recipe uses when it names none (``DataCfg.name``): its absence is a problem
DEFAULT_DATASET = "fashion_mnist"

#: optional modules: (import name, distribution name, what needs it, how to install it)
EXTRAS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("torch_pruning", "torch-pruning", "structured (filter) pruning",
     "pip install 'torch-pruning>=1.5'", True),
    ("matplotlib", "matplotlib", "report figures (report.html, prunebench report)",
     "pip install 'matplotlib>=3.7'", True),
    ("scipy", "scipy", "statistics cross-checks in the test suite (dev extra)",
     "pip install -e '.[dev]'", False),
    ("ray", "ray", "study --backend ray", "pip install 'prunebench[ray]'", False),
    ("hypothesis", "hypothesis", "the test suite (dev extra)", "pip install -e '.[dev]'",
     False),
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("problem" if self.required else "note")


def diagnose(out: str | os.PathLike[str] = "runs", data_dir: str | None = None) -> list[Check]:
    """Every check, in display order."""
    checks = [Check("python", True, f"Python {platform.python_version()} "
                                    f"({platform.system()} {platform.machine()})")]
    checks += _torch_checks()
    checks += [_data_check(name, data_dir) for name in _dataset_names()]
    checks += _store_checks(Path(out))
    checks += [_extra_check(*extra) for extra in EXTRAS]
    return checks


def healthy(checks: list[Check]) -> bool:
    return all(c.ok or not c.required for c in checks)


def to_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": healthy(checks),
            "checks": [{**asdict(c), "status": c.status} for c in checks]}


# -- torch and device -------------------------------------------------------------------------

def _torch_checks() -> list[Check]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken install is what doctor reports
        return [Check("torch", False, f"torch cannot be imported: {type(exc).__name__}: {exc}",
                      "install PyTorch (https://pytorch.org/get-started/locally/), then "
                      "pip install -e . in the repository")]
    out = [Check("torch", True, f"torch {torch.__version__}, {torch.get_num_threads()} CPU "
                                f"threads")]
    try:
        cuda = torch.cuda.is_available()
        if cuda:
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            detail = (f"CUDA {torch.version.cuda}: {len(names)} GPU(s): "
                      + ", ".join(f"cuda:{i} {n}" for i, n in enumerate(names))
                      + "; --device auto uses cuda:0")
        else:
            built = getattr(torch.version, "cuda", None)
            detail = ("no CUDA GPU available" + (f" (torch built for CUDA {built})" if built
                                                 else " (a CPU-only torch build)")
                      + "; runs use the CPU")
        out.append(Check("device", True, detail, required=False))
    except Exception as exc:  # noqa: BLE001
        out.append(Check("device", False, f"CUDA query failed: {exc}",
                         "check the NVIDIA driver (nvidia-smi) or run with --device cpu",
                         required=False))
    return out


# -- datasets -------------------------------------------------------------------------------

def _dataset_names() -> list[str]:
    from prunebench.data import DATASETS

    return list(DATASETS.names())


def _where(name: str, data_dir: str | None) -> str | None:
    """Where the loader would read ``name`` from (never downloading); ``None``: not found;
    raises :class:`PrunebenchError` when an explicit ``data_dir`` holds nothing usable."""
    from prunebench.data import cifar, mnist
    from prunebench.data.paths import find_data

    dd = Path(data_dir) if data_dir is not None else None
    idx = {"fashion_mnist": mnist.FASHION_MNIST, "mnist": mnist.MNIST}
    cif = {"cifar10": cifar.CIFAR10, "cifar100": cifar.CIFAR100}
    if name in idx:
        spec = idx[name]
        files = find_data(spec.name, dd, mnist._idx_paths, aliases=(spec.debian,),
                          expected=mnist.WHAT)
        return None if files is None else str(Path(files[0]).parent)
    if name in cif:
        hit = find_data(cif[name].name, dd, cifar._probe(cif[name]),
                        expected="the CIFAR batches, archive or ImageFolder copy")
        return None if hit is None else f"{hit[1]} ({hit[0]})"
    raise KeyError(name)


def _data_check(name: str, data_dir: str | None) -> Check:
    from prunebench.data.paths import ENV_VAR, dataset_cache_dir

    required = name == DEFAULT_DATASET
    if name == "synthetic":
        return Check(f"data:{name}", True, "generated in memory (no files needed)",
                     required=False)
    try:
        where = _where(name, data_dir)
    except KeyError:
        return Check(f"data:{name}", True, "registered by a plugin: its loader finds its own "
                     "files (not checked)", required=False)
    except PrunebenchError as exc:
        return Check(f"data:{name}", False, str(exc),
                     f"point --data-dir at a folder holding {name}'s files", required=required)
    except OSError as exc:
        return Check(f"data:{name}", False, f"lookup failed: {exc}",
                     "check the permissions of the data folders", required=required)
    if where is not None:
        return Check(f"data:{name}", True, f"found: {where}", required=False)
    fix = (f"put its files in {dataset_cache_dir(name)}, or pass --data-dir DIR, or set "
           f"{ENV_VAR}=DIR (a folder holding {name}/)")
    if name == "fashion_mnist":
        fix = ("install the Debian package dataset-fashion-mnist (sudo apt-get install "
               "dataset-fashion-mnist: /usr/share/datasets/fashion-mnist), or " + fix)
    fix += "; with network access it is downloaded on first use"
    detail = "not found" + ("" if required else " (needed only by recipes that use it)")
    return Check(f"data:{name}", False, detail, fix, required=required)


# -- the run store --------------------------------------------------------------------------

def _store_checks(out: Path) -> list[Check]:
    from prunebench.store import RunStore

    try:
        store = RunStore(out)
    except PrunebenchError as exc:
        return [Check("store", False, str(exc), "give --out a folder (it is created if "
                      "missing)")]
    if not out.exists():
        parent = next((p for p in out.absolute().parents if p.exists()), None)
        if parent is not None and os.access(parent, os.W_OK | os.X_OK):
            return [Check("store", True, f"{out} does not exist yet; it will be created "
                          f"(in {parent}, writable)")]
        return [Check("store", False, f"{out} does not exist and {parent} is not writable",
                      "choose a writable --out folder or fix its permissions")]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".doctor.", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return [Check("store", False, f"{out} is not writable: {exc.strerror or exc}",
                      "choose a writable --out folder or fix its permissions "
                      f"(chmod u+w {out})")]
    checks = [Check("store", True, f"{out} is writable")]
    if store.index_path.exists():
        checks.append(_index_check(store.index_path))
    return checks


def _index_check(path: Path) -> Check:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            n = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        return Check("store index", False, f"{path.name} is not readable ({exc})",
                     "nothing to do: the next prunebench command moves it aside "
                     f"({path.name}.bad-<time>) and rebuilds it from the run folders",
                     required=False)
    return Check("store index", True, f"{path.name}: {n} run(s) indexed", required=False)


# -- optional extras ------------------------------------------------------------------------

def _extra_check(module: str, dist: str, purpose: str, install: str, required: bool) -> Check:
    spec = None
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(module)
    if spec is None:
        return Check(f"extra:{dist}", False, f"not installed (needed for {purpose})", install,
                     required=required)
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "(version unknown)"
    return Check(f"extra:{dist}", True, f"{version} ({purpose})", required=False)
