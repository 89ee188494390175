"""Agreement between predicted scores and subjective labels: SROCC, KROCC, PLCC, RMSE.

Each function takes two equal-length 1-D sequences (``pred``, ``labels``). Constant input has no
defined correlation: SROCC, KROCC and PLCC return NaN then (as scipy.stats does). Lengths that differ,
fewer than two items, or NaN/inf values raise :class:`gameqa.errors.GameQAError`.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from gameqa.errors import GameQAError


def as_pair(pred, labels) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert two score sequences to float64 arrays of equal length (at least 2)."""
    pred_arr = np.asarray(pred, dtype=np.float64).ravel()
    label_arr = np.asarray(labels, dtype=np.float64).ravel()
    if pred_arr.size != label_arr.size:
        raise GameQAError(None, f"predictions and labels differ in length ({pred_arr.size} vs {label_arr.size})")
    if pred_arr.size < 2:
        raise GameQAError(None, f"need at least 2 scored items, got {pred_arr.size}")
    if not np.all(np.isfinite(pred_arr)):
        raise GameQAError(None, "predictions contain NaN or inf")
    if not np.all(np.isfinite(label_arr)):
        raise GameQAError(None, "labels contain NaN or inf")
    return pred_arr, label_arr


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (rows of a 2-D array or one 1-D pair); NaN where constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    # Normalise first, as scipy.stats.pearsonr does, so the result is accurate for any scale.
    x_norm = np.linalg.norm(xc, axis=-1, keepdims=True)
    y_norm = np.linalg.norm(yc, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum((xc / x_norm) * (yc / y_norm), axis=-1)
        # A spread far below rounding noise of the mean means the input is constant.
        x_const = x_norm[..., 0] <= 1e-13 * np.maximum(np.abs(x).max(axis=-1), 1e-300) * np.sqrt(x.shape[-1])
        y_const = y_norm[..., 0] <= 1e-13 * np.maximum(np.abs(y).max(axis=-1), 1e-300) * np.sqrt(y.shape[-1])
    r = np.clip(r, -1.0, 1.0)
    return np.where(x_const | y_const, np.nan, r)


def _rank_rows(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank."""
    return stats.rankdata(x, axis=-1)


def plcc(pred, labels) -> float:
    """Pearson linear correlation coefficient."""
    p, y = as_pair(pred, labels)
    return float(_pearson_rows(p, y))


def srocc(pred, labels) -> float:
    """Spearman rank-order correlation coefficient (Pearson on average ranks, so ties are handled)."""
    p, y = as_pair(pred, labels)
    return float(_pearson_rows(_rank_rows(p), _rank_rows(y)))


def krocc(pred, labels) -> float:
    """Kendall rank-order correlation coefficient, tau-b (corrected for ties), via scipy's O(n log n) count."""
    p, y = as_pair(pred, labels)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.kendalltau(p, y, variant="b").statistic)


def rmse(pred, labels) -> float:
    """Root mean squared error between predictions and labels (in label units)."""
    p, y = as_pair(pred, labels)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def plcc_rows(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """PLCC of each row pair of two (k, n) arrays (used by the bootstrap)."""
    return _pearson_rows(pred, labels)


def srocc_rows(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """SROCC of each row pair of two (k, n) arrays."""
    return _pearson_rows(_rank_rows(pred), _rank_rows(labels))


def krocc_rows(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """KROCC (tau-b) of each row pair of two (k, n) arrays."""
    out = np.empty(pred.shape[0])
    for i, (p, y) in enumerate(zip(pred, labels)):
        if np.ptp(p) == 0 or np.ptp(y) == 0:
            out[i] = np.nan
        else:
            out[i] = stats.kendalltau(p, y, variant="b").statistic
    return out


def rmse_rows(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RMSE of each row pair of two (k, n) arrays."""
    return np.sqrt(np.mean((pred - labels) ** 2, axis=-1))


def close_pair_accuracy(pred, labels, max_gap: float, min_gap: float = 1e-6) -> tuple[float, int]:
    """Share of item pairs with ``min_gap < |label gap| <= max_gap`` that ``pred`` orders like the labels.

    The hard pairs of a quality model: close in the ground truth but not tied. A tie in ``pred`` counts half.
    Returns ``(accuracy, number of pairs)``; the accuracy is NaN when no pair qualifies.
    """
    p, y = as_pair(pred, labels)
    i, j = np.triu_indices(p.size, k=1)
    gap = np.abs(y[i] - y[j])
    keep = (gap > min_gap) & (gap <= max_gap)
    if not keep.any():
        return float("nan"), 0
    agree = np.sign(p[i] - p[j])[keep] * np.sign(y[i] - y[j])[keep]
    return float(np.mean((agree > 0) + 0.5 * (agree == 0))), int(keep.sum())
