"""VQEG 4-parameter logistic mapping from predicted scores to the label scale.

    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

The curve is monotonic (rising when b1 > b2, falling when b1 < b2), so it keeps SROCC/KROCC and
removes the non-linearity between a model's scale and the MOS scale before PLCC/RMSE are taken, as the
VQEG FR-TV Phase II report recommends. :func:`fit_logistic` raises GameQAError on input it cannot fit
(fewer than 5 items, constant predictions or labels, NaN/inf, or a fit that does not converge).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from gameqa.errors import GameQAError
from gameqa.evaluate.metrics import as_pair


def logistic4(x, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic at ``x`` (array in, array out)."""
    z = -(np.asarray(x, dtype=np.float64) - b3) / np.abs(b4)
    # exp overflows to inf for far-out x, which correctly gives b2; silence that warning only.
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1.0 + np.exp(z)) + b2


@dataclass(frozen=True)
class LogisticFit:
    """A fitted mapping: call it on predictions to get values on the label scale."""

    b1: float
    b2: float
    b3: float
    b4: float

    def __call__(self, x) -> np.ndarray:
        return logistic4(x, self.b1, self.b2, self.b3, self.b4)

    @property
    def params(self) -> tuple[float, float, float, float]:
        return (self.b1, self.b2, self.b3, self.b4)


MIN_ITEMS = 5  # four parameters need more than four points to leave a residual.


def fit_logistic(pred, labels, *, maxfev: int = 20000) -> LogisticFit:
    """Fit the 4-parameter logistic from ``pred`` to ``labels`` by least squares (scipy curve_fit, TRF).

    Start: b1/b2 at the label max/min (swapped when predictions fall as labels rise), b3 at the median
    prediction, b4 at the prediction spread / 4. Bounds keep the asymptotes within 5 label ranges of the
    data, the centre within 5 prediction ranges, and the slope scale between 1e-4 and 100 prediction
    ranges, so near-linear data gives a wide, almost linear curve rather than running off to infinity.
    """
    x, y = as_pair(pred, labels)
    if x.size < MIN_ITEMS:
        raise GameQAError(None, f"logistic fit needs at least {MIN_ITEMS} items, got {x.size}")
    x_range, y_range = float(np.ptp(x)), float(np.ptp(y))
    if x_range == 0:
        raise GameQAError(None, "logistic fit impossible: all predictions are equal")
    if y_range == 0:
        raise GameQAError(None, "logistic fit impossible: all labels are equal")
    rising = np.corrcoef(x, y)[0, 1] >= 0
    y_lo, y_hi = float(y.min()), float(y.max())
    x_lo, x_hi = float(x.min()), float(x.max())
    b1_0, b2_0 = (y_hi, y_lo) if rising else (y_lo, y_hi)
    start = [b1_0, b2_0, float(np.median(x)), x_range / 4.0]
    lower = [y_lo - 5 * y_range, y_lo - 5 * y_range, x_lo - 5 * x_range, 1e-4 * x_range]
    upper = [y_hi + 5 * y_range, y_hi + 5 * y_range, x_hi + 5 * x_range, 100.0 * x_range]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(logistic4, x, y, p0=start, bounds=(lower, upper), method="trf", maxfev=maxfev)
    except (RuntimeError, ValueError) as err:
        raise GameQAError(None, f"logistic fit did not converge: {err}".splitlines()[0]) from None
    b1, b2, b3, b4 = (float(v) for v in params)
    return LogisticFit(b1, b2, b3, abs(b4))
