"""Lazy package exports (PEP 562): a package names what it exports and where it lives; the
module is imported on first use, so importing the package stays cheap (no torch, no
matplotlib until a name that needs them is used)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, where: dict[str, str],
                 before: Callable[[], None] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``where[name]`` (a module
    path) on first access of ``name`` (after calling ``before``, e.g. to register
    built-ins) and keeps the value in the package, so later accesses are plain lookups."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if before is not None:
            before()
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
