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


class TrainingDiverged(Exception):  # noqa: N818 - a run outcome, not a user error
    """Training produced a non-finite loss (or weights): the run stops and is recorded as
    ``diverged`` (never ``done``). Not a :class:`PrunebenchError`: the input was valid.

    ``phase`` (pretrain | prune | retrain), ``epoch`` (1-based, the epoch that diverged),
    ``reason`` (one line) and ``history`` (the metrics of the epochs finished before it).
    """

    def __init__(self, phase: str, epoch: int, reason: str,
                 history: list[dict[str, object]] | None = None) -> None:
        self.phase, self.epoch, self.reason = phase, epoch, reason
        self.history = list(history or [])
        super().__init__(f"{reason} at {phase} epoch {epoch}")

    def to_dict(self) -> dict[str, object]:
        return {"phase": self.phase, "epoch": self.epoch, "reason": self.reason}


class NonFiniteMeasurement(ArithmeticError):
    """A measurement of the model (the input-output Jacobian of the JSV, ...) came out
    non-finite although the weights are finite (they have blown up): training calls it
    divergence (:class:`TrainingDiverged`), never a failed run. ``what`` names it."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"non-finite {what}")


class RunsIncomplete(PrunebenchError):
    """Some cells of a grid or study diverged or failed (the others finished): exit 4."""

    exit_code = 4
