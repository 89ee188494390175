"""gameqa.media.h264_qp on real x264 encodes (MKV, MP4, Annex B): each picture's slice QP, read from the headers.

Two independent references: FFmpeg's ``trace_headers`` bitstream filter (pic_init_qp_minus26 and every
slice_qp_delta) and, at a constant QP with adaptive quantisation off, the macroblock QPs libavcodec exports while
decoding (the package's other H.264 reader), which then all equal the slice QP.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import av
import pytest

import clipgen
from gameqa.errors import MediaError
from gameqa.media.bitstream import frame_qps
from gameqa.media.h264_qp import H264QpParser

_TRACE_LINE = re.compile(r"\]\s+\d+\s+(\w+)\S*\s+[01]+\s+=\s+(-?\d+)\s*$")
_SECTION = re.compile(r"\]\s+(Picture Parameter Set|Slice Header|Sequence Parameter Set)\s*$")


def slice_qps(path) -> list[float]:
    return list(frame_qps(path, "h264", h264="slice").qps)


def _x264(path: Path, params: str, frames: int = 12, size: str = "160x96", preset: str = "veryfast",
          extra: tuple[str, ...] = (), source: str = "testsrc2") -> Path:
    clipgen.run_ffmpeg(["-f", "lavfi", "-i", f"{source}=size={size}:rate=25", "-frames:v", str(frames),
                        "-c:v", "libx264", "-preset", preset, *extra, "-x264-params", params,
                        "-pix_fmt", "yuv420p", os.fspath(path)])
    return path


def _trace_qps(path: Path) -> tuple[list[float], str]:
    """Per-picture slice QPs as FFmpeg's trace_headers reads them (a picture begins at first_mb_in_slice 0)."""
    done = subprocess.run(
        [clipgen.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "info", "-i", os.fspath(path), "-map", "0:v:0",
         "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1000:]
    init_qp: dict[int, int] = {}
    pictures: list[list[int]] = []
    section, pps, first = "", 0, False
    for line in done.stderr.splitlines():
        head = _SECTION.search(line)
        if head:
            section = head[1]
            continue
        match = _TRACE_LINE.search(line)
        if not match:
            continue
        name, value = match[1], int(match[2])
        if name == "pic_parameter_set_id":
            pps = value
        elif name == "pic_init_qp_minus26" and section == "Picture Parameter Set":
            init_qp[pps] = value
        elif name == "first_mb_in_slice":
            first = value == 0
        elif name == "slice_qp_delta":
            qp = 26 + init_qp[pps] + value
            if first or not pictures:
                pictures.append([qp])
            else:
                pictures[-1].append(qp)
    return [sum(q) / len(q) for q in pictures], done.stderr


def _decoded_frames(path: Path) -> int:
    with av.open(os.fspath(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("qp", [30, 22])
def test_constant_qp_in_mkv_mp4_and_annex_b_as_the_macroblocks_say(media_dir, need_ffmpeg, qp):
    """x264 at one constant QP (no AQ, I/P/B at the same QP): every picture of the MKV, the MP4 and the raw Annex B
    stream has exactly it, as each decoded macroblock does."""
    mkv = _x264(media_dir / f"h264cqp{qp}.mkv", f"qp={qp}:ipratio=1:pbratio=1:aq-mode=0:bframes=2")
    frames = _decoded_frames(mkv)
    assert frames == 12
    assert slice_qps(mkv) == [qp] * frames == list(frame_qps(mkv, "h264", h264="macroblock").qps)
    mp4, raw = media_dir / f"h264cqp{qp}.mp4", media_dir / f"h264cqp{qp}.h264"
    clipgen.run_ffmpeg(["-i", os.fspath(mkv), "-c", "copy", os.fspath(mp4)])
    clipgen.run_ffmpeg(["-i", os.fspath(mkv), "-c", "copy", "-f", "h264", os.fspath(raw)])
    assert slice_qps(mp4) == [qp] * frames
    assert slice_qps(raw) == [qp] * frames
    assert H264QpParser().packet(raw.read_bytes()) == [qp] * frames  # the whole byte stream as one packet


def test_b_pyramid_weighted_prediction_and_slices_match_ffmpegs_trace(media_dir, need_ffmpeg):
    """CABAC, a B-pyramid, weighted P prediction, four slices, 8x8 transforms with a scaling matrix in the PPS (High
    profile, after the fields read), several reference frames: picture by picture as FFmpeg's trace reads them; B offset from P."""
    clip = _x264(media_dir / "h264bpyr.mkv", "qp=30:ipratio=1.4:pbratio=1.3:aq-mode=0:bframes=3:b-pyramid=normal:"
                 "ref=3:weightp=2:weightb=1:slices=4:cqm=jvt", frames=20, size="192x128", preset="medium",
                 source="mandelbrot")
    qps = slice_qps(clip)
    assert len(qps) == _decoded_frames(clip) == 20
    reference, trace = _trace_qps(clip)
    assert qps == reference
    assert len(set(qps)) >= 3  # I, P and B each at their own QP
    for syntax in ("luma_log2_weight_denom", "cabac_init_idc", "pic_scaling_matrix_present_flag",
                   "direct_spatial_mv_pred_flag", "num_ref_idx_active_override_flag"):
        assert syntax in trace  # the paths this clip is meant to cover are really in it
    assert re.search(r"first_mb_in_slice\s+[01]+\s+=\s+[1-9]", trace)  # several slices per picture


def test_baseline_cavlc_interlaced_and_rate_control(media_dir, need_ffmpeg):
    """CAVLC with picture order count type 2 (Baseline, no B frames), MBAFF interlacing (frame_mbs_only_flag 0),
    and capped-VBR rate control with AQ as the corpus encodes: each as FFmpeg's trace reads it."""
    base = _x264(media_dir / "h264base.mp4", "bitrate=60:vbv-maxrate=60:vbv-bufsize=120", frames=16,
                 extra=("-profile:v", "baseline"))
    interlaced = _x264(media_dir / "h264tff.mkv", "interlaced=1:tff=1:bitrate=150", frames=16, size="160x96")
    corpus = media_dir / "h264corpus.mkv"
    clipgen.run_ffmpeg(["-f", "lavfi", "-i", "mandelbrot=size=320x180:rate=30", "-frames:v", "30", "-c:v", "libx264",
                        "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "150k", "-maxrate", "150k",
                        "-bufsize", "300k", "-pix_fmt", "yuv420p", os.fspath(corpus)])
    for clip, syntax in ((base, r"pic_order_cnt_type\s+[01]+\s+=\s+2"), (interlaced, r"frame_mbs_only_flag\s+0\s+=\s+0"),
                         (corpus, r"entropy_coding_mode_flag\s+1\s+=\s+1")):
        qps = slice_qps(clip)
        reference, trace = _trace_qps(clip)
        assert qps == reference and len(qps) == _decoded_frames(clip), clip
        assert re.search(syntax, trace), clip
        assert all(0 <= q <= 51 for q in qps)
    assert len(set(slice_qps(corpus))) >= 3  # rate control moves the QP from picture to picture


def test_bad_input(media_dir, need_ffmpeg, tmp_path):
    """Truncated headers, slices without their parameter sets, a bad avcC: a MediaError saying what."""
    raw = _x264(media_dir / "h264bad.h264", "qp=30", frames=3)
    data = raw.read_bytes()
    idr = data.find(b"\x00\x00\x01\x65")  # nal_ref_idc 3, type 5
    assert idr > 0
    cut = tmp_path / "cut.h264"
    cut.write_bytes(data[:idr + 5])
    with pytest.raises(MediaError) as err:
        slice_qps(cut)
    assert str(err.value).startswith(f"{cut}: truncated slice header")
    with pytest.raises(MediaError, match="picture parameter set 0"):
        H264QpParser().packet(data[idr:])
    with pytest.raises(MediaError, match="truncated avcC"):
        H264QpParser(bytes([1, 100, 0, 30, 0xFF, 0xE1, 0, 40, 0x67]))
    with pytest.raises(ValueError, match="h264 reader"):
        frame_qps(raw, h264="blocks")
