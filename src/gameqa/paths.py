"""Where things live: big data in a cache folder outside git (``$GAMEQA_CACHE``, else ``~/.cache/gameqa``), the
configs inside the package (a checkout's ``configs/`` folder links to them, so a wheel has them too)."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIGS = PACKAGE_DIR / "configs"
REPO_ROOT = PACKAGE_DIR.parents[1]  # the checkout, when gameqa runs from one (src/gameqa)


BUNDLED_CLIP = "wesnoth_720p30.mp4"


def bundled_clip() -> Path:
    """The gameplay clip shipped with the package (Battle for Wesnoth, AI vs AI, 1280x720, 4 s)."""
    return PACKAGE_DIR / "assets" / BUNDLED_CLIP


def cache_dir() -> Path:
    return Path(os.environ.get("GAMEQA_CACHE") or Path.home() / ".cache" / "gameqa")


def corpus_dir() -> Path:
    return cache_dir() / "corpus"


def in_checkout() -> bool:
    """gameqa runs from a source checkout (``pip install -e .``), not from an installed wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "src" / "gameqa").is_dir()


def config_file(path: str | os.PathLike) -> Path:
    """A config path as given; one that is no file here but names a bundled config (``configs/eraque/default.toml``,
    as the documentation writes them) is that bundled file, so the same commands work outside a checkout."""
    given = Path(path)
    if given.is_file() or given.is_absolute():
        return given
    parts = given.parts[1:] if given.parts[:1] == ("configs",) else given.parts
    bundled = CONFIGS.joinpath(*parts)
    return bundled if bundled.is_file() else given
