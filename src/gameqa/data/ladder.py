"""The distortion ladder: which encodes every corpus source gets, read from a TOML config."""
from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from gameqa.errors import ConfigError, read_config_text


DEFAULT_RATE_ARGS = ("-b:v", "{kbps}k", "-maxrate", "{kbps}k", "-bufsize", "{bufsize}k")


@dataclass(frozen=True)
class Codec:
    """An encoder and its options. ``rate_args`` is the rate control, with ``{kbps}`` and ``{bufsize}``
    (twice the rate) filled in per rung; empty means ``DEFAULT_RATE_ARGS`` (capped VBR)."""

    name: str
    encoder: str
    args: tuple[str, ...] = ()
    rate_args: tuple[str, ...] = ()

    def rate_control(self, kbps: float) -> list[str]:
        template = self.rate_args or DEFAULT_RATE_ARGS
        return [a.format(kbps=f"{kbps:g}", bufsize=f"{2 * kbps:g}") for a in template]


@dataclass(frozen=True)
class Rung:
    height: int
    kbps: float
    fps: float | None = None


@dataclass(frozen=True)
class EncodeSpec:
    """One encode of one source: codec settings and a rung."""

    codec: Codec
    rung: Rung
    seconds: float
    gop_seconds: float

    @property
    def spec_id(self) -> str:
        """Readable and content-addressed: changing any setting changes the id (and so the cache path)."""
        settings = asdict(self)
        if not self.codec.rate_args:  # the default rate control: ids made before rate_args existed stay valid
            del settings["codec"]["rate_args"]
        blob = json.dumps(settings, sort_keys=True).encode()
        digest = hashlib.sha1(blob).hexdigest()[:8]
        fps = f"_{self.rung.fps:g}fps" if self.rung.fps else ""
        return f"{self.codec.name}_{self.rung.height}p_{self.rung.kbps:g}k{fps}_{digest}"


@dataclass(frozen=True)
class Ladder:
    codecs: tuple[Codec, ...]
    rungs: tuple[Rung, ...]
    seconds: float = 6.0
    gop_seconds: float = 2.0
    codecs_per_source: int = 3
    source: str = field(default="", compare=False)

    def codecs_for(self, source_id: str) -> list[Codec]:
        """``codecs_per_source`` codecs, consecutive in the ladder's order from a start fixed by the source's id
        (a hash), so that adding or removing other sources never changes this one's encodes."""
        n = len(self.codecs)
        k = min(self.codecs_per_source, n)
        start = int(hashlib.sha1(source_id.encode()).hexdigest()[:8], 16) % n
        return [self.codecs[(start + i) % n] for i in range(k)]

    def specs_for(self, source_id: str, codec_names: Sequence[str] | None = None) -> list[EncodeSpec]:
        """The encodes of one source, every rung: of ``codec_names`` (those still in the ladder: the codecs an
        earlier build gave it) or else of ``codecs_for(source_id)``."""
        chosen = [c for c in self.codecs if c.name in codec_names] if codec_names else []
        chosen = chosen or self.codecs_for(source_id)
        return [EncodeSpec(c, r, self.seconds, self.gop_seconds) for c in chosen for r in self.rungs]


_TOP = {"seconds", "gop_seconds", "codecs_per_source", "codec", "rung"}
_CODEC = {"name", "encoder", "args", "rate_args"}
_RUNG = {"height", "kbps", "fps"}


def _check_keys(path: Path, where: str, table: dict, allowed: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(path, f"unknown key(s) {sorted(unknown)} in {where}")


def _number(path: Path, where: str, value, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise ConfigError(path, f"{where} must be a positive number, not {value!r}")
    return float(value)


def _whole(path: Path, where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(path, f"{where} must be a whole number >= 1, not {value!r}")
    return value


def load_ladder(path: str | Path) -> Ladder:
    """Read and check a ladder config; every mistake is a one-line ConfigError naming the file. A ``configs/...``
    path that is no file here is the bundled config (``gameqa.paths.config_file``)."""
    from gameqa.paths import config_file

    path = config_file(path)
    text = read_config_text(path, "ladder config")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    _check_keys(path, "the top level", data, _TOP)
    codecs = []
    for i, c in enumerate(data.get("codec", [])):
        _check_keys(path, f"codec #{i + 1}", c, _CODEC)
        if not isinstance(c.get("name"), str) or not isinstance(c.get("encoder"), str):
            raise ConfigError(path, f"codec #{i + 1} needs string 'name' and 'encoder'")
        for key in ("args", "rate_args"):
            value = c.get(key, [])
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError(path, f"codec {c['name']!r}: {key!r} must be a list of strings")
        codecs.append(Codec(c["name"], c["encoder"], tuple(c.get("args", [])), tuple(c.get("rate_args", []))))
    rungs = []
    for i, r in enumerate(data.get("rung", [])):
        _check_keys(path, f"rung #{i + 1}", r, _RUNG)
        height = int(_number(path, f"rung #{i + 1} height", r.get("height")))
        kbps = _number(path, f"rung #{i + 1} kbps", r.get("kbps"))
        fps = _number(path, f"rung #{i + 1} fps", r["fps"]) if "fps" in r else None
        rungs.append(Rung(height, kbps, fps))
    if not codecs or not rungs:
        raise ConfigError(path, "a ladder needs at least one [[codec]] and one [[rung]]")
    if len({c.name for c in codecs}) != len(codecs):
        raise ConfigError(path, "codec names must be unique")
    return Ladder(
        codecs=tuple(codecs),
        rungs=tuple(rungs),
        seconds=_number(path, "seconds", data.get("seconds", 6.0)),
        gop_seconds=_number(path, "gop_seconds", data.get("gop_seconds", 2.0)),
        codecs_per_source=_whole(path, "codecs_per_source", data.get("codecs_per_source", 3)),
        source=str(path),
    )
