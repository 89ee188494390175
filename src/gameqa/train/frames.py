"""The frame cache: sampled frames of each clip, decoded once, scaled to display size, stored losslessly.

Decoding a video is the slow part of training on a CPU; crops are cheap. So each clip's sampled frames are
decoded once (``gameqa.media``), scaled up with bicubic to the display size its label refers to (the corpus
labels compare the clip *as a player shows it*: scaled back up to the source size), and kept as PNG under
``$GAMEQA_CACHE/frames``. For full-reference training the reference frames shown at the same timestamps are
cached too.

Entries are content-addressed: the key hashes the clip file's bytes, the sampling policy and the display
size, so a re-encoded clip gets a new entry and nothing is ever stale. Each entry is a folder written under
a temporary name and renamed when complete (``meta.json`` last), so an interrupted caching run resumes where
it stopped. Runs that share the cache (two trainings side by side, DDP ranks) never decode the same entry twice:
an entry is built under an exclusive lock on ``.locks/<key>``, and ``cache_rows`` first builds the
entries nobody else holds, then waits for the rest. This module does not import torch: ``gameqa eval`` of an
ONNX model uses it too.

Layout::

    frames/<key[:2]>/<key>/meta.json      clip, policy, size, decode indices, timestamps
    frames/<key[:2]>/<key>/000.png ...    the frames, display size, RGB
    frames/.locks/<key>                   locked while a process builds the entry (empty file)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from gameqa.data.corpus import file_digest
from gameqa.errors import GameQAError, MediaError
from gameqa.media import SamplePolicy, iter_frames

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process claim, at worst an entry is decoded twice
    fcntl = None

CACHE_VERSION = "1"
PNG_LEVEL = 3            # zlib level: 3 is within a few percent of 9 on game frames, several times faster
_TIMESTAMP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CachedFrames:
    """One cache entry: PNG paths of the sampled frames, with their decode indices and timestamps."""

    key: str
    folder: Path
    indices: tuple[int, ...]
    timestamps: tuple[float, ...]

    @property
    def paths(self) -> list[Path]:
        return [self.folder / f"{i:03d}.png" for i in range(len(self.indices))]

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> np.ndarray:
        """Frame ``i`` as H x W x 3 uint8."""
        return load_png(self.folder / f"{i:03d}.png")


def load_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise MediaError(path, f"cannot read cached frame ({exc}); delete this folder to rebuild it") from None


def to_display(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale a frame smaller than the display up to ``width`` x ``height`` (the engine's own scaling)."""
    from gameqa.models.onnx_engine import upscale_to_display

    return upscale_to_display(frame, height, width)


class FrameCache:
    """Content-addressed cache of sampled, display-size frames (see the module doc)."""

    def __init__(self, root: str | os.PathLike, sample: str = "uniform:8"):
        self.root = Path(root)
        self.policy = SamplePolicy.parse(sample)
        self.built = 0           # entries this object decoded and stored (the rest were found built)
        self._count = threading.Lock()

    # -- keys and lookups -----------------------------------------------------------------------------------
    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def clip_key(self, clip: str | os.PathLike, width: int, height: int) -> str:
        text = f"v{CACHE_VERSION}|clip|{file_digest(clip)}|{self.policy}|{int(width)}x{int(height)}"
        return hashlib.sha1(text.encode()).hexdigest()

    def reference_key(self, source: str | os.PathLike, timestamps: Sequence[float], width: int, height: int) -> str:
        stamps = ",".join(f"{t:.3f}" for t in timestamps)
        text = f"v{CACHE_VERSION}|ref|{file_digest(source)}|{stamps}|{int(width)}x{int(height)}"
        return hashlib.sha1(text.encode()).hexdigest()

    def lookup(self, key: str) -> Optional[CachedFrames]:
        meta_path = self._folder(key) / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        return CachedFrames(key, meta_path.parent, tuple(meta["indices"]), tuple(meta["timestamps"]))

    # -- building -------------------------------------------------------------------------------------------
    def _store(self, key: str, frames: list[np.ndarray], indices: list[int], stamps: list[float], about: dict) -> CachedFrames:
        final = self._folder(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key[:8]}-"))
        try:
            for i, frame in enumerate(frames):
                Image.fromarray(frame).save(tmp / f"{i:03d}.png", compress_level=PNG_LEVEL)
            meta = dict(about, indices=indices, timestamps=stamps, version=CACHE_VERSION)
            (tmp / "meta.json").write_text(json.dumps(meta))
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same entry first: keep theirs
                if not (final / "meta.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        found = self.lookup(key)
        assert found is not None
        return found

    @contextmanager
    def claim(self, key: str, wait: bool = True) -> Iterator[bool]:
        """Hold the entry's build lock; yields False at once if another holder has it and ``wait`` is off."""
        if fcntl is None:
            yield True
            return
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / key, "a") as handle:  # flock: released if the process dies
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _entry(self, key: str, build: Callable[[], tuple], wait: bool) -> Optional[CachedFrames]:
        """The entry, built by ``build`` under its claim if missing; None if another process is building it
        and ``wait`` is off."""
        found = self.lookup(key)
        if found is not None:
            return found
        with self.claim(key, wait) as mine:
            if not mine:
                return None
            found = self.lookup(key)  # built by the holder we waited for
            if found is not None:
                return found
            stored = self._store(key, *build())
            with self._count:
                self.built += 1
            return stored

    def clip_frames(self, clip: str | os.PathLike, width: int, height: int, wait: bool = True) -> Optional[CachedFrames]:
        """The cached frames of a clip, decoding and storing them first if needed (None: see ``_entry``)."""
        def build():
            frames, indices, stamps = [], [], []
            for frame in iter_frames(clip, self.policy):
                frames.append(to_display(frame.rgb, width, height))
                indices.append(frame.index)
                stamps.append(round(float(frame.timestamp), 6))
            if not frames:
                raise MediaError(clip, f"no frames sampled with policy {self.policy}")
            return frames, indices, stamps, {"clip": os.fspath(clip), "sample": str(self.policy),
                                             "display": [int(width), int(height)]}
        return self._entry(self.clip_key(clip, width, height), build, wait)

    def reference_frames(self, source: str | os.PathLike, timestamps: Sequence[float], width: int,
                         height: int, wait: bool = True) -> Optional[CachedFrames]:
        """Frames of the reference shown at ``timestamps`` (the latest frame at or before each time)."""
        return self._entry(self.reference_key(source, timestamps, width, height),
                           lambda: self._decode_reference(source, timestamps, width, height), wait)

    def _decode_reference(self, source, timestamps: Sequence[float], width: int, height: int) -> tuple:
        wanted = sorted(set(float(t) for t in timestamps))
        picked: dict[float, tuple[int, float, np.ndarray]] = {}
        last = None
        for frame in iter_frames(source, "all"):
            while wanted and frame.timestamp > wanted[0] + _TIMESTAMP_TOLERANCE:
                if last is None:
                    raise MediaError(source, f"reference has no frame at {wanted[0]:.3f} s")
                picked[wanted.pop(0)] = last
            if not wanted:
                break
            last = (frame.index, float(frame.timestamp), frame.rgb)
        for t in wanted:  # times at or after the last decoded frame
            if last is None or last[1] < t - 1.0:
                raise MediaError(source, f"reference ends before {t:.3f} s")
            picked[t] = last
        chosen = [picked[float(t)] for t in timestamps]
        frames = [to_display(rgb, width, height) for _, _, rgb in chosen]
        if any(f.shape[:2] != (int(height), int(width)) for f in frames):
            shape = frames[0].shape
            raise MediaError(source, f"reference is {shape[1]}x{shape[0]}, the manifest says {width}x{height}")
        return (frames, [i for i, _, _ in chosen], [t for _, t, _ in chosen],
                {"source": os.fspath(source), "display": [int(width), int(height)]})

    def cache_rows(self, rows: list[dict], reference: bool = False, workers: int = 2,
                   progress: Optional[Callable[[int, int], None]] = None) -> dict[str, tuple[CachedFrames, Optional[CachedFrames]]]:
        """Cache every manifest row's clip (and reference); ``clip_id -> (frames, reference frames or None)``.

        Rows whose entry another process is building are put off, and waited for once the others are done."""
        def one(row: dict, wait: bool):
            w, h = int(row["display_width"]), int(row["display_height"])
            clip = self.clip_frames(row["abs_path"], w, h, wait=wait)
            ref = None
            if clip is not None and reference:
                ref = self.reference_frames(row["abs_source_path"], clip.timestamps, w, h, wait=wait)
            if clip is None or (reference and ref is None):
                return None
            return clip, ref

        out: dict[str, tuple[CachedFrames, Optional[CachedFrames]]] = {}
        errors: list[str] = []
        done = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            todo, wait = rows, False
            while todo:
                later = []
                for row, fut in [(r, pool.submit(one, r, wait)) for r in todo]:
                    try:
                        entry = fut.result()
                    except GameQAError as exc:
                        errors.append(str(exc))
                    else:
                        if entry is None:  # another process is building it: come back when the rest are done
                            later.append(row)
                            continue
                        out[row["clip_id"]] = entry
                    done += 1
                    if progress:
                        progress(done, len(rows))
                todo, wait = later, True
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise MediaError(None, f"cannot cache frames: {errors[0]}{more}")
        return out
