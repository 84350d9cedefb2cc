"""One registry helper, used by models, datasets, criteria and studies alike.

Registered objects from outside the ``prunebench`` package (plugins) carry a *code
identity*: a hash of their defining module's source file, taken when they are registered
(:func:`code_of`). The plan puts it into the stage keys, so editing a plugin changes the
run id; built-in components are covered by the package version and have none.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from prunebench.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map with a decorator for registration and helpful lookup errors.

    >>> models = Registry("model")
    >>> @models.register("tiny")
    ... def tiny(): ...
    >>> models.get("tiny") is tiny
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}
        self._code: dict[str, str | None] = {}

    def register(self, name: str, *, doc: str | None = None) -> Callable[[T], T]:
        """Register under ``name``. Registering another object under a taken name is an
        error, except for the same definition (source file and qualified name) loaded
        again, e.g. an edited plugin file re-imported: the new object replaces the old."""

        def deco(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj and not _same_definition(old, obj):
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            self._code[name] = code_of(obj)
            text = doc if doc is not None else (getattr(obj, "__doc__", None) or "")
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            allowed = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; registered: {allowed}") from None

    def doc(self, name: str) -> str:
        self.get(name)
        return self._docs[name]

    def code(self, name: str) -> str | None:
        """The code identity of ``name`` (see :func:`code_of`, taken at registration):
        None for a built-in prunebench component."""
        self.get(name)
        return self._code[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def is_builtin(obj: Any) -> bool:
    """Whether ``obj`` (or, for an instance, its class) is defined inside prunebench."""
    module = _module_name(obj)
    return module == "prunebench" or module.startswith("prunebench.")


def code_of(obj: Any) -> str | None:
    """The code identity of a registered component: None when it is built into prunebench
    (the package version covers it); else ``"sha256:<hex>"`` of its defining module's
    source file (the whole file, read now), or, when it has no source file (defined
    interactively), ``"name:<module>.<qualname>"``.

    Only the defining file is hashed: code the component imports from other files of the
    plugin is not part of the identity.
    """
    if is_builtin(obj):
        return None
    path = _source_file(obj)
    if path is not None:
        try:
            with open(path, "rb") as fh:
                return "sha256:" + hashlib.sha256(fh.read()).hexdigest()
        except OSError:
            pass
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"name:{_module_name(obj)}.{qualname}"


def _module_name(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str):
        module = getattr(type(obj), "__module__", None)
    return module if isinstance(module, str) else ""


def _source_file(obj: Any) -> str | None:
    for candidate in (obj, type(obj)):
        try:
            path = inspect.getsourcefile(candidate)
        except TypeError:
            path = None
        if path:
            return path
    module = sys.modules.get(_module_name(obj))
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) and path.endswith(".py") else None


def _same_definition(old: Any, new: Any) -> bool:
    """Both objects come from the same source file under the same qualified name."""
    old_file, new_file = _source_file(old), _source_file(new)
    return (
        old_file is not None
        and old_file == new_file
        and getattr(old, "__qualname__", None) == getattr(new, "__qualname__", None)
    )
