"""Merge corpus folders into one (``gameqa corpus merge``): links, not copies, and one manifest.

A game is tried in its own corpus folder first (``configs/corpus/candidates.toml``), so that the main corpus,
its splits and every figure measured on it stay as they are. To train or test on both, ``merge_corpora`` makes a
folder whose ``clips/`` and ``sources/`` entries are symbolic links into the input folders and whose
``manifests/corpus.csv`` holds every row of theirs. Splits are kept: they are fixed per game by a hash of the
content id (``gameqa.data.manifest.assign_splits``), so the same game gets the same split in any folder.
Everything is checked before anything is written; a clip id or a linked name that two inputs claim for
different files is an error naming both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from gameqa.errors import ConfigError
from gameqa.data.manifest import corpus_manifest, read_manifest, write_manifest

__all__ = ["merge_corpora"]


def _entry(root: Path, rel: str, manifest: Path, column: str) -> tuple[str, Path]:
    """``clips/X/...`` -> (``clips/X``, ``root/clips/X``): the top entry a row's path lives under."""
    parts = Path(rel).parts
    if len(parts) < 2 or parts[0] not in ("clips", "sources"):
        raise ConfigError(manifest, f"{column} {rel!r} is not under clips/ or sources/")
    return f"{parts[0]}/{parts[1]}", (root / parts[0] / parts[1]).resolve()


def merge_corpora(roots: Sequence[str | os.PathLike], out: str | os.PathLike) -> tuple[Path, int]:
    """Link the corpus folders ``roots`` into ``out``; returns (the merged manifest, its row count)."""
    out = Path(out)
    if len(roots) < 2:
        raise ConfigError(None, "name at least two corpus folders to merge")
    if out.exists() and not out.is_dir():
        raise ConfigError(out, "is a file; --out names the merged folder")
    rows, owner, links = [], {}, {}
    for root in map(Path, roots):
        manifest = corpus_manifest(root)
        if root.resolve() == out.resolve():
            raise ConfigError(root, "the merged folder cannot be one of its inputs")
        for row in read_manifest(manifest, root=root, check_files=True):
            if row["clip_id"] in owner:
                raise ConfigError(manifest, f"clip {row['clip_id']} is also in {owner[row['clip_id']]}")
            owner[row["clip_id"]] = manifest
            if not os.path.isfile(row["abs_source_path"]):  # a merged corpus would link a missing source
                raise ConfigError(manifest, f"source file {row['abs_source_path']} of clip {row['clip_id']} is missing")
            for column in ("path", "source_path"):
                name, target = _entry(root, row[column], manifest, column)
                if links.setdefault(name, target) != target:
                    raise ConfigError(manifest, f"{name} is {target} here but {links[name]} in an earlier folder")
            rows.append({k: v for k, v in row.items() if not k.startswith("abs_")})
    for name in links:  # never replace a real file or folder of the output with a link
        dest = out / name
        if dest.exists() and not dest.is_symlink():
            raise ConfigError(dest, "exists and is not a link: merge into an empty or earlier merged folder")
    for name, target in sorted(links.items()):
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            if dest.resolve() == target:
                continue
            dest.unlink()
        dest.symlink_to(target, target_is_directory=target.is_dir())
    return write_manifest(rows, out / "manifests" / "corpus.csv"), len(rows)
