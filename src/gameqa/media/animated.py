"""Animated images (GIF, APNG, animated WebP) read as short videos, with Pillow.

A gameplay GIF is a clip: every frame counts, each shown for its own delay. ``media_kind`` calls such a file a
video, and the video readers come here for it (FFmpeg decodes GIF and APNG but not animated WebP; Pillow reads all
three, with each frame's delay and the GIF disposal rules). A delay of 10 ms or less is shown as 100 ms, as web
browsers do, so a file whose delays are all zero still has a timeline.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from fractions import Fraction

from PIL import Image, ImageSequence

from gameqa.errors import MediaError
from gameqa.media.image import DEFAULT_MAX_PIXELS, _reason, _to_rgb_array, _too_large_message
from gameqa.media.policy import FrameSelector, SamplePolicy
from gameqa.media.video import Frame, VideoInfo

_FORMATS = {"GIF": "gif", "PNG": "apng", "WEBP": "webp"}
_SHORTEST_DELAY_MS = 10  # at or under this, browsers show a frame for 100 ms
_DEFAULT_DELAY_MS = 100
_PIX_FMTS = {"P": "pal8", "RGB": "rgb24", "RGBA": "rgba", "L": "gray", "LA": "ya8", "1": "monob"}  # FFmpeg's names


def could_be_animated(head: bytes) -> bool:
    """Whether a file starting with these bytes is a GIF, PNG or WebP, the formats that animate."""
    return (head[:6] in (b"GIF87a", b"GIF89a") or head.startswith(b"\x89PNG\r\n\x1a\n")
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def is_animated(path: str) -> bool:
    """True for a GIF, PNG or WebP file with more than one frame (False for anything else, readable or not)."""
    try:
        with open(path, "rb") as handle:
            if not could_be_animated(handle.read(12)):
                return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.format in _FORMATS and bool(getattr(image, "is_animated", False))
    except Exception:  # not Pillow's to read, damaged, or a bomb: the readers that follow say which
        return False


def _delay(image: Image.Image) -> Fraction:
    """The current frame's display time in seconds (WebP tells it once the frame is loaded)."""
    image.load()
    ms = float(image.info.get("duration") or 0)
    if ms <= _SHORTEST_DELAY_MS:
        ms = _DEFAULT_DELAY_MS
    return Fraction(ms).limit_denominator(1_000_000) / 1000


def _open(path: str) -> Image.Image:
    try:
        image = Image.open(path)
    except Exception as err:  # is_animated opened it a moment ago: the file changed or went away
        raise MediaError(path, f"cannot read animated image ({_reason(err)})") from err
    width, height = image.size
    if width * height > DEFAULT_MAX_PIXELS:
        image.close()
        raise MediaError(path, _too_large_message(width * height, DEFAULT_MAX_PIXELS, (width, height)))
    return image


def _timeline(image: Image.Image, path: str) -> Iterator[tuple[int, Fraction, Fraction]]:
    """(index, the time the frame is first shown, its delay) for each frame in turn, ``image`` sought to it; a
    frame that cannot be read is a MediaError naming ``path`` and how many frames came before it."""
    index, seconds = -1, Fraction(0)
    try:
        for _frame in ImageSequence.Iterator(image):
            index += 1
            delay = _delay(image)
            yield index, seconds, delay
            seconds += delay
    except (OSError, EOFError, ValueError, SyntaxError) as err:
        raise MediaError(path, f"truncated or corrupt animated image after {index + 1} frames "
                               f"({_reason(err)})") from err


def probe_animated(path: str) -> VideoInfo:
    """The properties of an animated image, as ``probe_video`` gives them for a video (every delay is read)."""
    with _open(path) as image:
        pix_fmt = _PIX_FMTS.get(image.mode, image.mode.lower())  # the first frame's, before compositing
        delays = [delay for _index, _seconds, delay in _timeline(image, path)]
        duration = float(sum(delays))
        return VideoInfo(path=path, container=_FORMATS[image.format], codec=_FORMATS[image.format],
                         width=image.width, height=image.height, fps=len(delays) / duration,
                         frame_count=len(delays), duration=duration, rotation=0, pix_fmt=pix_fmt,
                         bit_depth=8, has_audio=False)


def decode_animated(path: str, policy: SamplePolicy) -> Iterator[Frame]:
    """The frames of an animated image that ``policy`` selects, 8-bit RGB, each at the time it is first shown."""
    with _open(path) as image:
        selector = FrameSelector(policy, getattr(image, "n_frames", 1) if policy.needs_frame_count else None)
        for index, seconds, _delay_s in _timeline(image, path):
            if selector.keep(index, seconds):
                yield Frame(index, float(seconds), _to_rgb_array(image, path))
            if selector.finished(index):
                return
