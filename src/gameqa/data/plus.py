"""The training cache beyond the corpus: the candidate games joined to it, then the soft and JPEG-blocked training
contents, merged into the folder the leave-one-game-out runs of docs/models/eraque.md train on.

Folders (beside the corpus, in the cache): ``corpus-plus`` (corpus + candidates, links), ``corpus-soft`` (blur and
half-resolution sources of every train content), ``corpus-jpeg`` (JPEG round-trip sources of every train content)
and ``corpus-plus-sj`` (all of them, links). Every step is resumable, so a rerun finishes what an earlier one left.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from gameqa.data.ladder import Ladder
from gameqa.data.merge import merge_corpora
from gameqa.data.soften import DEFAULT_KINDS, soften_corpus

PLUS_FOLDERS = {"plus": "corpus-plus", "soft": "corpus-soft", "jpeg": "corpus-jpeg", "plus_sj": "corpus-plus-sj"}


def build_plus_folders(corpus: str | os.PathLike, candidates: str | os.PathLike, out: str | os.PathLike,
                       ladder: Ladder, *, workers: int = 2, log: Callable[[str], None] = print,
                       progress: Optional[Callable[[int, int], None]] = None) -> tuple[dict[str, Path], list[str]]:
    """Merge ``corpus`` and ``candidates``, soften the merged train contents (blur/half, then JPEG) and merge all
    into ``out``'s folders (``PLUS_FOLDERS``). Returns (the folders, the clips that failed: the others are in)."""
    out = Path(out)
    folders = {key: out / name for key, name in PLUS_FOLDERS.items()}
    merge_corpora([corpus, candidates], folders["plus"])
    log(f"merged {corpus} and {candidates} into {folders['plus']}")
    failures: list[str] = []
    for key, kinds in (("soft", DEFAULT_KINDS), ("jpeg", ("jpeg",))):
        _, rows, failed = soften_corpus(folders["plus"], folders[key], ladder, kinds=kinds, workers=workers,
                                        log=log, progress=progress)
        log(f"{len(rows)} {'/'.join(kinds)} clips in {folders[key]}, {len(failed)} failed")
        failures += failed
    merge_corpora([folders["plus"], folders["soft"], folders["jpeg"]], folders["plus_sj"])
    log(f"merged the soft and JPEG-blocked contents into {folders['plus_sj']}")
    return folders, failures
