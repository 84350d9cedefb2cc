"""Studies: grids of recipes that share stages (a dense model is trained once per key).

The names below are imported on first use (PEP 562): readers of stored studies
(``report``, ``compare``) use :mod:`prunebench.studies.spec` without loading the runner,
the pipeline and torch behind it.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "expand_grid": "grid",
    "expand_study": "runner",
    "manifest_path": "runner",
    "run_studies": "runner",
    "run_study": "runner",
    "STUDIES": "spec",
    "StudySpec": "spec",
    "load_study": "spec",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
