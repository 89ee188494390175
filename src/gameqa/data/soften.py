"""Soft-art sources (``gameqa corpus soften``): train contents shown soft, then encoded and labelled like any source.

Leave-one-game-out runs showed that a no-reference model takes a game whose own art is soft (painted cloud skies,
smooth gradients: Pingus' levels) for a damaged one: every game it trained on is drawn sharp, so softness only ever
came with low bitrates (docs/models/eraque.md). This module makes training contents whose *pristine* look is soft:
one lossless source per train content of a corpus, re-rendered soft, the contents of each game taking in turn

* ``blur``: a Gaussian blur (sigma 2 px), as soft-focus art;
* ``half``: drawn at half the size and scaled back up (area down, bicubic up), as art rendered at a low resolution;
* ``jpeg`` (only when asked: ``kinds``): each frame through a JPEG round trip (ffmpeg's mjpeg at ``-q:v 8``), as art
  shipped as JPEG files whose 8x8 blocks are part of the pristine look (Pingus' backgrounds, docs/models/eraque.md);

and builds them through the ladder, so each encode is labelled against its *soft* source (VMAF, as every clip).
High-bitrate encodes of a soft source are labelled high although they look soft: the model has to find damage in
what the encoder did, not in how sharp the art is. Every soft content is derived from a train content, so all its
clips join the train split (a soft copy of a val or test content would leak it), in their own manifest group,
``soft``, which a trainer takes only when asked (``data.groups = ["game", "soft"]``). A leave-one-game-out split
drops the held-out game's soft clips (``gameqa.data.manifest.logo_split``); ``exclude_games`` does not make them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional, Sequence

from gameqa.data.corpus import build_corpus
from gameqa.data.ladder import Ladder
from gameqa.data.manifest import SOFT_GROUP, corpus_manifest, read_manifest, write_manifest
from gameqa.errors import ConfigError
from gameqa.ffmpeg import run_ffmpeg
from gameqa.sinks import make_folder, write_via_temp

__all__ = ["SOFTENINGS", "DEFAULT_KINDS", "check_kinds", "soft_filter", "soften_sources", "soften_corpus"]

SOFTENINGS = ("blur", "half", "jpeg")
DEFAULT_KINDS = ("blur", "half")
BLUR_SIGMA = 2.0
JPEG_QSCALE = 8  # mjpeg -q:v: block-edge ratio (gameqa corpus blocks) 1.2-1.3 on detailed art, as Pingus' captures


def soft_filter(kind: str, width: int, height: int) -> str:
    """The ffmpeg filter that renders a ``width`` x ``height`` source soft in the way ``kind`` names."""
    if kind == "blur":
        return f"gblur=sigma={BLUR_SIGMA:g}"
    if kind == "half":
        half_w, half_h = max(2, width // 4 * 2), max(2, height // 4 * 2)
        return f"scale={half_w}:{half_h}:flags=area,scale={width}:{height}:flags=bicubic"
    raise ConfigError(None, f"softening {kind!r} is no ffmpeg filter (blur and half are; jpeg is a round trip)")


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """The softenings named, in order, each known and named once (a ConfigError otherwise)."""
    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in SOFTENINGS:
            raise ConfigError(None, f"unknown softening {kind!r} (choose from {', '.join(SOFTENINGS)})")
    if not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(None, f"softenings must be named once each, at least one: {', '.join(kinds) or 'none'}")
    return kinds


def _render_soft(kind: str, row: dict, seconds: float, dest: Path) -> None:
    """Write ``row``'s source rendered soft the ``kind`` way to ``dest`` (lossless H.264, first ``seconds`` + 1 s)."""
    src, cut = row["abs_source_path"], ["-t", f"{seconds + 1:g}", "-an"]
    lossless = ["-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "matroska"]
    if kind != "jpeg":
        run_ffmpeg(["-y", "-i", src, *cut, "-vf", soft_filter(kind, row["display_width"], row["display_height"]),
                    *lossless, str(dest)], path=src)
        return
    jpegs = dest.with_name(f"{dest.stem}.mjpeg.mkv")
    try:
        run_ffmpeg(["-y", "-i", src, *cut, "-c:v", "mjpeg", "-q:v", str(JPEG_QSCALE), "-pix_fmt", "yuvj420p",
                    str(jpegs)], path=src)
        run_ffmpeg(["-y", "-i", str(jpegs), "-vf", "scale=in_range=full:out_range=tv", *lossless, str(dest)],
                   path=src)
    finally:
        jpegs.unlink(missing_ok=True)


def _picked_sources(rows: list[dict], exclude_games: Sequence[str], per_content: int) -> list[tuple[str, list[dict]]]:
    """(content, its first ``per_content`` source rows) for every train content of a game not excluded."""
    by_content: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r["split"] == "train" and r["group"] == "game" and r["game"] not in exclude_games:
            content = r["content"] or f"{r['game']}--{r['source_id']}"  # no content: its own source, in its game
            by_content.setdefault(content, {}).setdefault(r["source_path"], r)
    return [(c, [srcs[p] for p in sorted(srcs)[:per_content]]) for c, srcs in sorted(by_content.items())]


def soften_sources(from_root: str | os.PathLike, out_root: str | os.PathLike, seconds: float, *,
                   exclude_games: Sequence[str] = (), per_content: int = 1, kinds: Sequence[str] = DEFAULT_KINDS,
                   log: Callable[[str], None] = print) -> None:
    """Write the soft sources of ``from_root``'s train contents into ``out_root/sources`` (kept if already there).

    The contents of each game take the softenings of ``kinds`` in turn (sorted by name, so leaving a game out changes no
    other game's soft sources); a soft source is named after its content
    (``<content>-soft<kind>--NN.mkv``), lossless H.264 of the first ``seconds`` (+1) seconds."""
    kinds = check_kinds(kinds)
    from_root, out_root = Path(from_root), Path(out_root)
    manifest = corpus_manifest(from_root)
    rows = read_manifest(manifest, root=from_root)
    games = {r["game"] for r in rows}
    unknown = sorted(set(exclude_games) - games)
    if unknown:
        raise ConfigError(manifest, f"no game {unknown[0]!r} to leave out (games: {', '.join(sorted(games))})")
    picked = _picked_sources(rows, exclude_games, per_content)
    if not picked:
        raise ConfigError(manifest, "no train contents to soften (every game left out, or no train split)")
    out_dir = out_root / "sources"
    make_folder(out_dir, "the sources folder")
    turn: dict[str, int] = {}
    for content, sources in picked:
        game = sources[0]["game"]
        turn[game] = turn.get(game, -1) + 1
        kind = kinds[turn[game] % len(kinds)]
        for k, row in enumerate(sources):
            dest = out_dir / f"{content}-soft{kind}--{k:02d}.mkv"
            if dest.is_file():
                continue
            # written to a temporary name first: no half-written source left behind
            write_via_temp(dest, lambda tmp: _render_soft(kind, row, seconds, Path(tmp)))
            log(f"{dest.name} <- {Path(row['source_path']).name} ({kind})")


def soften_corpus(from_root: str | os.PathLike, out_root: str | os.PathLike, ladder: Ladder, *,
                  exclude_games: Sequence[str] = (), per_content: int = 1, kinds: Sequence[str] = DEFAULT_KINDS,
                  workers: int = 2, log: Callable[[str], None] = print,
                  progress: Optional[Callable[[int, int], None]] = None) -> tuple[Path, list[dict], list[str]]:
    """Soft sources of ``from_root``'s train contents, built through ``ladder`` in ``out_root`` (resumable).

    Returns (the manifest written, its rows, failures); every row is in the train split and the group ``soft``
    (trainers take it with ``data.groups = ["game", "soft"]``; a leave-one-game-out split drops the held-out
    game's soft clips)."""
    out_root = Path(out_root)
    soften_sources(from_root, out_root, ladder.seconds, exclude_games=exclude_games, per_content=per_content,
                   kinds=kinds, log=log)
    rows, failures = build_corpus(out_root, ladder, workers=workers, natural=False, warn=log, progress=progress)
    for r in rows:
        r["split"], r["group"] = "train", SOFT_GROUP
    return write_manifest(rows, out_root / "manifests" / "corpus.csv"), rows, failures
