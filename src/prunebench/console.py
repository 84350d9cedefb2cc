"""The one way a command reports a user error: ``error: <message>`` on stderr, exit code
of the error. The message is printed as text, never as rich markup: a bad value such as
``'[/x]'`` or ``'runs[red]'`` is shown as given (as markup it crashed rich or lost
characters)."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from prunebench.errors import PrunebenchError

err_console = Console(stderr=True)


def fail(exc: PrunebenchError) -> NoReturn:
    """Print ``exc`` as one ``error:`` line and exit with its exit code."""
    err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=exc.exit_code)
