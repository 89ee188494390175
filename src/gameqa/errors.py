"""Errors a user can cause. Each prints as one line: the file, then the problem."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


class GameQAError(Exception):
    """A user-facing error about one input: ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(str(self))

    def __str__(self) -> str:
        return self.problem if self.path is None else f"{self.path}: {self.problem}"


class MediaError(GameQAError):
    """A file that cannot be opened, decoded or sampled."""


class ModelError(GameQAError):
    """An unknown model, a missing weight file, or inputs the model cannot take."""


class ConfigError(GameQAError):
    """A config or manifest with a bad key, type or value."""


def read_config_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path``; a ConfigError naming the file and ``what`` it is (``"manifest"``) otherwise."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"the {what} is not UTF-8 text (byte {exc.start})") from None


@contextmanager
def naming(path: str | os.PathLike | None) -> Iterator[None]:
    """Inside, an error that names no file (a model's complaint about a frame) is raised again naming ``path``,
    the input it came from; errors that name a file, and everything when ``path`` is empty, pass unchanged."""
    try:
        yield
    except GameQAError as exc:
        if exc.path is None and path:
            raise type(exc)(path, exc.problem) from exc
        raise
