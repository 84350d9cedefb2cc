"""Every recipe field is declared: part of the fingerprint, or not affecting comparability.

The test walks the recipe schema, so a new option that nobody declared fails here instead of
silently making two different methods look like one (as retrain.orth_reg and
retrain.init_scheme once did).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from prunebench.compare.fingerprint import FIELD_ROLES, ROLES, config_key, role_values
from prunebench.recipe import Recipe


def _models(annotation: Any) -> list[type[BaseModel]]:
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [m for a in args for m in _models(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        subs = _models(info.annotation)
        if subs:
            for sub in subs:
                out.extend(leaf_paths(sub, f"{prefix}{name}."))
        else:
            out.append(f"{prefix}{name}")
    return sorted(set(out))


PATHS = leaf_paths(Recipe)


def test_every_recipe_field_is_declared():
    undeclared = [p for p in PATHS if p not in FIELD_ROLES]
    assert not undeclared, (
        f"recipe fields without a comparability role: {undeclared}; declare each in "
        "prunebench.compare.fingerprint.FIELD_ROLES (a fingerprint role, or 'ignore:<why>')"
    )
    stale = [p for p in FIELD_ROLES if p not in PATHS]
    assert not stale, f"FIELD_ROLES names fields the recipe no longer has: {stale}"
    for path, role in FIELD_ROLES.items():
        assert role in ROLES or (role.startswith("ignore:") and len(role) > 10), (path, role)


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1 if isinstance(value, int) else value * 0.5 + 0.123
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    if isinstance(value, dict):
        return {**value, "x": 1}
    return "x"  # None


FINGERPRINTED = [p for p, r in FIELD_ROLES.items() if r in ROLES and r != "seed"]


@pytest.mark.parametrize("path", FINGERPRINTED)
def test_every_fingerprinted_field_changes_the_config(path):
    """Changing any declared field changes the configuration key (seeds aside), so two
    different methods or recipes are never one configuration."""
    recipe = Recipe().model_dump(mode="json")
    before = config_key(recipe)
    section, _, rest = path.partition(".")
    if rest:
        recipe[section][rest] = _changed(recipe[section].get(rest))
    else:
        recipe[section] = _changed(recipe.get(section))
    assert config_key(recipe) != before, path
    role = FIELD_ROLES[path]
    assert role_values(recipe, role)[path] == (recipe[section][rest] if rest
                                               else recipe[section])
