"""Moving ground-truth scores between rating scales (linear, with direction and clipping).

Named scales: ``"acr5"`` (1-5 ACR MOS), ``"0-100"``, ``"1-10"``, ``"0-1"``; any ``(low, high)`` pair also
works. On every scale ``low`` is the worst score and ``high`` the best; pass ``higher_is_better=False``
for a source where a smaller value is better (a DMOS, a distortion level) and it is flipped.
"""
from __future__ import annotations

import numpy as np

from gameqa.errors import GameQAError

SCALES: dict[str, tuple[float, float]] = {
    "acr5": (1.0, 5.0),
    "0-100": (0.0, 100.0),
    "1-10": (1.0, 10.0),
    "0-1": (0.0, 1.0),
}


def scale_range(scale: str | tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` of a named scale or of a given pair; GameQAError if unknown or empty."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise GameQAError(None, f"unknown score scale {scale!r}; use one of {', '.join(SCALES)} or (low, high)")
        return SCALES[scale]
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise GameQAError(None, f"a score scale is a name or a (low, high) pair, got {scale!r}") from None
    if not high > low:
        raise GameQAError(None, f"score scale needs low < high, got ({low}, {high})")
    return low, high


def rescale(values, from_scale, to_scale, *, higher_is_better: bool = True, clip: bool = True) -> np.ndarray:
    """Map ``values`` linearly from ``from_scale`` onto ``to_scale`` (ends onto ends).

    ``higher_is_better=False`` flips the source so its low end lands on the target's best end.
    ``clip=True`` limits the result to the target range (values outside the source range otherwise map
    outside it). NaN stays NaN.
    """
    src_low, src_high = scale_range(from_scale)
    dst_low, dst_high = scale_range(to_scale)
    arr = np.asarray(values, dtype=np.float64)
    unit = (arr - src_low) / (src_high - src_low)
    if not higher_is_better:
        unit = 1.0 - unit
    out = dst_low + unit * (dst_high - dst_low)
    if clip:
        out = np.clip(out, dst_low, dst_high)
    return out


def to_mos5(values, from_range, *, higher_is_better: bool = True, clip: bool = True) -> np.ndarray:
    """Rescale ``values`` onto the 1-5 ACR MOS scale (see :func:`rescale`)."""
    return rescale(values, from_range, "acr5", higher_is_better=higher_is_better, clip=clip)
