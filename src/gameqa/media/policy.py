"""Frame sampling policies: which decoded frames of a clip are kept.

A policy is written as text so it fits in configs and on the command line:

* ``all``        every decoded frame
* ``every:N``    decode indices 0, N, 2N, ...
* ``fps:F``      F frames per second of presentation time, chosen by timestamp (works for
                 variable frame rate): for each grid time k/F, the first frame shown at or after it
* ``uniform:K``  K frames spread evenly over the clip: the centre frame of each of K equal runs
                 of decode indices (needs the frame count; it is counted when the header lacks it)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from gameqa.errors import ConfigError

DEFAULT_SAMPLE = "fps:2"
"""The default policy: two frames per second of video."""
# Frames per model call. Small, so that with the decode thread running ahead (see ``gameqa.scoring``) the model starts
# early and little is left to score after the last frame is decoded: on a 10 s 1080p60 clip (fps:2, bundled
# eraque, 1 thread) batches of 8 took 1.47x the decode-alone time, batches of 2 1.37x, of 1 1.35x.
DEFAULT_BATCH = 2

PolicyKind = Literal["all", "every", "fps", "uniform"]

_SYNTAX = "expected one of all, every:N, fps:F, uniform:K"
# Timestamps in some containers (Matroska: 1 ms ticks) are rounded; a frame this close before
# a grid time still counts as being at it.
_TIMESTAMP_TOLERANCE = Fraction(1, 1000)


@dataclass(frozen=True)
class SamplePolicy:
    """A parsed sampling policy; ``str(policy)`` gives back its canonical text."""

    kind: PolicyKind
    every: int = 1
    fps: Fraction = Fraction(0)
    count: int = 0

    @classmethod
    def parse(cls, text: "str | SamplePolicy") -> "SamplePolicy":
        """Parse ``all``, ``every:N``, ``fps:F`` or ``uniform:K``; a bad text raises ConfigError."""
        if isinstance(text, SamplePolicy):
            return text
        if not isinstance(text, str):
            raise ConfigError(None, f"sample policy must be text, got {type(text).__name__}; {_SYNTAX}")
        cleaned = text.strip().lower()
        name, _, value = cleaned.partition(":")
        name, value = name.strip(), value.strip()
        if name == "all" and not value:
            return cls("all")
        if name == "every":
            return cls("every", every=_positive_int(text, value, "N"))
        if name == "uniform":
            return cls("uniform", count=_positive_int(text, value, "K"))
        if name == "fps":
            return cls("fps", fps=_positive_rate(text, value))
        raise ConfigError(None, f"bad sample policy {text!r}: {_SYNTAX}")

    def __str__(self) -> str:
        if self.kind == "every":
            return f"every:{self.every}"
        if self.kind == "uniform":
            return f"uniform:{self.count}"
        if self.kind == "fps":
            return f"fps:{_format_rate(self.fps)}"
        return "all"

    @property
    def needs_frame_count(self) -> bool:
        """True when the selection depends on how many frames the clip has."""
        return self.kind == "uniform"


def uniform_indices(frame_count: int, count: int) -> list[int]:
    """Decode indices for ``uniform:count`` on a clip of ``frame_count`` frames.

    The clip is cut into ``count`` equal runs and the centre frame of each run is taken, so
    ``uniform:1`` gives the middle frame and asking for more frames than exist gives them all.
    """
    if frame_count <= 0:
        return []
    if count >= frame_count:
        return list(range(frame_count))
    return [math.floor((2 * i + 1) * frame_count / (2 * count)) for i in range(count)]


class FrameSelector:
    """Decides, frame by frame in decode order, whether a frame is kept.

    ``seconds`` is the frame's presentation time relative to the first frame, as an exact
    Fraction. ``finished(index)`` tells the reader it can stop decoding early.
    """

    def __init__(self, policy: SamplePolicy, frame_count: int | None = None):
        self.policy = policy
        self._next_time = Fraction(0)
        self._targets: list[int] = []
        self._target_pos = 0
        if policy.kind == "uniform":
            if frame_count is None:
                raise ValueError("uniform sampling needs the frame count")
            self._targets = uniform_indices(frame_count, policy.count)

    def keep(self, index: int, seconds: Fraction) -> bool:
        """Whether the frame with this decode index and presentation time is sampled."""
        kind = self.policy.kind
        if kind == "all":
            return True
        if kind == "every":
            return index % self.policy.every == 0
        if kind == "fps":
            if seconds + _TIMESTAMP_TOLERANCE < self._next_time:
                return False
            rate = self.policy.fps
            # The next grid point strictly after this frame: one frame never serves two picks.
            self._next_time = Fraction(math.floor((seconds + _TIMESTAMP_TOLERANCE) * rate) + 1) / rate
            return True
        # uniform
        if self._target_pos < len(self._targets) and index == self._targets[self._target_pos]:
            while self._target_pos < len(self._targets) and self._targets[self._target_pos] <= index:
                self._target_pos += 1
            return True
        return False

    def finished(self, index: int) -> bool:
        """True when no frame after ``index`` can be kept (only ``uniform`` ends early)."""
        return self.policy.kind == "uniform" and self._target_pos >= len(self._targets)

    @property
    def missed_targets(self) -> int:
        """For ``uniform``: how many target indices the stream ended before reaching."""
        return len(self._targets) - self._target_pos


def _positive_int(text: str, value: str, letter: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:  # "²" is a digit to isdigit()
        raise ConfigError(None, f"bad sample policy {text!r}: {letter} must be a whole number above 0; {_SYNTAX}")
    return int(value)


def _positive_rate(text: str, value: str) -> Fraction:
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError, OverflowError):
        rate = Fraction(0)
    if rate <= 0 or rate > 1000:
        raise ConfigError(None, f"bad sample policy {text!r}: F must be a number of frames per second in (0, 1000]; {_SYNTAX}")
    return rate


def _format_rate(rate: Fraction) -> str:
    if rate.denominator == 1:
        return str(rate.numerator)
    as_float = float(rate)
    if Fraction(repr(as_float)) == rate:
        return repr(as_float)
    return f"{rate.numerator}/{rate.denominator}"
