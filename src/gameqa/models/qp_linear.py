"""A bitstream model: a clip's label from its encoder's quantiser alone, one least-squares fit per codec.

No pixel is read. Features of a clip: its mean QP as a share of the codec's top (``level``, 0 finest .. 1
coarsest, from :func:`gameqa.media.bitstream.frame_qps`), its square and cube, the coded height as a share of the
display height and its product with the level, and the log of the measured bitrate (what a deployed model knows
of a stream; the ladder's nominal rate it does not). It is the yardstick a pixel
model is held against when both read encodes labelled by a full-reference metric (``gameqa bench qp``); fitted
``with_cnn``, a pixel model's score of the clip is one more feature (a quantiser head on that model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gameqa.errors import ModelError

FEATURES = ("1", "level", "level^2", "level^3", "height share", "height share x level", "log measured kb/s")


def features(level: float, height: float, display_height: float, actual_kbps: float) -> list[float]:
    """The feature row of one clip (see ``FEATURES``)."""
    share = height / display_height
    return [1.0, level, level ** 2, level ** 3, share, share * level, math.log(actual_kbps)]


@dataclass(frozen=True)
class QPLinear:
    """Least-squares coefficients per codec, over ``FEATURES``."""

    coefs: dict[str, tuple[float, ...]]
    with_cnn: bool = False

    @classmethod
    def fit(cls, clips: list[dict], with_cnn: bool = False) -> "QPLinear":
        """Fit on clips with ``codec``, ``level``, ``height``, ``display_height``, ``actual_kbps`` and ``mos`` (and
        ``cnn``, with_cnn); a codec with fewer clips than features cannot be fitted (ModelError)."""
        by_codec: dict[str, list[dict]] = {}
        for clip in clips:
            by_codec.setdefault(clip["codec"], []).append(clip)
        coefs = {}
        for codec, rows in sorted(by_codec.items()):
            need = len(FEATURES) + with_cnn
            if len(rows) < need:
                raise ModelError(None, f"{len(rows)} {codec} clips to fit on: a fit needs at least {need}")
            x = np.array([_row(c, with_cnn) for c in rows])
            y = np.array([float(c["mos"]) for c in rows])
            coefs[codec] = tuple(float(w) for w in np.linalg.lstsq(x, y, rcond=None)[0])
        return cls(coefs, with_cnn)

    def predict(self, clips: list[dict]) -> np.ndarray:
        """One prediction per clip; a ModelError names a codec the fit had no clips of."""
        out = []
        for clip in clips:
            weights = self.coefs.get(clip["codec"])
            if weights is None:
                raise ModelError(None, f"no {clip['codec']} clips were fitted (fitted: {', '.join(self.coefs)})")
            out.append(float(np.dot(weights, _row(clip, self.with_cnn))))
        return np.array(out)


def _row(clip: dict, with_cnn: bool = False) -> list[float]:
    row = features(float(clip["level"]), float(clip["height"]), float(clip["display_height"]),
                   float(clip["actual_kbps"]))
    return (row + [float(clip["cnn"])]) if with_cnn else row
