"""The training cache beyond the corpus: the candidate games joined to it, then the soft and JPEG-blocked training
contents and the synthetic scroller scenes, merged into the folder the leave-one-game-out runs of
docs/models/eraque.md train on.

Folders (beside the corpus, in the cache): ``corpus-plus`` (corpus + candidates, links), ``corpus-soft`` (blur and
half-resolution sources of every train content), ``corpus-jpeg`` (JPEG round-trip sources of every train content),
``corpus-synth`` (``SYNTH_SCENES`` synthetic scenes, ``gameqa.data.synth``) and ``corpus-plus-sj`` (all of them,
links; a trainer picks the kinds by manifest group: ``game``, ``soft``, ``synth``). Every step is resumable, so a
rerun finishes what an earlier one left.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

from gameqa.data.ladder import Ladder
from gameqa.data.merge import merge_corpora
from gameqa.data.soften import DEFAULT_KINDS, soften_corpus
from gameqa.data.synth import HEIGHT, WIDTH, synth_corpus

PLUS_FOLDERS = {"plus": "corpus-plus", "soft": "corpus-soft", "jpeg": "corpus-jpeg", "synth": "corpus-synth",
                "plus_sj": "corpus-plus-sj"}
SYNTH_SCENES = 24  # about as many contents as one game brings to training (240 clips)


def build_plus_folders(corpus: str | os.PathLike, candidates: str | os.PathLike, out: str | os.PathLike,
                       ladder: Ladder, *, workers: int = 2, log: Callable[[str], None] = print,
                       progress: Optional[Callable[[int, int], None]] = None, synth_scenes: int = SYNTH_SCENES,
                       synth_size: tuple[int, int] = (WIDTH, HEIGHT)) -> tuple[dict[str, Path], list[str]]:
    """Merge ``corpus`` and ``candidates``, soften the merged train contents (blur/half, then JPEG), build the
    synthetic scenes and merge all into ``out``'s folders (``PLUS_FOLDERS``). Returns (the folders, the clips that
    failed: the others are in)."""
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
    _, rows, failed = synth_corpus(folders["synth"], ladder, synth_scenes, workers=workers, size=synth_size, log=log,
                                   progress=progress)
    log(f"{len(rows)} synthetic clips in {folders['synth']}, {len(failed)} failed")
    failures += failed
    merge_corpora([folders["plus"], folders["soft"], folders["jpeg"], folders["synth"]], folders["plus_sj"])
    log(f"merged the soft, JPEG-blocked and synthetic contents into {folders['plus_sj']}")
    return folders, failures
