"""The corpus manifest: one row per distorted clip, with its settings, labels and fixed splits.

Splits are content-disjoint: every clip of a content (one game session, whose segments are the sources) lands
in the same split (train / val / test), chosen by a hash of the content id within each game, so no source and
no session is in two splits, and adding sources never moves old ones. The second split holds out
whole games: ``logo_split(rows, game)`` puts that game's clips in test and every other game's in train/val.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from gameqa.csvio import csv_text
from gameqa.errors import ConfigError, read_config_text
from gameqa.sinks import write_atomic

COLUMNS = [
    "clip_id", "source_id", "game", "content", "group", "codec", "encoder", "encoder_args", "height", "width", "display_height",
    "display_width", "kbps", "actual_kbps", "fps", "seconds", "path", "source_path", "vmaf", "vmaf_p5", "psnr_y", "ssim", "mos", "frames", "split",
]
NUMERIC = {"height": int, "width": int, "display_height": int, "display_width": int, "kbps": float,
           "actual_kbps": float, "fps": float, "seconds": float, "vmaf": float,
           "vmaf_p5": float, "psnr_y": float, "ssim": float, "mos": float, "frames": int}
SPLITS = ("train", "val", "test")
SOFT_GROUP = "soft"  # clips of train contents re-rendered soft (gameqa.data.soften): always train, never a test
SYNTH_GROUP = "synth"  # clips of synthetic scroller scenes (gameqa.data.synth): always train, never a test


def _rank(content_id: str) -> str:
    return hashlib.sha1(f"gameqa-split:{content_id}".encode()).hexdigest()


def assign_splits(contents_by_game: dict[str, list[str]], val: float = 0.15, test: float = 0.15) -> dict[str, str]:
    """Content id -> split, per game, by hash order: the first ``test`` share is test, the next ``val`` share val."""
    out = {}
    for game, ids in contents_by_game.items():
        ordered = sorted(set(ids), key=_rank)
        n = len(ordered)
        n_test = max(1, round(n * test)) if n >= 3 else 0
        n_val = max(1, round(n * val)) if n >= 3 else 0
        for i, sid in enumerate(ordered):
            out[sid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def logo_split(rows: list[dict], game: str, source: str | Path | None = None) -> dict[str, list[dict]]:
    """Leave-one-game-out: ``game``'s clips are test; the others keep their train/val assignment (test -> train).

    Clips made from the held-out game's own sources (group ``soft``: ``gameqa corpus soften``) are in no split."""
    if not any(r["game"] == game for r in rows):
        games = ", ".join(sorted({r["game"] for r in rows}))
        raise ConfigError(source, f"no clips of game {game!r} in the manifest (its games: {games})")
    out = {"train": [], "val": [], "test": []}
    for r in rows:
        if r["game"] == game and r["group"] == SOFT_GROUP:
            continue
        if r["game"] == game:
            out["test"].append(r)
        else:
            out["val" if r["split"] == "val" else "train"].append(r)
    return out


def write_manifest(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as CSV in one step (temp file, then rename)."""
    path = Path(path)
    ordered = sorted(rows, key=lambda r: (r["game"], r["content"], r["source_id"], r["clip_id"]))
    text = csv_text(COLUMNS, ({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in ordered),
                    ignore_extra=True)
    write_atomic(text, str(path))
    return path


def read_manifest(path: str | Path, root: str | Path | None = None, check_files: bool = False) -> list[dict]:
    """Read and check a manifest; ``root`` resolves relative clip paths; errors name the file and row."""
    path = Path(path)
    text = read_config_text(path, "manifest")
    reader = csv.DictReader(io.StringIO(text))
    missing = set(COLUMNS) - set(reader.fieldnames or [])
    if missing:
        raise ConfigError(path, f"missing columns {sorted(missing)}")
    rows = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(reader, start=2):
        row = dict(raw)
        if row["clip_id"] in first_line:  # evaluations key by clip id: a second row would silently replace the first
            raise ConfigError(path, f"line {lineno}: clip_id {row['clip_id']!r} is also on line "
                                    f"{first_line[row['clip_id']]}")
        first_line[row["clip_id"]] = lineno
        for key, conv in NUMERIC.items():
            try:
                row[key] = conv(float(row[key])) if conv is int else conv(row[key])
            except (TypeError, ValueError):
                raise ConfigError(path, f"line {lineno}: {key} is not a number ({row[key]!r})") from None
        if not 1.0 <= row["mos"] <= 5.0:
            raise ConfigError(path, f"line {lineno}: mos {row['mos']} is outside 1-5")
        if row["split"] not in SPLITS:
            raise ConfigError(path, f"line {lineno}: split {row['split']!r} is not one of {SPLITS}")
        if root is not None:
            row["abs_path"] = str(Path(root) / row["path"])
            row["abs_source_path"] = str(Path(root) / row["source_path"])
            if check_files and not os.path.isfile(row["abs_path"]):
                raise ConfigError(path, f"line {lineno}: clip file {row['abs_path']} is missing")
        rows.append(row)
    if not rows:
        raise ConfigError(path, "manifest has no rows")
    return rows


def corpus_manifest(root: str | Path) -> Path:
    """``root/manifests/corpus.csv``, the manifest of a corpus folder (ConfigError if it has none yet)."""
    manifest = Path(root) / "manifests" / "corpus.csv"
    if not manifest.is_file():
        raise ConfigError(manifest, "no manifest here: build the corpus first (gameqa corpus build --root ...)")
    return manifest


def manifest_root(manifest: str | Path, root: str | Path | None = None) -> Path:
    """The folder a manifest's relative clip paths resolve against: ``root`` when given, else the corpus folder
    (the manifest's own folder, or the one above it when the manifest sits in ``manifests/``)."""
    if root:
        return Path(root)
    manifest = Path(manifest)
    return manifest.parent.parent if manifest.parent.name == "manifests" else manifest.parent


def split_rows(rows: list[dict]) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in rows:
        out[r["split"]].append(r)
    return dict(out)


def source_rows(rows: list[dict], manifest: str | Path, what: str) -> list[dict]:
    """The first row of each source in ``rows`` (in order), once its lossless capture is known to exist; a
    missing capture is a ConfigError on ``manifest`` that says what needed it (``what``)."""
    out, seen = [], set()
    for row in rows:
        if row["source_id"] in seen:
            continue
        seen.add(row["source_id"])
        if not os.path.isfile(row["abs_source_path"]):
            raise ConfigError(manifest, f"{what}: source file {row['abs_source_path']} is missing")
        out.append(row)
    return out
