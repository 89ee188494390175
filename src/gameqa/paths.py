"""Where big data lives: a cache folder outside git (``$GAMEQA_CACHE``, else ``~/.cache/gameqa``)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("GAMEQA_CACHE") or Path.home() / ".cache" / "gameqa")


def corpus_dir() -> Path:
    return cache_dir() / "corpus"
