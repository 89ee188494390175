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
