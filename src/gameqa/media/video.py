"""Video probing and streaming, sampled frame decoding with PyAV.

Every frame is decoded (with codec threading) so that selection by index and by timestamp is
exact, but only the sampled frames are converted to RGB, which is where most of the per-frame
cost would be. Frames come out upright (display-matrix rotation applied), 8-bit RGB whatever the
source bit depth, and one at a time: memory is bounded by what the caller keeps, not the clip.
A non-square sample aspect ratio (anamorphic video, e.g. 1440x1080 shown 16:9) is not stretched: frames keep the
stored pixel grid, where the codec's artefacts are, and ``display_width``/``display_height`` leave it out too.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np
from av.stream import Discard
from av.video.format import VideoFormat

from gameqa.errors import ConfigError, MediaError
from gameqa.media.files import AV_READ_OPTIONS, check_media_file
from gameqa.media.policy import DEFAULT_SAMPLE, FrameSelector, SamplePolicy

# A stream that ends this much earlier than its header says (seconds, or this share of the
# duration if larger) is reported as truncated.
_TRUNCATION_SLACK_SECONDS = 0.5
_TRUNCATION_SLACK_SHARE = 0.1
# A frame this much earlier than the one before it starts a new run of timestamps (a discontinuity).
_BACKWARDS_SLACK_SECONDS = Fraction(1, 2)


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video file. ``width``/``height`` are as coded (before the
    rotation); ``display_width``/``display_height`` are what a viewer sees. ``rotation`` is the
    display-matrix rotation in degrees counter-clockwise (0, 90, 180 or 270), as ffmpeg reports it.
    ``fps`` is the average rate (frames / duration), which is what a variable-rate clip has."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    rotation: int
    pix_fmt: str
    bit_depth: int
    has_audio: bool

    @property
    def display_width(self) -> int:
        """Width of the upright picture, after the rotation."""
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def display_height(self) -> int:
        """Height of the upright picture, after the rotation."""
        return self.width if self.rotation in (90, 270) else self.height

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, display size included."""
        out = asdict(self)
        out["display_width"] = self.display_width
        out["display_height"] = self.display_height
        return out


@dataclass(frozen=True, eq=False)
class Frame:
    """One sampled frame: decode ``index`` (0-based, presentation order), ``timestamp`` in seconds
    from the first frame, and the upright picture as ``rgb`` (H x W x 3, uint8)."""

    index: int
    timestamp: float
    rgb: np.ndarray = field(repr=False)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's properties. Decodes only the first frame (for its rotation); counts the frames by
    demuxing (``_count_packets``)."""
    path_text = check_media_file(path)
    from gameqa.media.animated import is_animated, probe_animated  # it builds on this module's Frame and VideoInfo

    if is_animated(path_text):
        return probe_animated(path_text)
    with _open_container(path_text) as container:
        stream = _video_stream(container, path_text)
        codec_context = stream.codec_context
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as err:
            raise MediaError(path_text, f"corrupt video stream, the first frame does not decode ({_reason(err)})") from err
        if first is None:
            raise MediaError(path_text, "the video stream has no frames")
        pix_fmt = codec_context.pix_fmt or first.format.name
        frame_count = _count_packets(path_text)
        fps = _average_rate(stream)
        duration = _stream_duration(container, stream)
        if duration is None:
            duration = frame_count / fps if fps else 0.0
        if not fps and duration:
            fps = frame_count / duration
        return VideoInfo(
            path=path_text,
            container=container.format.name,
            codec=getattr(codec_context.codec, "canonical_name", None) or codec_context.name,
            width=codec_context.width or first.width,
            height=codec_context.height or first.height,
            fps=float(fps),
            frame_count=int(frame_count),
            duration=float(duration),
            rotation=_quarter_turns(first.rotation) * 90,
            pix_fmt=pix_fmt,
            bit_depth=_bit_depth(pix_fmt),
            has_audio=any(s.type == "audio" for s in container.streams),
        )


def iter_frames(path: str | os.PathLike, policy: str | SamplePolicy = DEFAULT_SAMPLE,
                quantiser=None) -> Iterator[Frame]:
    """Yield the frames the policy selects, upright 8-bit RGB, in decode order.

    A bad policy or a missing file raises at once; decoding problems raise MediaError while
    iterating (a stream that stops well short of its header's duration raises at the end).
    ``quantiser`` (a :class:`gameqa.media.bitstream.QPCollector`) reads the quantiser of every decoded frame on the way.
    """
    sample_policy = SamplePolicy.parse(policy)
    path_text = check_media_file(path)
    from gameqa.media.animated import decode_animated, is_animated  # it builds on this module's Frame and VideoInfo

    if is_animated(path_text):
        return decode_animated(path_text, sample_policy)
    return _decode_sampled(path_text, sample_policy, quantiser)


def iter_batches(
    path: str | os.PathLike, policy: str | SamplePolicy = DEFAULT_SAMPLE, batch_size: int = 8, quantiser=None
) -> Iterator[list[Frame]]:
    """Like :func:`iter_frames`, grouped into lists of ``batch_size`` (the last may be shorter)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(None, f"batch size must be a whole number above 0, got {batch_size!r}")
    frames = iter_frames(path, policy, quantiser)
    return _batched(frames, batch_size)


def read_frames(path: str | os.PathLike, policy: str | SamplePolicy = DEFAULT_SAMPLE) -> list[Frame]:
    """All sampled frames in a list (for short clips and tests; prefer :func:`iter_frames`)."""
    return list(iter_frames(path, policy))


def _batched(frames: Iterator[Frame], batch_size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _decode_sampled(path: str, policy: SamplePolicy, quantiser=None) -> Iterator[Frame]:
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        frame_count = None
        if policy.needs_frame_count:
            frame_count = _count_packets(path)
        selector = FrameSelector(policy, frame_count)
        for other in container.streams:
            if other.index != stream.index:
                other.discard = Discard.all
        stream.thread_type = "AUTO"  # frame + slice threads; thread_count 0 lets libavcodec pick
        reading_qps = quantiser is not None and quantiser.start(stream)  # then every frame is decoded

        time_base = stream.time_base
        rate = _average_rate(stream) or Fraction(30)
        index = -1
        first_pts = None
        last_frame = None
        last_seconds = Fraction(0)
        offset = Fraction(0)
        last_kept = -1
        stopped_early = False
        decoder = container.decode(stream)
        while True:
            try:
                frame = next(decoder, None)
            except av.error.FFmpegError as err:
                raise MediaError(path, f"corrupt or truncated video stream after {index + 1} frames ({_reason(err)})") from err
            if frame is None:
                break
            index += 1
            if frame.pts is None or time_base is None:
                seconds = index / rate
            else:
                if first_pts is None:
                    first_pts = frame.pts
                raw = (frame.pts - first_pts) * time_base
                seconds = raw + offset
                if index and seconds + _BACKWARDS_SLACK_SECONDS < last_seconds:
                    # Timestamps went back (concatenated MPEG-TS, a wrapped clock): the timeline goes on from the
                    # last frame, or fps:F would never sample again.
                    offset = last_seconds + 1 / rate - raw
                    seconds = raw + offset
            last_frame, last_seconds = frame, seconds
            if reading_qps:
                quantiser.add(frame)
            if selector.keep(index, seconds):
                last_kept = index
                yield Frame(index, float(seconds), _upright_rgb(frame))
            if selector.finished(index) and not reading_qps:
                stopped_early = True
                break

        if index < 0:
            raise MediaError(path, "no frames could be decoded from the video stream")
        if stopped_early:
            return
        if policy.kind == "uniform" and selector.missed_targets and last_kept != index:
            # The stream held fewer frames than its header said: the last frame stands in.
            yield Frame(index, float(last_seconds), _upright_rgb(last_frame))
        _check_not_truncated(path, container, stream, last_frame, last_seconds, rate, index + 1)
        if reading_qps:
            quantiser.finish()


def _check_not_truncated(path, container, stream, last_frame, last_seconds, rate, decoded) -> None:
    if last_frame.duration and stream.time_base is not None:
        frame_span = last_frame.duration * stream.time_base
    else:
        frame_span = 1 / rate
    _check_stream_end(path, container, stream, float(last_seconds + frame_span), f"{decoded} frames")


def _check_stream_end(path, container, stream, end_seconds: float, what: str) -> None:
    """Raise when the stream's data ends well before the duration its header gives (a truncated file)."""
    expected = _stream_duration(container, stream, container_ok=len(container.streams) == 1)
    if not expected:
        return
    slack = max(_TRUNCATION_SLACK_SECONDS, _TRUNCATION_SLACK_SHARE * expected)
    if end_seconds + slack < expected:
        raise MediaError(
            path,
            f"video stream ends early: {what} up to {end_seconds:.2f} s of the "
            f"{expected:.2f} s the header gives (truncated or corrupt file)",
        )


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame.rotation)
    if turns:
        # frame.rotation is counter-clockwise, as is np.rot90: this matches ffmpeg's autorotate.
        rgb = np.rot90(rgb, turns)
    # Rows of odd widths are padded in the frame buffer; callers get a plain compact array.
    return np.ascontiguousarray(rgb)


def _quarter_turns(degrees: float | int | None) -> int:
    if not degrees:
        return 0
    return int(round(float(degrees) / 90.0)) % 4


def _open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r", **AV_READ_OPTIONS)
    except av.error.FileNotFoundError as err:
        raise MediaError(path, "file not found") from err
    except av.error.PermissionError as err:
        raise MediaError(path, "permission denied") from err
    except av.error.FFmpegError as err:
        raise MediaError(path, f"cannot be read as video, not a video or a truncated/corrupt file ({_reason(err)})") from err
    except OSError as err:
        raise MediaError(path, f"cannot read file ({err.strerror or err})") from err


def _video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    videos = [
        s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)
    ]
    if videos:
        return videos[0]
    if any(s.type == "audio" for s in container.streams):
        raise MediaError(path, "audio-only file: no video stream")
    raise MediaError(path, "no video stream in the file")


def _count_packets(path: str) -> int:
    """The frames the decoder will give, counted by demuxing (no decoding; milliseconds for a 10 s clip).

    Not the header's count: WebM/Matroska store none, and an MP4 cut with an edit list counts the frames it
    hides (packets flagged discard, e.g. the start of a GOP before the cut), which would skew ``uniform:K``.
    The packets' timestamps must also reach the duration the header gives: ``uniform:K`` stops decoding at its
    last pick, so this is where a truncated file shows."""
    return sum(1 for _, packet in demux_video(path) if not packet.is_discard)


def demux_video(path: str | os.PathLike) -> Iterator[tuple[av.video.stream.VideoStream, av.Packet]]:
    """(stream, packet) for every packet with data of the first video stream of ``path``, demuxed only.

    Packets flagged discard (an MP4 edit list's hidden start) come too: a bitstream reader needs them, a frame
    count skips them. A MediaError names the file when the container is corrupt, or when its packets stop well
    before the duration the header gives (a truncated file whose demuxer drops the cut packet)."""
    path = check_media_file(path)
    with _open_container(path) as container:
        stream = _video_stream(container, path)
        for other in container.streams:
            if other.index != stream.index:
                other.discard = Discard.all
        count = 0
        first = end = None
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                yield stream, packet
                count += 1
                start = packet.pts if packet.pts is not None else packet.dts
                if start is not None:
                    first = start if first is None else min(first, start)
                    stop = start + (packet.duration or 0)
                    end = stop if end is None else max(end, stop)
        except av.error.FFmpegError as err:
            raise MediaError(path, f"corrupt or truncated container after {count} packets ({_reason(err)})") from err
        if end is not None and stream.time_base is not None:
            _check_stream_end(path, container, stream, float((end - first) * stream.time_base), f"{count} packets")


def _average_rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(0)


def _stream_duration(container, stream, container_ok: bool = True) -> float | None:
    """The video stream's duration in seconds from the headers, or None when unknown."""
    if stream.duration and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    # Matroska's DURATION tag and segment duration are where the stream ends, not how long it lasts: a file whose
    # timestamps start later (-output_ts_offset, a cut with -copyts) lasts that much less.
    start = 0.0
    if "matroska" in (container.format.name or "") and stream.start_time and stream.time_base is not None:
        start = max(0.0, float(stream.start_time * stream.time_base))
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        seconds = _parse_clock(tag)
        if seconds and seconds > start:
            return seconds - start
    if container_ok and container.duration and container.duration / av.time_base > start:
        return container.duration / av.time_base - start
    return None


def _parse_clock(text: str) -> float | None:
    """Seconds from ``HH:MM:SS.fraction`` (the Matroska DURATION tag)."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _bit_depth(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return str(text).strip().rstrip(".")
