"""Temporal pooling: frame scores -> one clip score.

``mean``: the plain average. ``worst:P``: the average of the worst P percent of frames (direction-aware),
because viewers remember the bad moments more than the average (the recency/peak-end effect reported in
video-quality studies). ``worst`` alone means ``worst:10``.
"""
from __future__ import annotations

import math

import numpy as np

from gameqa.errors import ConfigError


def pool_scores(scores: np.ndarray, method: str = "mean", lower_better: bool = False) -> float:
    """Pool the finite per-frame scores with ``method`` ("mean", "median", "worst", "worst:P")."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]  # a metric may have no score for a frame (e.g. NIQE on a blank one)
    if scores.size == 0:
        raise ConfigError(None, "no finite frame scores to pool")
    if method == "mean":
        return float(scores.mean())
    if method == "median":
        return float(np.median(scores))
    if method == "worst" or method.startswith("worst:"):
        pct = 10.0
        if ":" in method:
            try:
                pct = float(method.split(":", 1)[1])
            except ValueError:
                raise ConfigError(None, f"bad pooling {method!r}: expected worst:P with P in (0, 100]") from None
        if not 0 < pct <= 100:
            raise ConfigError(None, f"bad pooling {method!r}: P must be in (0, 100]")
        k = max(1, math.ceil(scores.size * pct / 100.0))
        ordered = np.sort(scores)
        worst = ordered[-k:] if lower_better else ordered[:k]
        return float(worst.mean())
    raise ConfigError(None, f"unknown pooling {method!r} (use mean, median, worst or worst:P)")
