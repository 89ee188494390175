"""A quantiser head on a frame model: the clip's pooled pixel score and its encoder's quantiser, combined.

A model folder may carry one (``"bitstream_head": "qp_head.json"`` in its ``model.json``). For a video whose
codec the head was fitted on, the clip's score is a least-squares combination per codec
(:class:`~gameqa.models.qp_linear.QPLinear` with the pixel score as its last feature) of the pooled frame scores
and what the bitstream says: the mean quantiser as a share of the codec's scale, the picture height as a share of
the model's display height (capped at 1: a picture taller than the display is shown at full detail) and the
measured bitrate (file size over duration). Images, other codecs and pooling other than the head's keep the
frame model's score; the result says why. The head's file says what it was fitted on (``fitted_on``) and how an
H.264 stream's quantiser is read (``h264_qp``: each macroblock's QP, decoded, or each slice's, from the headers
alone; a file without the key was fitted on macroblocks).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from gameqa.errors import ConfigError, MediaError, read_config_text
from gameqa.models.qp_linear import FEATURES, QPLinear

FORMAT = "gameqa-qp-head/1"
_KEYS = {"format", "features", "coefs", "display_height", "pooling", "fitted_on", "h264_qp"}


@dataclass(frozen=True)
class QPHead:
    """Coefficients per codec over the quantiser features plus the pooled pixel score."""

    linear: QPLinear
    display_height: int
    pooling: str = "mean"
    fitted_on: dict = field(default_factory=dict)
    h264_qp: str = "macroblock"

    def __post_init__(self):
        from gameqa.media.bitstream import H264_READERS

        if not self.linear.with_cnn:
            raise ValueError("a quantiser head needs a fit with the pixel score as a feature (with_cnn)")
        if self.h264_qp not in H264_READERS:
            raise ValueError(f"h264_qp must be one of {H264_READERS}, not {self.h264_qp!r}")

    @property
    def decoded_codecs(self) -> tuple[str, ...]:
        """The codecs whose quantiser is read while decoding (a scorer collects it in its own decode)."""
        return ("h264", "vp9") if self.h264_qp == "macroblock" else ("vp9",)

    @property
    def codecs(self) -> list[str]:
        return sorted(self.linear.coefs)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "features": [*FEATURES, "pixel score"],
                "coefs": {c: list(w) for c, w in sorted(self.linear.coefs.items())},
                "display_height": self.display_height, "pooling": self.pooling, "h264_qp": self.h264_qp,
                "fitted_on": self.fitted_on}

    def save(self, path: str | os.PathLike) -> Path:
        from gameqa.sinks import write_atomic

        write_atomic(json.dumps(self.to_dict(), indent=1) + "\n", os.fspath(path))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QPHead":
        """Read a head file; a ConfigError names the file and what is wrong with it."""
        text = read_config_text(path, "quantiser head")
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(path, f"cannot read the quantiser head: {exc}") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise ConfigError(path, f"not a quantiser head (format {FORMAT!r} expected)")
        unknown = set(spec) - _KEYS
        if unknown:
            raise ConfigError(path, f"unknown keys {sorted(unknown)}")
        if spec.get("features") != [*FEATURES, "pixel score"]:
            raise ConfigError(path, f"features {spec.get('features')!r} are not this version's "
                                    f"{[*FEATURES, 'pixel score']!r}")
        coefs = spec.get("coefs")
        width = len(FEATURES) + 1
        if (not isinstance(coefs, dict) or not coefs
                or any(not isinstance(w, list) or len(w) != width
                       or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in w)
                       for w in coefs.values())):
            raise ConfigError(path, f"coefs must map each codec to {width} finite numbers")
        height = spec.get("display_height")
        if not isinstance(height, int) or height <= 0:
            raise ConfigError(path, f"display_height must be a positive whole number, not {height!r}")
        from gameqa.media.bitstream import H264_READERS

        reader = spec.get("h264_qp", "macroblock")
        if reader not in H264_READERS:
            raise ConfigError(path, f"h264_qp must be one of {', '.join(H264_READERS)}, not {reader!r}")
        return cls(QPLinear({c: tuple(float(v) for v in w) for c, w in coefs.items()}, with_cnn=True), height,
                   str(spec.get("pooling", "mean")), dict(spec.get("fitted_on") or {}), reader)

    def read_stream(self, path: str | os.PathLike, qps=None) -> dict:
        """What the head needs of a video file: codec, mean quantiser, level, height and measured kb/s; ``qps``
        (:class:`~gameqa.media.bitstream.FrameQPs`) when the quantiser was read already. A MediaError names the
        file when its stream cannot be read."""
        from gameqa.media.bitstream import frame_qps
        from gameqa.media.video import probe_video

        path = os.fspath(path)
        info = probe_video(path)
        if info.duration <= 0:
            raise MediaError(path, "the video has no duration: its bitrate cannot be measured")
        stream = {"codec": info.codec, "height": info.display_height,
                  "kbps": os.path.getsize(path) * 8 / 1000 / info.duration}
        if info.codec in self.linear.coefs:
            if qps is None or qps.codec != info.codec or qps.codec not in self.decoded_codecs:
                qps = frame_qps(path, info.codec, h264=self.h264_qp)
            stream.update(mean_qp=qps.mean, qp_level=qps.level)
        return stream

    def apply(self, path: str | os.PathLike, kind: str, pixel_score: float, pooling: str,
              score_range: tuple[float, float], qps=None) -> tuple[float, dict]:
        """The clip's score and what the head read; the pixel score itself where the head does not apply (an
        image, another pooling, a codec it was not fitted on). ``qps``: the stream's quantiser if the caller read it
        while decoding (else it is read here)."""
        info: dict = {"pixel_overall": float(pixel_score)}

        def kept(reason: str) -> tuple[float, dict]:
            return pixel_score, {**info, "applied": False, "reason": reason}

        if kind != "video":
            return kept("an image has no bitstream")
        if pooling != self.pooling:
            return kept(f"the head was fitted on {self.pooling} pooling, not {pooling}")
        stream = self.read_stream(path, qps)
        info.update(codec=stream["codec"], kbps=round(stream["kbps"], 3))
        if "qp_level" not in stream:
            return kept(f"no quantiser head for {stream['codec']} (fitted: {', '.join(self.codecs)})")
        clip = {"codec": stream["codec"], "level": stream["qp_level"], "actual_kbps": stream["kbps"],
                "height": min(stream["height"], self.display_height), "display_height": self.display_height,
                "cnn": float(pixel_score)}
        score = float(self.linear.predict([clip])[0])
        low, high = score_range
        info.update(mean_qp=round(stream["mean_qp"], 3), qp_level=round(stream["qp_level"], 5), applied=True)
        return min(high, max(low, score)), info
