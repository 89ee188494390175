"""Error output shared by the commands: one line per problem on stderr, where the user's text (a path, a
message) is never read as rich markup, so ``clip[hq].mp4`` is printed as it is named."""
from __future__ import annotations

from typing import NoReturn, Sequence

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)


def error_line(message: object, console: Console = err) -> None:
    """``error: <message>`` on stderr."""
    console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


def fail(message: object, code: int = 1) -> NoReturn:
    """``error: <message>`` on stderr, then exit with ``code``."""
    error_line(message)
    raise typer.Exit(code)


def exit_on_failures(failures: Sequence[str], total: int) -> None:
    """A batch's failed inputs, one line each after a count, then exit 1; nothing if every input went through."""
    if not failures:
        return
    err.print(f"[bold red]{len(failures)} of {total} inputs failed:[/]")
    for line in failures:
        err.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
