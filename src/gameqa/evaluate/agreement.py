"""How well a mean-and-spread model agrees with raters: the mean, the raters' spread, and sure pair orders.

* :func:`ordered_pairs` -- among test pairs whose true 95% confidence intervals do not overlap (the orders the
  raters are sure of), the share the predictions order the same way;
* :func:`binary_accuracy` -- both sides of a threshold (e.g. AVA's 5: "good" vs "bad" photos);
* :func:`mean_spread_report` -- all of it: SROCC/PLCC/RMSE of the mean, SROCC/PLCC/RMSE of the std, the
  baselines for the std (the training set's average std; the std a curve fitted on the training set gives
  for the predicted mean), binary accuracy and ordered pairs.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from gameqa.errors import GameQAError
from gameqa.evaluate.metrics import as_pair, plcc, rmse, srocc

__all__ = ["binary_accuracy", "intervals_overlap", "mean_spread_report", "ordered_pairs", "std_from_mean_fit"]


def _half_width(std, n, confidence: float) -> np.ndarray:
    std = np.asarray(std, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), std.shape)
    if np.any(n < 2):
        raise GameQAError(None, "every item needs at least 2 raters for a confidence interval")
    return stats.t.ppf(0.5 + confidence / 2.0, n - 1) * std / np.sqrt(n)


def intervals_overlap(mean, std, n, confidence: float = 0.95) -> np.ndarray:
    """N x N bool: True where the two items' confidence intervals of the mean overlap (diagonal True)."""
    mean = np.asarray(mean, dtype=np.float64).ravel()
    h = _half_width(std, n, confidence).ravel()
    return np.abs(mean[:, None] - mean[None, :]) <= h[:, None] + h[None, :]


def ordered_pairs(pred, mean, std, n, confidence: float = 0.95) -> tuple[float, int]:
    """(share of sure pairs the predictions order correctly, number of sure pairs).

    Sure pairs: i < j whose true intervals do not overlap. A tie in the predictions counts as half right.
    """
    p, m = as_pair(pred, mean)
    sure = ~intervals_overlap(m, std, n, confidence)
    i, j = np.nonzero(np.triu(sure, k=1))
    if i.size == 0:
        return float("nan"), 0
    agree = np.sign(p[i] - p[j]) * np.sign(m[i] - m[j])
    return float(np.mean((agree > 0) + 0.5 * (agree == 0))), int(i.size)


def binary_accuracy(pred, labels, threshold: float) -> float:
    """Share of items put on the same side of ``threshold`` (``> threshold`` is the high class)."""
    p, y = as_pair(pred, labels)
    return float(np.mean((p > threshold) == (y > threshold)))


def std_from_mean_fit(train_mean, train_std, degree: int = 2):
    """A baseline for the spread: a polynomial of the mean fitted to the training set's (mean, std) pairs.

    Raters tend to agree more near the ends of a scale; this curve captures only that, so a std head that beats it
    has learnt something about the images themselves.
    """
    coefficients = np.polyfit(np.asarray(train_mean, float), np.asarray(train_std, float), degree)
    return lambda mean: np.polyval(coefficients, np.asarray(mean, dtype=np.float64))


def mean_spread_report(pred_mean, pred_std, mean, std, n, *, train_mean=None, train_std=None,
                       threshold: float | None = None, confidence: float = 0.95) -> dict[str, float]:
    """Every agreement number for one test set (see the module docstring); baselines need the training labels."""
    pred_mean, mean = as_pair(pred_mean, mean)
    pred_std, std = as_pair(pred_std, std)
    report = {
        "mean_srocc": srocc(pred_mean, mean), "mean_plcc": plcc(pred_mean, mean), "mean_rmse": rmse(pred_mean, mean),
        "std_srocc": srocc(pred_std, std), "std_plcc": plcc(pred_std, std), "std_rmse": rmse(pred_std, std),
    }
    if train_std is not None:
        average = float(np.mean(train_std))
        report["std_rmse_average_baseline"] = rmse(np.full_like(std, average), std)
        report["std_srocc_average_baseline"] = float("nan")  # a constant has no rank correlation
        if train_mean is not None:
            curve = std_from_mean_fit(train_mean, train_std)(pred_mean)
            report["std_srocc_mean_curve_baseline"] = srocc(curve, std)
            report["std_plcc_mean_curve_baseline"] = plcc(curve, std)
            report["std_rmse_mean_curve_baseline"] = rmse(curve, std)
    if threshold is not None:
        report["binary_accuracy"] = binary_accuracy(pred_mean, mean, threshold)
    share, count = ordered_pairs(pred_mean, mean, std, n, confidence)
    report["ordered_pairs"] = share
    report["sure_pairs"] = float(count)
    return report
