"""Typed results: one ``ScoreResult`` per scored file, whatever the model.

The layout follows what users of Google UVQ like: an overall score, per-frame scores and the frame
indices and timestamps they belong to, so a user can find the bad moment. Every result names the model
and version that made it, so stored results can be trusted later.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import BaseModel, Field

from gameqa import __version__


class Timing(BaseModel):
    """Where the time went, in seconds."""

    decode_s: float = 0.0
    model_s: float = 0.0
    total_s: float = 0.0
    frames: int = 0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.total_s if self.total_s > 0 else 0.0


class ScoreResult(BaseModel):
    """The score of one file by one model."""

    path: str
    kind: Literal["video", "image"]
    model: str
    model_version: str
    score_range: tuple[float, float]
    lower_better: bool
    overall: float
    pooling: str = "mean"
    frame_indices: list[int] = Field(default_factory=list)
    timestamps: list[float] = Field(default_factory=list)
    frame_scores: list[float] = Field(default_factory=list)
    reference: Optional[str] = None
    sample: Optional[str] = None
    timing: Timing = Field(default_factory=Timing)
    bitstream: Optional[dict] = None  # a model with a quantiser head: what it read, whether it applied, the pixel score
    gameqa_version: str = __version__

    def summary(self, per_frame: bool = False) -> dict:
        """A flat dict for printing and CSV; per-frame lists only when asked."""
        row = {
            "path": self.path,
            "kind": self.kind,
            "model": self.model,
            "model_version": self.model_version,
            "overall": self.overall,
            "pooling": self.pooling,
            "frames": len(self.frame_scores),
            "reference": self.reference,
            "sample": self.sample,
            "decode_s": round(self.timing.decode_s, 4),
            "model_s": round(self.timing.model_s, 4),
            "total_s": round(self.timing.total_s, 4),
        }
        if self.bitstream is not None:  # every result of a model with a quantiser head has these two
            row["pixel_overall"] = self.bitstream["pixel_overall"]
            row["head"] = (f"quantiser ({self.bitstream['codec']})" if self.bitstream["applied"]
                           else f"none: {self.bitstream['reason']}")
        if per_frame:
            row["frame_indices"] = self.frame_indices
            row["timestamps"] = self.timestamps
            row["frame_scores"] = self.frame_scores
        return row

    def worst_frames(self, k: int = 3) -> list[tuple[int, float, float]]:
        """The k worst sampled frames as (index, timestamp, score), worst first; frames without a score (NaN: e.g.
        NIQE on a flat black frame) are not candidates."""
        scored = [i for i, v in enumerate(self.frame_scores) if math.isfinite(v)]
        order = sorted(scored, key=lambda i: self.frame_scores[i], reverse=self.lower_better)
        return [(self.frame_indices[i], self.timestamps[i], self.frame_scores[i]) for i in order[:k]]
