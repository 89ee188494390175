"""The encoder's quantiser, frame by frame: what a no-reference model cannot see in the pixels.

At one bitrate a level that is hard to encode (rain over the whole screen) is quantised harder than an easy one,
and the encoder drops what it cannot afford; the decoded frames then look clean, the quantiser does not. Read from
the bitstream of the first video stream: H.264 (each macroblock's QP) and VP9 (each frame's base q index) from
the encoding parameters libavcodec exports while decoding; HEVC (each picture's slice QP) and AV1 (each frame's
base_q_idx) from the headers alone (:mod:`gameqa.media.hevc_qp`, :mod:`gameqa.media.av1_qp`). H.264 has a second,
header-only reader (``h264="slice"``: each picture's slice QP, :mod:`gameqa.media.h264_qp`): no decoding, so it
costs a demux pass, where the macroblock reader costs a single-threaded decode.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import av.error
import numpy as np

from gameqa.errors import MediaError, naming
from gameqa.media.av1_qp import Av1QpParser
from gameqa.media.h264_qp import H264QpParser
from gameqa.media.hevc_qp import HevcQpParser
from gameqa.media.video import _reason, demux_video

QP_MAX = {"h264": 51, "hevc": 51, "vp9": 255, "av1": 255}  # the top of each codec's quantiser scale
_HEADER_PARSERS = {"hevc": HevcQpParser, "av1": Av1QpParser}
H264_READERS = ("macroblock", "slice")  # each macroblock's QP (decoded), or each slice's (headers alone)


@dataclass(frozen=True)
class FrameQPs:
    """One stream's quantiser: ``qps`` per coded frame in decode order, on the codec's own scale (0..``qp_max``)."""

    codec: str
    qps: tuple[float, ...]

    @property
    def qp_max(self) -> int:
        return QP_MAX[self.codec]

    @property
    def mean(self) -> float:
        return float(np.mean(self.qps))

    @property
    def level(self) -> float:
        """The mean QP as a share of the codec's scale (0 = finest, 1 = coarsest)."""
        return self.mean / self.qp_max

    def to_dict(self) -> dict:
        return {"codec": self.codec, "frames": len(self.qps), "mean_qp": round(self.mean, 3),
                "qp_max": self.qp_max, "level": round(self.level, 5)}


def frame_qps(path: str | os.PathLike, codec: str | None = None, h264: str = "macroblock") -> FrameQPs:
    """The quantiser of every coded frame of ``path`` (H.264, HEVC, VP9 or AV1; only ``codec`` when given);
    ``h264``: the H.264 reader (``H264_READERS``).

    A MediaError names the file when the stream is of another codec, or when its headers or packets are
    corrupt or truncated. HEVC, AV1 and H.264 read by slice need only demuxing; VP9 and H.264 read by macroblock
    are decoded (a few hundred frames a second at 720p)."""
    if h264 not in H264_READERS:
        raise ValueError(f"h264 reader must be one of {H264_READERS}, not {h264!r}")
    path = os.fspath(path)
    qps: list[float] = []
    expected, codec = codec, None
    parser = context = None
    with naming(path):
        for stream, packet in demux_video(path):
            if codec is None:
                codec = stream.codec_context.codec.canonical_name
                if expected and codec != expected:
                    raise MediaError(path, f"the video stream is {codec}, not {expected}")
                if codec in _HEADER_PARSERS or (codec == "h264" and h264 == "slice"):
                    parser = _HEADER_PARSERS.get(codec, H264QpParser)(stream.codec_context.extradata)
                elif codec in QP_MAX:
                    context = av.CodecContext.create(codec, "r")
                    context.extradata = stream.codec_context.extradata
                    context.options = {"export_side_data": "venc_params"}
                else:
                    raise MediaError(path, f"no quantiser reader for {codec} video (H.264, HEVC, VP9 and AV1 have one)")
            if parser is not None:
                frames = parser.packet(bytes(packet))
                if not packet.is_discard:  # decoded but never shown (an MP4 edit list's hidden start)
                    qps += frames
            else:
                qps += _decoded_qps(path, context, packet)
        if context is not None:
            qps += _decoded_qps(path, context, None)  # the frames still in the decoder
    if codec is None:
        raise MediaError(path, "the video stream has no packets")
    if not qps:
        raise MediaError(path, f"no {codec} frame carried a quantiser")
    return FrameQPs(codec, tuple(float(q) for q in qps))


class QPCollector:
    """The quantiser of every frame a sampled decode goes through (``iter_frames(..., quantiser=QPCollector())``),
    so that an H.264 or VP9 clip scored with a quantiser head is decoded once. ``result()`` is the stream's
    :class:`FrameQPs`, or None when the decode was of another codec or did not reach the end of the stream."""

    def __init__(self, codecs: tuple[str, ...] = ("h264", "vp9")) -> None:
        self.codecs = codecs  # those of the two whose quantiser this decode reads
        self.codec: str | None = None
        self._qps: list[float] = []
        self._complete = False

    def start(self, stream) -> bool:
        """Called before the first frame is decoded; True when this codec's quantiser is read while decoding (the
        decode then goes on to the stream's end)."""
        codec = stream.codec_context.codec.canonical_name
        if codec not in ("h264", "vp9") or codec not in self.codecs:
            return False
        self.codec = codec
        stream.thread_type = "SLICE"  # frame threads hand back QP maps that differ from run to run (seen on 720p H.264)
        stream.codec_context.options = {**dict(stream.codec_context.options or {}), "export_side_data": "venc_params"}
        return True

    def add(self, frame) -> None:
        qp = _frame_qp(frame)
        if qp is not None:
            self._qps.append(qp)

    def finish(self) -> None:
        """The decode reached the end of the stream."""
        self._complete = True

    def result(self) -> FrameQPs | None:
        return FrameQPs(self.codec, tuple(self._qps)) if self._complete and self.codec and self._qps else None


def _frame_qp(frame) -> float | None:
    """The QP of one decoded frame, from the parameters it exports; H.264 gives one per macroblock (their mean), VP9
    only the frame's base q index (no blocks)."""
    for data in frame.side_data:
        if data.type == av.sidedata.sidedata.Type.VIDEO_ENC_PARAMS:
            return float(data.qp_map().mean()) if data.nb_blocks else float(data.qp)
    return None


def _decoded_qps(path: str, context, packet) -> list[float]:
    """Decode ``packet`` (None: flush) and return the QP of each frame it gives, from the exported parameters."""
    try:
        frames = context.decode(packet)
    except av.error.FFmpegError as err:
        raise MediaError(path, f"corrupt video stream ({_reason(err)})") from err
    return [qp for qp in map(_frame_qp, frames) if qp is not None]
