"""Output shared by the commands: their consoles, one error line per problem on stderr, and tables, where the
user's text (a path, a message, a name) is never read as rich markup, so ``clip[hq].mp4`` is printed as it is
named. A command that styles a word passes rich ``Text`` (``Text.assemble(("warning:", "yellow"), " ...")``)."""
from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NoReturn, Sequence

import rich.table
import typer
from rich.console import Console
from rich.text import Text


def console(stderr: bool = False, width: int | None = None) -> Console:
    """A console that prints strings as they are (no markup)."""
    return Console(stderr=stderr, width=width, markup=False)


err = console(stderr=True)


def error_line(message: object) -> None:
    """``error: <message>`` on stderr."""
    err.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)


def log_line(message: str) -> None:
    """A progress or log line of a long command, on stderr, as it is."""
    err.print(message, highlight=False, soft_wrap=True)


def fail(message: object, code: int = 1) -> NoReturn:
    """``error: <message>`` on stderr, then exit with ``code``."""
    error_line(message)
    raise typer.Exit(code)


def exit_on_terminate() -> None:
    """Make SIGTERM (``kill``, ``timeout``, a job scheduler) and SIGHUP end a command as Ctrl-C does, with exit
    status 128 + the signal: cleanup runs, so the games, virtual displays and recorders a capture starts in their
    own sessions are stopped and temporary files removed, where the default action would leave them running."""
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


@contextmanager
def counting_bar(title: str) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on stderr, moved by calls of ``update(done, total)`` (an evaluation's clips);
    lines printed on ``err`` meanwhile go above it. When stderr is no terminal (a log) there is no bar: a line
    ``title: done/total`` each time another tenth is done."""
    with counting_bars(title) as (update,):
        yield update


@contextmanager
def counting_bars(*titles: str) -> Iterator[list[Callable[[int, int], None]]]:
    """One ``counting_bar`` per title, shown together (one live display)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if not err.is_terminal:
        def log_tenths(title: str) -> Callable[[int, int], None]:
            def update(done: int, total: int) -> None:
                if total and done * 10 // total != (done - 1) * 10 // total:
                    log_line(f"{title}: {done}/{total}")
            return update

        yield [log_tenths(t) for t in titles]
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as progress:
        tasks = [progress.add_task(escape(t), total=None) for t in titles]
        yield [lambda done, total, task=task: progress.update(task, completed=done, total=total) for task in tasks]


SERVER_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's

# help texts of the scoring options that `score`, `batch` and `bench batch` share
MODEL_HELP = "Registered model name or model folder."
SAMPLE_HELP = "Frame sampling: all, every:N, fps:F, uniform:K."
BATCH_SIZE_HELP = "Frames per model batch."
POOLING_HELP = "mean, median, worst, worst:P (default: model's)."


def check_choice(option: str, value: str, choices: Sequence[str]) -> None:
    """Exit 2 (a usage error) with ``error: --option 'value' is not one of ...`` unless ``value`` is a choice."""
    if value not in choices:
        fail(f"{option} {value!r} is not one of {', '.join(choices)}", 2)


def check_png(path: object) -> None:
    """Exit 1 with one line unless ``path`` (a plot to write; None: no plot) is named .png, in a folder that
    exists, and is no folder itself; checked before any work, so a long job does not fail at its end."""
    if path is None or path == "":
        return
    text = str(path)
    if not text.lower().endswith(".png"):
        fail(f"{text}: the plot is a PNG file (name it .png)")
    if not Path(text).parent.is_dir():
        fail(f"{text}: folder {Path(text).parent} does not exist")
    if Path(text).is_dir():
        fail(f"{text}: is a folder; give a .png file name")


def exit_on_failures(failures: Sequence[str], total: int | None = None) -> None:
    """A batch's failed inputs, one line each (after a count out of ``total``, if given), then exit 1; nothing if
    every input went through."""
    if not failures:
        return
    if total is not None:
        err.print(Text(f"{len(failures)} of {total} inputs failed:", style="bold red"))
    for line in failures:
        err.print(f"  {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _plain(value):
    return Text(value) if isinstance(value, str) else value


class Table(rich.table.Table):
    """A rich table whose strings (title, headers, cells) are shown as they are; a styled cell is given as
    ``rich.text.Text.from_markup(...)``."""

    def __init__(self, *headers, title=None, **options):
        super().__init__(*headers, title=_plain(title), **options)

    def add_column(self, header="", *args, **options) -> None:
        super().add_column(_plain(header), *args, **options)

    def add_row(self, *cells, **options) -> None:
        super().add_row(*(_plain(c) for c in cells), **options)
