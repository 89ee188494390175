"""Encodes outside the corpus ladder: constant-quality rate control (CRF/CQ), other presets, sizes and keyframe
intervals, of one split's sources of a corpus, labelled as the corpus is (VMAF against the source, mapped to 1-5).

The corpus ladder is capped VBR at fixed rates with real-time presets; a model or head fitted on it is checked here
on encodes it was not fitted on. Every clip of the set is in the test split. The grid is a TOML file
(``configs/corpus/offgrid.toml``); the set is a folder::

    sources/<game>/<file>                            links to (or copies of) the sources used
    clips/<source_id>/<setting>_<height>p_q<value>.<ext>  encoded clips, with their labels beside them (.json)
    manifests/corpus.csv                             the manifest: corpus columns, split test, kbps = measured

A clip counts as done only when its labels exist; both files are written atomically, so a build resumes.
"""
from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from gameqa.data.corpus import build_all, write_labels
from gameqa.data.encode import CONTAINER, encode_atomically, encoded_size
from gameqa.data.labels import ClipLabels, measure_labels
from gameqa.data.manifest import manifest_root, read_manifest, write_manifest
from gameqa.errors import ConfigError, GameQAError, read_config_text
from gameqa.ffmpeg import available_encoders

_TOP = {"seconds", "setting"}
_SETTING = {"name", "codec", "encoder", "args", "quality", "values", "heights", "gop_seconds"}


@dataclass(frozen=True)
class Setting:
    """One encoder setting swept over quality values and heights; ``quality`` holds ``{q}`` for the value."""

    name: str
    codec: str
    encoder: str
    args: tuple[str, ...]
    quality: tuple[str, ...]
    values: tuple[float, ...]
    heights: tuple[int, ...]
    gop_seconds: float


@dataclass(frozen=True)
class Grid:
    settings: tuple[Setting, ...]
    seconds: float
    source: str = ""


@dataclass(frozen=True)
class Encode:
    setting: Setting
    height: int
    value: float

    @property
    def name(self) -> str:
        return f"{self.setting.name}_{self.height}p_q{self.value:g}"

    def args(self) -> list[str]:
        return [*self.setting.args, *(a.format(q=f"{self.value:g}") for a in self.setting.quality)]


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid config; every mistake is a one-line ConfigError naming the file."""
    from gameqa.paths import config_file

    path = config_file(path)
    try:
        data = tomllib.loads(read_config_text(path, "off-ladder grid"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    if set(data) - _TOP:
        raise ConfigError(path, f"unknown key(s) {sorted(set(data) - _TOP)} at the top level")
    seconds = data.get("seconds", 5.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigError(path, f"seconds must be a positive number, not {seconds!r}")
    settings, names = [], set()
    for i, s in enumerate(data.get("setting", []), start=1):
        where = f"setting #{i}"
        if set(s) - _SETTING:
            raise ConfigError(path, f"unknown key(s) {sorted(set(s) - _SETTING)} in {where}")
        for key in ("name", "codec", "encoder"):
            if not isinstance(s.get(key), str) or not s[key]:
                raise ConfigError(path, f"{where} needs a string {key!r}")
        if s["name"] in names or not s["name"].replace("-", "").isalnum():
            raise ConfigError(path, f"{where}: name {s['name']!r} must be unique, letters, digits and dashes")
        names.add(s["name"])
        for key in ("args", "quality"):
            value = s.get(key, [])
            if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
                raise ConfigError(path, f"setting {s['name']!r}: {key!r} must be a list of strings")
        if not any("{q}" in a for a in s.get("quality", [])):
            raise ConfigError(path, f"setting {s['name']!r}: 'quality' must hold {{q}} (the swept value)")
        values, heights = s.get("values"), s.get("heights")
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            raise ConfigError(path, f"setting {s['name']!r}: 'values' must be a list of numbers")
        if (not isinstance(heights, list) or not heights
                or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 16 for h in heights)):
            raise ConfigError(path, f"setting {s['name']!r}: 'heights' must be a list of whole numbers >= 16")
        gop = s.get("gop_seconds", 2.0)
        if isinstance(gop, bool) or not isinstance(gop, (int, float)) or gop <= 0:
            raise ConfigError(path, f"setting {s['name']!r}: gop_seconds must be a positive number, not {gop!r}")
        settings.append(Setting(s["name"], s["codec"], s["encoder"], tuple(s.get("args", [])), tuple(s["quality"]),
                                tuple(float(v) for v in values), tuple(heights), float(gop)))
    if not settings:
        raise ConfigError(path, "no [[setting]] tables: nothing to encode")
    return Grid(tuple(settings), float(seconds), str(path))


def _link(src: Path, dst: Path) -> None:
    """``dst`` the same file as ``src``: a hard link where the filesystem allows, else a copy (atomically)."""
    if dst.is_file():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".link-{dst.name}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _build_one(out: Path, row: dict, encode: Encode, seconds: float) -> tuple[Path, ClipLabels]:
    """Encode (unless done) and label (unless done) one clip of one source."""
    folder = out / "clips" / row["source_id"]
    clip = folder / f"{encode.name}{CONTAINER.get(encode.setting.encoder, '.mkv')}"
    labels_path = folder / f"{encode.name}.json"
    if labels_path.is_file():
        return clip, ClipLabels.from_json(labels_path.read_text())
    source = row["abs_source_path"]
    w, h, fps = row["display_width"], row["display_height"], float(row["source_fps"])
    if not clip.is_file():
        size = encoded_size(w, h, encode.height)
        encode_atomically(source, lambda tmp: [
            "-y", "-i", source, "-t", f"{seconds:g}", "-an", "-vf", f"scale={size[0]}:{size[1]}:flags=bicubic",
            "-pix_fmt", "yuv420p", "-c:v", encode.setting.encoder, *encode.args(),
            "-g", str(max(1, round(encode.setting.gop_seconds * fps))), tmp], clip, timeout=900)
    labels = measure_labels(str(clip), source, (w, h), fps, seconds)
    write_labels(labels, labels_path)
    return clip, labels


def build_offgrid(manifest: str | Path, out: str | Path, grid: Grid, *, split: str = "test",
                  groups: tuple[str, ...] = ("game",), workers: int = 2,
                  log: Callable[[str], None] = print,
                  progress: Optional[Callable[[int, int], None]] = None) -> tuple[Path, list[dict], list[str]]:
    """Every grid encode of every source of ``split`` (rows of ``groups``) of ``manifest``, labelled; returns
    (the set's manifest, its rows, failures). Resumable; a clip that fails is reported and the others go on."""
    from gameqa.media import probe_video

    out = Path(out)
    rows = read_manifest(manifest, root=manifest_root(manifest))
    sources: dict[str, dict] = {}
    for r in rows:
        if r["split"] == split and r["group"] in groups and r["source_id"] not in sources:
            sources[r["source_id"]] = r
    if not sources:
        raise ConfigError(manifest, f"no sources of split {split!r} in group(s) {', '.join(groups)}")
    missing = sorted(e for e in {s.encoder for s in grid.settings} if e not in available_encoders())
    if missing:
        raise GameQAError(grid.source or None, f"this ffmpeg lacks the encoder(s) {', '.join(missing)}")
    for stale in (out / "clips").glob("*/.*-*"):  # temp files of a build that was killed
        stale.unlink(missing_ok=True)
    jobs, failures = [], []
    for source_id, r in sources.items():
        src = Path(r["abs_source_path"])
        try:
            info = probe_video(src)
        except GameQAError as exc:
            failures.append(str(exc))
            log(f"failed {exc}")
            continue
        if info.duration + 1e-6 < grid.seconds:
            failures.append(f"{src}: {info.duration:.2f} s is shorter than the grid's {grid.seconds:g} s")
            log(f"failed {failures[-1]}")
            continue
        local = out / "sources" / r["game"] / src.name
        _link(src, local)
        base = {**r, "abs_source_path": str(local), "source_path": str(local.relative_to(out)), "source_fps": info.fps}
        jobs += [(base, Encode(s, h, v)) for s in grid.settings for h in s.heights for v in s.values]
    built, failed = build_all(jobs, lambda base, enc: _row(out, base, enc, *_build_one(out, base, enc, grid.seconds),
                                                          grid.seconds),
                              lambda base, enc: f"{base['abs_source_path']} [{enc.name}]", workers, log, progress)
    failures += failed
    path = out / "manifests" / "corpus.csv"
    if built:
        write_manifest(built, path)
    return path, built, failures


def _row(out: Path, base: dict, enc: Encode, clip: Path, labels: ClipLabels, seconds: float) -> dict:
    w, h = encoded_size(base["display_width"], base["display_height"], enc.height)
    kbps = clip.stat().st_size * 8 / 1000 / seconds
    keep = ("source_id", "game", "content", "group", "display_height", "display_width", "source_path")
    return {**{k: base[k] for k in keep},
            "clip_id": f"{base['source_id']}-{enc.name}", "codec": enc.setting.codec, "encoder": enc.setting.encoder,
            "encoder_args": " ".join(enc.args()), "height": h, "width": w, "kbps": kbps, "actual_kbps": kbps,
            "fps": base["source_fps"], "seconds": seconds, "path": str(clip.relative_to(out)),
            "vmaf": labels.vmaf, "vmaf_p5": labels.vmaf_p5, "psnr_y": labels.psnr_y, "ssim": labels.ssim,
            "mos": labels.mos, "frames": labels.frames, "split": "test"}
