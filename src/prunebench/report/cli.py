"""CLI commands of the report layer, registered on the main app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the prunebench CLI."""
