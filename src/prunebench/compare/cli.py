"""CLI commands of the comparison layer (compare, crossval, card), registered on the app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the prunebench CLI."""
