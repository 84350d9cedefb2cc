"""One project error type with subclasses; the CLI maps every one to exit code 2.

Each error is raised with the field, the bad value and what is allowed, so the message
fits on one line and tells the user what to change.
"""

from __future__ import annotations


class PrunebenchError(Exception):
    """Base class of every error prunebench raises on purpose (bad input, missing data)."""

    exit_code = 2


class RecipeError(PrunebenchError):
    """A recipe (or a --set override) is invalid."""


class ScheduleError(RecipeError):
    """An LR schedule string cannot be parsed."""


class PatternError(RecipeError):
    """A layer-ratio pattern string is invalid or matches no layer."""


class RegistryError(PrunebenchError):
    """A name is not registered (model, dataset, criterion, study)."""


class DataError(PrunebenchError):
    """A dataset cannot be found, verified or parsed."""


class PruningError(PrunebenchError):
    """A pruning request cannot be carried out (illegal layer, empty layer)."""


class StoreError(PrunebenchError):
    """The run store is missing a run or holds an inconsistent one."""
