"""One registry helper, used by models, datasets, criteria and studies alike.

Registered objects from outside the ``prunebench`` package (plugins) carry a *code
identity*: a hash of their defining module's source file, taken when they are registered
(:func:`code_of`). The plan puts it into the stage keys, so editing a plugin changes the
run id; built-in components are covered by the package version and have none.

Plugins are found three ways: a recipe's ``plugins:`` list, the ``--plugins`` option of
every command, and Python entry points: every installed distribution that declares an
entry point in the group ``prunebench.plugins`` is imported the first time any registry is
looked up (lazily, once per process; :func:`load_entry_points`).

A registry can also resolve whole name *families* by prefix (:meth:`Registry.add_prefix`):
``"torchvision:resnet18"`` is built by the ``torchvision`` resolver, not registered one by
one; its code identity is the external package's ``<package>==<version>``.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prunebench.errors import RegistryError

T = TypeVar("T")

#: the entry-point group whose modules are imported at the first registry lookup
ENTRY_POINT_GROUP = "prunebench.plugins"

# None: not loaded yet; "loading": in progress (a plugin looking names up at import time);
# "done": loaded. A plugin that failed keeps its one-line error, raised at every lookup.
_entry_points_state: str | None = None
_entry_points_error: RegistryError | None = None


def load_entry_points() -> None:
    """Import every entry point of the group ``prunebench.plugins`` (once per process).

    An entry point that fails to import raises a one-line RegistryError naming it (and its
    distribution), at this and every later lookup, until the process restarts.
    """
    global _entry_points_state, _entry_points_error
    if _entry_points_state is not None:
        if _entry_points_error is not None and _entry_points_state == "done":
            raise _entry_points_error
        return
    _entry_points_state = "loading"
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as exc:  # noqa: BLE001 - any plugin failure becomes one line
                dist = getattr(getattr(ep, "dist", None), "name", None)
                where = f" (distribution {dist!r})" if dist else ""
                msg = " ".join(f"{type(exc).__name__}: {exc}".split())
                _entry_points_error = RegistryError(
                    f"plugin entry point {ep.name!r} = {ep.value!r}{where} failed to load: {msg}"
                )
                break
    finally:
        _entry_points_state = "done"
    if _entry_points_error is not None:
        raise _entry_points_error


def reset_entry_points() -> None:
    """Forget that entry points were loaded (tests; a newly installed plugin)."""
    global _entry_points_state, _entry_points_error
    _entry_points_state, _entry_points_error = None, None


@dataclass(frozen=True)
class PrefixResolver(Generic[T]):
    """Resolves every name ``"<prefix>:<rest>"`` of a registry.

    ``resolve(rest, full_name)`` returns the object (raising RegistryError with one line
    when the name is unknown or the package behind it is missing); ``code(rest, full_name)``
    its code identity (e.g. ``"timm==1.0.9"``); ``doc`` one line for listings.
    """

    resolve: Callable[[str, str], T]
    code: Callable[[str, str], str | None]
    doc: str = ""


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
        self._prefixes: dict[str, PrefixResolver[T]] = {}

    def add_prefix(self, prefix: str, resolver: PrefixResolver[T]) -> None:
        """Resolve every ``"<prefix>:<name>"`` with ``resolver`` (see :class:`PrefixResolver`)."""
        self._prefixes[prefix] = resolver

    def prefixes(self) -> dict[str, str]:
        """``{prefix: one-line doc}`` of the name families resolved by prefix."""
        return {p: r.doc for p, r in sorted(self._prefixes.items())}

    def _prefixed(self, name: str) -> tuple[PrefixResolver[T], str] | None:
        if not isinstance(name, str) or name in self._items:
            return None
        prefix, sep, rest = name.partition(":")
        resolver = self._prefixes.get(prefix) if sep else None
        return (resolver, rest) if resolver is not None and rest else None

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
        load_entry_points()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            pass
        prefixed = self._prefixed(name)
        if prefixed is not None:
            resolver, rest = prefixed
            return resolver.resolve(rest, name)
        allowed = ", ".join(sorted(self._items)) or "(none)"
        families = "".join(f", {p}:<name>" for p in sorted(self._prefixes))
        raise RegistryError(f"unknown {self.kind} {name!r}; registered: {allowed}{families}")

    def doc(self, name: str) -> str:
        prefixed = self._prefixed(name)
        if prefixed is not None:
            return prefixed[0].doc
        self.get(name)
        return self._docs[name]

    def code(self, name: str) -> str | None:
        """The code identity of ``name`` (see :func:`code_of`, taken at registration):
        None for a built-in prunebench component; ``"<package>==<version>"`` for a name
        resolved by prefix from an external package."""
        load_entry_points()
        prefixed = self._prefixed(name)
        if prefixed is not None:
            resolver, rest = prefixed
            return resolver.code(rest, name)
        self.get(name)
        return self._code[name]

    def names(self) -> list[str]:
        load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        load_entry_points()
        return name in self._items or (isinstance(name, str) and self._prefixed(name) is not None)

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
