"""The executor: turns one input file (and its reference, for full-reference models) into a ScoreResult.

In the spirit of Netflix vmaf's Asset -> Executor -> Result: media sampling feeds a registered model in
batches, frame scores are pooled over time, and the result carries model name, version and timing.
"""
from __future__ import annotations

import glob as globlib
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from gameqa.errors import GameQAError, MediaError, naming
from gameqa.models.registry import DEFAULT_MODEL
from gameqa.media import DEFAULT_BATCH, DEFAULT_SAMPLE, SamplePolicy, iter_batches, load_image, media_kind
from gameqa.models.pooling import pool_scores
from gameqa.media.bitstream import QPCollector
from gameqa.models.qp_head import QPHead
from gameqa.models.registry import create_model
from gameqa.result import ScoreResult, Timing


VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".ivf", ".y4m", ".ts", ".flv", ".m4v", ".mpg", ".mpeg",
                  ".m2ts", ".mts", ".wmv", ".3gp", ".ogv"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif"}
LIST_SUFFIXES = {".txt", ".lst"}


class Scorer:
    """Scores files with one model: ``Scorer("niqe").score("clip.mp4")``."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        sample: str = DEFAULT_SAMPLE,
        batch_size: int = DEFAULT_BATCH,
        threads: int = 1,
        pooling: Optional[str] = None,
        prefetch: bool = True,
    ):
        self.prefetch = bool(prefetch)  # decode the next batch while the model scores this one
        self.policy = SamplePolicy.parse(sample)
        self.sample = str(self.policy)  # canonical (" ALL " -> "all", "fps:1e3" -> "fps:1000"), for grouping results
        self.model = create_model(model, threads=threads)
        self.card = self.model.card
        self.batch_size = max(1, int(batch_size))
        self.pooling = pooling or self.card.pooling
        pool_scores(np.zeros(1), self.pooling)  # reject a bad pooling name before any work
        self.head = QPHead.load(self.card.bitstream_head) if self.card.bitstream_head else None

    def score(self, path: str | os.PathLike, ref: str | os.PathLike | None = None) -> ScoreResult:
        """Score one video or image file; ``ref`` is the reference for full-reference models."""
        path = os.fspath(path)
        if self.card.full_reference and ref is None:
            raise GameQAError(path, f"model {self.card.name!r} is full-reference: give the reference with --ref")
        start = time.perf_counter()
        kind = media_kind(path)
        if ref is not None and media_kind(ref) != kind:
            other = "an image" if kind == "video" else "a video"
            raise MediaError(os.fspath(ref), f"the reference is {other} and {path} is not: frames are compared one to "
                                             "one, give a reference of the same kind")
        with naming(path):
            if kind == "image":
                result = self._score_image(path, ref)
            else:
                result = self._score_video(path, ref)
        result.timing.total_s = time.perf_counter() - start
        return result

    def _result(self, path, kind, indices, stamps, scores, ref, timing, quantiser=None) -> ScoreResult:
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).any():
            raise GameQAError(path, f"model {self.card.name!r} gave no finite score for any sampled frame (blank frames?)")
        overall = pool_scores(scores, self.pooling, self.card.lower_better)
        bitstream = None
        if self.head is not None:
            overall, bitstream = self.head.apply(path, kind, overall, self.pooling, self.card.score_range,
                                                 quantiser.result() if quantiser else None)
        return ScoreResult(
            path=path,
            kind=kind,
            model=self.card.name,
            model_version=self.card.version,
            score_range=self.card.score_range,
            lower_better=self.card.lower_better,
            overall=overall,
            pooling=self.pooling,
            frame_indices=list(indices),
            timestamps=[round(float(t), 6) for t in stamps],
            frame_scores=[float(s) for s in scores],
            reference=None if ref is None else os.fspath(ref),
            sample=self.sample if kind == "video" else None,
            timing=timing,
            bitstream=bitstream,
        )

    def _score_image(self, path: str, ref) -> ScoreResult:
        t0 = time.perf_counter()
        frame = load_image(path)
        ref_frame = None
        if self.card.full_reference:
            ref_frame = load_image(ref)
            _check_same_size(path, frame, ref_frame)
        t1 = time.perf_counter()
        scores = self.model.score_frames([frame], None if ref_frame is None else [ref_frame])
        timing = Timing(decode_s=t1 - t0, model_s=time.perf_counter() - t1, frames=1)
        return self._result(path, "image", [0], [0.0], scores, ref, timing)

    def _score_video(self, path: str, ref) -> ScoreResult:
        indices: list[int] = []
        stamps: list[float] = []
        scores: list[float] = []
        timing = Timing()
        ahead = _prefetched if self.prefetch else iter
        # read while decoding (one decode, not two) where the head reads the quantiser of decoded frames
        quantiser = QPCollector(self.head.decoded_codecs) if self.head is not None else None
        batches = ahead(_timed(iter_batches(path, self.policy, self.batch_size, quantiser), timing))
        ref_batches = None
        if self.card.full_reference:
            _check_same_timeline(path, ref)
            ref_batches = ahead(_timed(iter_batches(ref, self.policy, self.batch_size), timing))
        for batch in batches:
            frames = [f.rgb for f in batch]
            refs = None
            if ref_batches is not None:
                ref_batch = next(ref_batches, None)
                if ref_batch is None or [f.index for f in ref_batch] != [f.index for f in batch]:
                    raise MediaError(ref, f"reference has fewer frames than {path}")
                refs = [f.rgb for f in ref_batch]
                _check_same_size(path, frames[0], refs[0])
            t0 = time.perf_counter()
            scores.extend(self.model.score_frames(frames, refs).tolist())
            timing.model_s += time.perf_counter() - t0
            indices.extend(f.index for f in batch)
            stamps.extend(f.timestamp for f in batch)
        if not scores:
            raise MediaError(path, f"no frames were sampled with policy {self.sample!r}")
        timing.frames = len(scores)
        return self._result(path, "video", indices, stamps, scores, ref, timing, quantiser)


def _timed(batches: Iterator, timing: Timing) -> Iterator:
    """Wrap a batch iterator so the time spent decoding is added to ``timing.decode_s``."""
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            timing.decode_s += time.perf_counter() - t0
            return
        timing.decode_s += time.perf_counter() - t0
        yield batch


_DONE = object()


def _prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """Run ``batches`` in a background thread, ``depth`` items ahead, so decoding the next frames overlaps
    scoring the current ones (PyAV and ONNX Runtime both release the GIL). Errors surface in the consumer, in
    order; a consumer that stops early (an error, or ``close()``) stops the producer after its current item."""
    items: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put((_DONE, exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None and stop.is_set():
                close()

    worker = threading.Thread(target=produce, name="gameqa-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = items.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                items.get(timeout=0.1)
            except queue.Empty:
                pass
        worker.join()


def _check_same_size(path: str, frame: np.ndarray, ref: np.ndarray) -> None:
    if frame.shape != ref.shape:
        raise MediaError(
            path,
            f"size {frame.shape[1]}x{frame.shape[0]} differs from the reference's {ref.shape[1]}x{ref.shape[0]}; "
            "scale one to the other first",
        )


@dataclass
class InputError:
    """An input argument that named nothing scoreable."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _check_same_timeline(path: str, ref) -> None:
    """Full-reference frames are compared one to one (frame i with reference frame i): a reference at another
    frame rate, or with another number of frames, would compare different moments (or leave frames out), so it is
    refused."""
    from gameqa.media import probe_video

    ours, theirs = probe_video(path), probe_video(ref)
    if ours.fps > 0 and theirs.fps > 0 and abs(ours.fps - theirs.fps) > 0.01 * max(ours.fps, theirs.fps):
        raise MediaError(ref, f"reference is {theirs.fps:g} fps, {path} is {ours.fps:g} fps: frames are compared one "
                              "to one, give a reference at the same frame rate")
    if ours.frame_count != theirs.frame_count:
        raise MediaError(ref, f"reference has {theirs.frame_count} frames, {path} has {ours.frame_count}: frames are "
                              "compared one to one, give the reference cut to the same frames")


def _media_files_under(folder: str, suffixes: set[str]) -> tuple[list[str], list[InputError]]:
    """Media files anywhere under a folder (links to folders are not followed), sorted, and one error per
    sub-folder that could not be read (gone mid-walk, no permission) instead of an exception for the whole folder."""
    found: list[str] = []
    errors: list[InputError] = []

    def unreadable(exc: OSError) -> None:
        errors.append(InputError(str(Path(exc.filename or folder)), f"cannot read folder ({exc.strerror or exc})"))

    for root, _dirs, names in os.walk(folder, onerror=unreadable):
        for name in names:
            path = Path(root, name)
            if path.suffix.lower() in suffixes and path.is_file():
                found.append(str(path))
    return sorted(found), errors


def collect_inputs(items: Iterable[str], _lists: tuple[str, ...] = (), *,
                   only: Optional[str] = None) -> tuple[list[str], list[InputError]]:
    """Expand files, folders (recursively: video and image files, or only ``"video"`` or ``"image"`` files), globs
    and list files (.txt/.lst, or @FILE; a list may name other lists, but not itself, directly or through them)."""
    files: list[str] = []
    errors: list[InputError] = []
    media_suffixes = {"video": VIDEO_SUFFIXES, "image": IMAGE_SUFFIXES}.get(only, VIDEO_SUFFIXES | IMAGE_SUFFIXES)
    for item in items:
        is_list = item.startswith("@") or Path(item).suffix.lower() in LIST_SUFFIXES
        if is_list:
            list_path = Path(item.lstrip("@"))
            if os.path.realpath(list_path) in _lists:
                errors.append(InputError(str(list_path), "list file names itself (directly or through another list)"))
                continue
            try:
                lines = list_path.read_text().splitlines()
            except OSError as exc:
                errors.append(InputError(str(list_path), f"cannot read list file ({exc.strerror})"))
                continue
            except UnicodeDecodeError:
                errors.append(InputError(str(list_path), "list file is not UTF-8 text"))
                continue
            sub = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            sub = [s if os.path.isabs(s) else str(list_path.parent / s) for s in sub]
            more, errs = collect_inputs(sub, (*_lists, os.path.realpath(list_path)), only=only)
            files.extend(more)
            errors.extend(errs)
        elif os.path.isdir(item):
            found, unread = _media_files_under(item, media_suffixes)
            errors.extend(unread)
            if not found and not unread:
                errors.append(InputError(item, f"folder holds no {only or 'video or image'} files"))
            files.extend(found)
        elif os.path.exists(item):
            files.append(item)
        elif any(ch in item for ch in "*?["):
            found = sorted(p for p in globlib.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                errors.append(InputError(item, "pattern matches no file"))
            files.extend(found)
        else:
            errors.append(InputError(item, "no such file or folder"))
    seen: set[str] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, errors
