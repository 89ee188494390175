"""The Python API: ``gameqa.load(model)`` gives a scorer for files and numpy arrays (no torch needed).

    import gameqa
    scorer = gameqa.load("niqe")
    result = scorer.score("clip.mp4")          # or an image file
    result = scorer.score(frames_nhwc_uint8)    # N x H x W x 3 frames, or one H x W x 3 image
    print(result.overall, result.worst_frames(3))

Files go through ``gameqa.scoring.Scorer`` (the same code path as ``gameqa score``); arrays are fed to
the same model in the same batches and pooled the same way.
"""
from __future__ import annotations

import copy
import math
import os
import time
from typing import Callable, Optional, Union

import numpy as np

from gameqa.errors import GameQAError, MediaError, naming
from gameqa.models.registry import ModelCard
from gameqa.result import ScoreResult, Timing
from gameqa.scoring import DEFAULT_BATCH, DEFAULT_MODEL, Scorer

__all__ = ["load", "QualityScorer", "ARRAY_NAME"]

ARRAY_NAME = "<array>"
"""The ``path`` a result of an in-memory array carries."""

Source = Union[str, "os.PathLike[str]", np.ndarray]


class QualityScorer:
    """A loaded model: ``score(path_or_array)`` returns a ``ScoreResult``."""

    def __init__(self, model: str = DEFAULT_MODEL, sample: str = "fps:2", batch_size: int = DEFAULT_BATCH,
                 threads: int = 1, pooling: Optional[str] = None):
        self._scorer = Scorer(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling)

    @property
    def card(self) -> ModelCard:
        """The model's card: name, version, score range, direction."""
        return self._scorer.card

    @property
    def name(self) -> str:
        return self._scorer.card.name

    @property
    def version(self) -> str:
        return self._scorer.card.version

    def score(self, source: Source, ref: Optional[Source] = None, fps: float = 30.0,
              on_batch: Optional[Callable[[list, np.ndarray], None]] = None) -> ScoreResult:
        """Score a video or image file, or a uint8 RGB array: H x W x 3 (an image) or N x H x W x 3 (frames).

        ``ref`` is the reference (same type) for full-reference models. For arrays every frame is scored
        and ``fps`` gives the timestamps (index / fps). ``on_batch(frames, scores)`` is called after each model
        batch with its RGB frames and their scores (progress bars, thumbnails of bad moments).
        """
        for given, what in ((source, "the input"), (ref, "the reference")):
            if (given is not None or what == "the input") and not isinstance(given, (str, os.PathLike, np.ndarray)):
                raise GameQAError(None, f"{what} must be a file path or a numpy uint8 array, not "
                                        f"{type(given).__name__} (np.asarray() turns a list of frames into one)")
        if isinstance(source, np.ndarray):
            return self._score_array(source, ref, fps, on_batch)
        if ref is not None and isinstance(ref, np.ndarray):
            raise GameQAError(os.fspath(source), "give the reference as a file when the input is a file")
        if on_batch is None:
            return self._scorer.score(source, ref=ref)
        # A shallow copy that sees the batches: the shared scorer is never changed, so calls from several threads
        # (each with its own callback) do not see each other's batches, and nothing stays attached afterwards.
        observed = copy.copy(self._scorer)
        observed.model = _ObservedModel(self._scorer.model, on_batch)
        return observed.score(source, ref=ref)

    def _score_array(self, array: np.ndarray, ref, fps: float, on_batch) -> ScoreResult:
        start = time.perf_counter()
        frames, kind = _frames_of(array, ARRAY_NAME)
        refs = None
        if self.card.full_reference:
            if ref is None:
                raise GameQAError(ARRAY_NAME, f"model {self.card.name!r} is full-reference: give ref=")
            if not isinstance(ref, np.ndarray):
                raise GameQAError(ARRAY_NAME, "give the reference as an array when the input is an array")
            refs, _ = _frames_of(ref, "<ref array>")
            if refs.shape != frames.shape:
                raise MediaError(ARRAY_NAME, f"shape {frames.shape} differs from the reference's {refs.shape}")
        if not fps > 0 or not math.isfinite(fps):
            raise GameQAError(ARRAY_NAME, f"fps must be a positive finite number, not {fps}")
        scores: list[float] = []
        timing = Timing()
        step = self._scorer.batch_size
        for lo in range(0, len(frames), step):
            t0 = time.perf_counter()
            batch = list(frames[lo:lo + step])
            ref_batch = None if refs is None else list(refs[lo:lo + step])
            with naming(ARRAY_NAME):
                batch_scores = self._scorer.model.score_frames(batch, ref_batch)
            scores.extend(batch_scores.tolist())
            timing.model_s += time.perf_counter() - t0
            if on_batch is not None:
                on_batch(batch, batch_scores)
        timing.frames = len(scores)
        indices = list(range(len(frames)))
        stamps = [i / fps for i in indices] if kind == "video" else [0.0]
        result = self._scorer._result(ARRAY_NAME, kind, indices, stamps, scores,
                                      None if refs is None else "<ref array>", timing)
        result.sample = "all" if kind == "video" else None
        result.timing.total_s = time.perf_counter() - start
        return result


def load(model: str = DEFAULT_MODEL, sample: str = "fps:2", batch_size: int = DEFAULT_BATCH, threads: int = 1,
         pooling: Optional[str] = None) -> QualityScorer:
    """A scorer for a registered model name (``gameqa models`` lists them) or an exported model folder."""
    return QualityScorer(model=model, sample=sample, batch_size=batch_size, threads=threads, pooling=pooling)


def _frames_of(array: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """Check a uint8 RGB array; return it as N x H x W x 3 and whether it was an image or frames."""
    if array.dtype != np.uint8:
        raise MediaError(name, f"array must be uint8 RGB (0-255), not {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 3:
        return array[None], "image"
    if array.ndim == 4 and array.shape[-1] == 3:
        if array.shape[0] == 0:
            raise MediaError(name, "array holds no frames (N = 0)")
        return array, "video"
    raise MediaError(name, f"array shape {array.shape} is neither H x W x 3 (an image) nor N x H x W x 3 (frames)")


class _ObservedModel:
    """Wraps a model so each scored batch is shown to a callback; the scores are unchanged."""

    def __init__(self, inner, on_batch: Callable[[list, np.ndarray], None]):
        self._inner = inner
        self.card = inner.card
        self._on_batch = on_batch

    def score_frames(self, frames, refs=None):
        scores = self._inner.score_frames(frames, refs)
        self._on_batch(list(frames), scores)
        return scores
