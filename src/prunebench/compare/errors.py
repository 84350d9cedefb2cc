"""The comparison layer's error type (the CLI maps it to exit code 2 like every other)."""

from __future__ import annotations

from prunebench.errors import PrunebenchError


class CompareError(PrunebenchError):
    """A comparison, calibration, cross-validation or card request cannot be carried out."""
