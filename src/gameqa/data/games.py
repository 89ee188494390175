"""Game launch recipes for the gameplay-capture corpus, read from a TOML file (configs/corpus/games.toml).

A recipe is data: the command line, extra environment, files to place in the game's home directory,
a warm-up time, scripted xdotool steps, and scenario variants. Nothing here starts a process.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gameqa.errors import ConfigError, read_config_text

#: Step kinds understood by the capture driver, each mapped to the type of its value.
STEP_KINDS = {
    "wait": (int, float),  # seconds to sleep
    "key": str,  # xdotool key names, space separated ("Return", "ctrl+s", "space space")
    "keydown": str,
    "keyup": str,
    "click": list,  # [x, y] (left button) or [x, y, button]
    "mousemove": list,  # [x, y]
    "type": str,  # literal text
}


@dataclass(frozen=True)
class Step:
    """One scripted input action: ``kind`` is a key of STEP_KINDS, ``value`` its argument."""

    kind: str
    value: Any


@dataclass(frozen=True)
class Variant:
    """One scenario of a game: extra arguments and optional overrides of the game's defaults."""

    name: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    warmup_s: float | None = None
    steps: tuple[Step, ...] | None = None
    live_steps: tuple[Step, ...] | None = None
    segments: int | None = None
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GameRecipe:
    """How to launch one game so that it shows gameplay by itself under Xvfb."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    warmup_s: float = 10.0
    steps: tuple[Step, ...] = ()
    live_steps: tuple[Step, ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    segments: int = 1
    segment_gap_s: float = 1.0
    variants: tuple[Variant, ...] = ()
    description: str = ""

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; ConfigError if the recipe has none by that name."""
        for candidate in self.variants:
            if candidate.name == name:
                return candidate
        raise ConfigError(self.name, f"no variant named {name!r} (have: {', '.join(v.name for v in self.variants)})")

    def resolved(self, variant: Variant | str | None) -> "ResolvedRun":
        """Merge the game's defaults with one variant's overrides."""
        if isinstance(variant, str):
            variant = self.variant(variant)
        if variant is None:
            variant = Variant(name="default")
        return ResolvedRun(
            game=self.name,
            variant=variant.name,
            command=self.command + variant.args,
            env={**self.env, **variant.env},
            warmup_s=self.warmup_s if variant.warmup_s is None else variant.warmup_s,
            steps=self.steps if variant.steps is None else variant.steps,
            live_steps=self.live_steps if variant.live_steps is None else variant.live_steps,
            files={**self.files, **variant.files},
            segments=self.segments if variant.segments is None else variant.segments,
            segment_gap_s=self.segment_gap_s,
        )


@dataclass(frozen=True)
class ResolvedRun:
    """Everything needed to launch one game variant (game defaults merged with the variant)."""

    game: str
    variant: str
    command: tuple[str, ...]
    env: dict[str, str]
    warmup_s: float
    steps: tuple[Step, ...]
    live_steps: tuple[Step, ...]
    files: dict[str, str]
    segments: int
    segment_gap_s: float


@dataclass(frozen=True)
class CaptureSettings:
    """Capture format and frozen-frame policy shared by all games (the ``[capture]`` table)."""

    fps: int = 30
    size: tuple[int, int] = (1280, 720)
    seconds: float = 8.0
    encode_args: tuple[str, ...] = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-pix_fmt", "yuv420p")
    container: str = "mkv"
    max_duplicate_share: float = 0.2
    max_frozen_s: float = 1.0
    duplicate_mad: float = 0.0
    min_fps_ratio: float = 0.95


@dataclass(frozen=True)
class CorpusConfig:
    """A parsed games.toml: capture settings plus the game recipes in file order."""

    capture: CaptureSettings
    games: tuple[GameRecipe, ...]
    path: str | None = None

    def game(self, name: str) -> GameRecipe:
        """The recipe called ``name``; ConfigError if absent."""
        for recipe in self.games:
            if recipe.name == name:
                return recipe
        raise ConfigError(self.path, f"no game named {name!r}")


def _fail(where: str, problem: str, path: str | None) -> ConfigError:
    return ConfigError(path, f"{where}: {problem}")


def _str_list(value: Any, where: str, path: str | None) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _fail(where, "must be a list of strings", path)
    return tuple(value)


def _str_map(value: Any, where: str, path: str | None) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _fail(where, "must be a table of strings", path)
    return dict(value)


def _number(value: Any, where: str, path: str | None, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise _fail(where, f"must be a number >= {minimum}", path)
    return float(value)


def _count(value: Any, where: str, path: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, "must be an integer >= 1", path)
    return value


def _steps(value: Any, where: str, path: str | None) -> tuple[Step, ...]:
    if not isinstance(value, list):
        raise _fail(where, "must be a list of one-key tables like {key = \"Return\"}", path)
    steps = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise _fail(at, f"must be a one-key table, one of: {', '.join(STEP_KINDS)}", path)
        (kind, arg), = item.items()
        if kind not in STEP_KINDS:
            raise _fail(at, f"unknown step {kind!r}; known: {', '.join(STEP_KINDS)}", path)
        if isinstance(arg, bool) or not isinstance(arg, STEP_KINDS[kind]):
            raise _fail(at, f"bad value for {kind!r}: {arg!r}", path)
        if kind in ("click", "mousemove"):
            if len(arg) not in ((2, 3) if kind == "click" else (2,)) or not all(isinstance(n, int) for n in arg):
                raise _fail(at, f"{kind} takes [x, y]" + (" or [x, y, button]" if kind == "click" else ""), path)
        steps.append(Step(kind, tuple(arg) if isinstance(arg, list) else arg))
    return tuple(steps)


_GAME_KEYS = {"command", "env", "warmup_s", "steps", "live_steps", "files", "segments", "segment_gap_s",
              "variants", "description"}
_VARIANT_KEYS = {"name", "args", "env", "warmup_s", "steps", "live_steps", "segments", "files"}


def _variant(table: Any, where: str, path: str | None) -> Variant:
    if not isinstance(table, dict):
        raise _fail(where, "must be a table", path)
    unknown = set(table) - _VARIANT_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}", path)
    name = table.get("name")
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise _fail(where, "needs a 'name' made of letters, digits, '-' and '_'", path)
    return Variant(
        name=name,
        args=_str_list(table.get("args", []), f"{where}.args", path),
        env=_str_map(table.get("env", {}), f"{where}.env", path),
        warmup_s=None if "warmup_s" not in table else _number(table["warmup_s"], f"{where}.warmup_s", path),
        steps=None if "steps" not in table else _steps(table["steps"], f"{where}.steps", path),
        live_steps=None if "live_steps" not in table else _steps(table["live_steps"], f"{where}.live_steps", path),
        segments=None if "segments" not in table else _count(table["segments"], f"{where}.segments", path),
        files=_str_map(table.get("files", {}), f"{where}.files", path),
    )


def parse_game(name: str, table: Any, path: str | None = None) -> GameRecipe:
    """Validate one ``[games.<name>]`` table into a GameRecipe (ConfigError on a bad key or value)."""
    where = f"games.{name}"
    if not isinstance(table, dict):
        raise _fail(where, "must be a table", path)
    unknown = set(table) - _GAME_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}", path)
    if "command" not in table:
        raise _fail(where, "needs a 'command' list", path)
    command = _str_list(table["command"], f"{where}.command", path)
    if not command:
        raise _fail(f"{where}.command", "is empty", path)
    variants = tuple(_variant(v, f"{where}.variants[{i}]", path) for i, v in enumerate(table.get("variants", [])))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise _fail(f"{where}.variants", "variant names must be unique", path)
    files = _str_map(table.get("files", {}), f"{where}.files", path)
    for rel in list(files) + [r for v in variants for r in v.files]:
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            raise _fail(f"{where}.files", f"{rel!r} must be a relative path inside the game's home", path)
    return GameRecipe(
        name=name,
        command=command,
        env=_str_map(table.get("env", {}), f"{where}.env", path),
        warmup_s=_number(table.get("warmup_s", 10.0), f"{where}.warmup_s", path),
        steps=_steps(table.get("steps", []), f"{where}.steps", path),
        live_steps=_steps(table.get("live_steps", []), f"{where}.live_steps", path),
        files=files,
        segments=_count(table.get("segments", 1), f"{where}.segments", path),
        segment_gap_s=_number(table.get("segment_gap_s", 1.0), f"{where}.segment_gap_s", path),
        variants=variants,
        description=str(table.get("description", "")),
    )


def parse_capture(table: Any, path: str | None = None) -> CaptureSettings:
    """Validate the ``[capture]`` table into CaptureSettings."""
    if not isinstance(table, dict):
        raise _fail("capture", "must be a table", path)
    defaults = CaptureSettings()
    known = {"fps", "width", "height", "seconds", "encode_args", "container", "max_duplicate_share",
             "max_frozen_s", "duplicate_mad", "min_fps_ratio"}
    unknown = set(table) - known
    if unknown:
        raise _fail("capture", f"unknown keys {sorted(unknown)}", path)
    share = _number(table.get("max_duplicate_share", defaults.max_duplicate_share), "capture.max_duplicate_share", path)
    ratio = _number(table.get("min_fps_ratio", defaults.min_fps_ratio), "capture.min_fps_ratio", path)
    if share > 1 or ratio > 1:
        raise _fail("capture", "max_duplicate_share and min_fps_ratio must be within [0, 1]", path)
    container = table.get("container", defaults.container)
    if container not in ("mkv", "mp4", "nut"):
        raise _fail("capture.container", "must be one of mkv, mp4, nut", path)
    return CaptureSettings(
        fps=_count(table.get("fps", defaults.fps), "capture.fps", path),
        size=(_count(table.get("width", defaults.size[0]), "capture.width", path),
              _count(table.get("height", defaults.size[1]), "capture.height", path)),
        seconds=_number(table.get("seconds", defaults.seconds), "capture.seconds", path, minimum=0.1),
        encode_args=_str_list(table.get("encode_args", list(defaults.encode_args)), "capture.encode_args", path),
        container=container,
        max_duplicate_share=share,
        max_frozen_s=_number(table.get("max_frozen_s", defaults.max_frozen_s), "capture.max_frozen_s", path),
        duplicate_mad=_number(table.get("duplicate_mad", defaults.duplicate_mad), "capture.duplicate_mad", path),
        min_fps_ratio=ratio,
    )


def load_corpus_config(path: str | os.PathLike) -> CorpusConfig:
    """Read and validate a games.toml file (a ``configs/...`` path that is no file here: the bundled one)."""
    from gameqa.paths import config_file

    path = os.fspath(config_file(path))
    text = read_config_text(path, "corpus config")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, f"not valid TOML: {err}") from None
    unknown = set(data) - {"capture", "games"}
    if unknown:
        raise ConfigError(path, f"unknown top-level keys {sorted(unknown)}")
    games = data.get("games", {})
    if not isinstance(games, dict) or not games:
        raise ConfigError(path, "needs at least one [games.<name>] table")
    return CorpusConfig(
        capture=parse_capture(data.get("capture", {}), path),
        games=tuple(parse_game(name, table, path) for name, table in games.items()),
        path=path,
    )
