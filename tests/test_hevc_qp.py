"""gameqa.media.hevc_qp on real x265 encodes (MKV, MP4, Annex B) and on hand-built headers.

Two independent references check the parser: x265's own per-frame CSV log (``csv=``, encode order = decode
order; its QP column is the rate-control QP before rounding) and FFmpeg's ``trace_headers`` bitstream filter,
which prints init_qp_minus26 and every slice_qp_delta.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import av
import pytest

import clipgen
from gameqa.errors import MediaError
from gameqa.media.bitstream import frame_qps
from gameqa.media.hevc_qp import HevcQpParser

_TRACE_LINE = re.compile(r"\]\s+\d+\s+(\w+)\S*\s+[01]+\s+=\s+(-?\d+)\s*$")


def hevc_frame_qps(path) -> list[float]:
    """The per-frame QPs of a hevc file, through the package's reader."""
    return list(frame_qps(path, "hevc").qps)


def _x265(path: Path, params: str, frames: int = 12, size: str = "160x96", preset: str = "ultrafast",
          extra: tuple[str, ...] = (), pix_fmt: str = "yuv420p") -> Path:
    """Encode testsrc2 with libx265 (``params`` for -x265-params; x265's CSV log goes to ``path``.csv)."""
    clipgen.run_ffmpeg([
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", str(frames), "-c:v", "libx265",
        "-preset", preset, *extra, "-x265-params", f"log-level=error:csv={path}.csv:csv-log-level=1:{params}",
        "-pix_fmt", pix_fmt, os.fspath(path),
    ])
    return path


def _x265_log(path: Path) -> list[tuple[str, float]]:
    """(slice type, QP) per frame from x265's CSV log, in encode order."""
    with open(f"{path}.csv", newline="") as file:
        rows = [row for row in csv.reader(file)][1:]
    return [(row[2].strip(), float(row[4])) for row in rows if len(row) > 5]


def _trace_qps(path: Path) -> tuple[list[float], str]:
    """Per-picture slice QPs as FFmpeg's trace_headers bitstream filter reads them, and its whole trace."""
    done = subprocess.run(
        [clipgen.FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "info", "-i", os.fspath(path), "-map", "0:v:0",
         "-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-1000:]
    init_qp: dict[int, int] = {}
    pictures: list[list[int]] = []
    pps = slice_pps = first = 0
    for line in done.stderr.splitlines():
        match = _TRACE_LINE.search(line)
        if not match:
            continue
        name, value = match[1], int(match[2])
        if name == "pps_pic_parameter_set_id":
            pps = value
        elif name == "init_qp_minus26":
            init_qp[pps] = value
        elif name == "first_slice_segment_in_pic_flag":
            first = value
        elif name == "slice_pic_parameter_set_id":
            slice_pps = value
        elif name == "slice_qp_delta":
            qp = 26 + init_qp[slice_pps] + value
            if first:
                pictures.append([qp])
            else:
                pictures[-1].append(qp)
    return [sum(qps) / len(qps) for qps in pictures], done.stderr


def _decoded_frames(path: Path) -> int:
    with av.open(os.fspath(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("qp", [30, 22])
def test_constant_qp_in_mkv_mp4_and_annex_b(media_dir, need_ffmpeg, qp):
    """x265 at one constant QP: every picture of the MKV, the MP4 and the raw Annex B stream has exactly it."""
    mkv = _x265(media_dir / f"cqp{qp}.mkv", f"qp={qp}:ipratio=1:pbratio=1:aq-mode=0")
    frames = _decoded_frames(mkv)
    assert frames == 12
    assert hevc_frame_qps(mkv) == [qp] * frames

    with av.open(os.fspath(mkv)) as container:
        extradata = container.streams.video[0].codec_context.extradata
    assert extradata[0] == 1 and extradata[21] & 3 == 3  # an hvcC record, 4-byte NAL unit lengths

    mp4 = media_dir / f"cqp{qp}.mp4"
    raw = media_dir / f"cqp{qp}.hevc"
    clipgen.run_ffmpeg(["-i", os.fspath(mkv), "-c", "copy", os.fspath(mp4)])
    clipgen.run_ffmpeg(["-i", os.fspath(mkv), "-c", "copy", "-f", "hevc", os.fspath(raw)])
    assert hevc_frame_qps(mp4) == [qp] * frames
    assert hevc_frame_qps(raw) == [qp] * frames
    # The whole byte stream as one packet, parameter sets in band: every picture, in decode order.
    assert HevcQpParser().packet(raw.read_bytes()) == [qp] * frames


def test_b_frames_weighted_prediction_and_slices(media_dir, need_ffmpeg):
    """B-pyramid, weighted P and B prediction, three slices, SAO: I/P at the QP, B frames offset by pbratio,
    frame by frame as x265 logs them and as FFmpeg's trace reads them."""
    clip = _x265(media_dir / "bpyr.mkv", "qp=30:ipratio=1:pbratio=1.3:aq-mode=0:bframes=3:b-pyramid=1:ref=3:"
                 "weightp=1:weightb=1:slices=3", frames=16, size="160x128", preset="veryfast")
    qps = hevc_frame_qps(clip)
    log = _x265_log(clip)
    assert len(qps) == len(log) == _decoded_frames(clip) == 16
    assert qps == [qp for _, qp in log]
    # 6 * log2(1.3) = 2.27: non-reference B at 32, reference B (the pyramid's middle) halfway, at 31.
    expected = {"I-SLICE": 30, "P-SLICE": 30, "B-SLICE": 31, "b-SLICE": 32}
    assert qps == [expected[kind] for kind, _ in log]
    assert {"B-SLICE", "b-SLICE", "P-SLICE"} <= {kind for kind, _ in log}
    reference, trace = _trace_qps(clip)
    assert qps == reference
    for syntax in ("luma_log2_weight_denom", "slice_segment_address", "slice_sao_luma_flag", "collocated_ref_idx"):
        assert syntax in trace  # the paths this clip is meant to cover are really in it


def test_monochrome_with_sao(media_dir, need_ffmpeg):
    """4:0:0 (ChromaArrayType 0: no slice_sao_chroma_flag, no chroma weights) with SAO and weighted P."""
    clip = _x265(media_dir / "gray.mkv", "qp=27:ipratio=1:pbratio=1:aq-mode=0:bframes=2:weightp=1:slices=2",
                 frames=8, preset="veryfast", pix_fmt="gray")
    qps = hevc_frame_qps(clip)
    assert qps == [27] * _decoded_frames(clip) and len(qps) == 8
    reference, trace = _trace_qps(clip)
    assert qps == reference
    assert re.search(r"chroma_format_idc\s+\d+\s+=\s+0", trace) and "slice_sao_luma_flag" in trace


def test_rate_control_qps_match_x265_log(media_dir, need_ffmpeg):
    """Average-bitrate rate control (no AQ, no cutree): each picture's QP is x265's rate-control QP rounded,
    varying from picture to picture; 4:4:4 10-bit with a scaling list in the SPS and two slices."""
    clip = _x265(media_dir / "abr.mp4", "bitrate=150:aq-mode=0:cutree=0:bframes=3:weightb=1:slices=2:"
                 "scaling-list=default:temporal-layers=3", frames=20, pix_fmt="yuv444p10le")
    qps = hevc_frame_qps(clip)
    log = [qp for _, qp in _x265_log(clip)]
    assert len(qps) == len(log) == _decoded_frames(clip) == 20
    assert qps == [float(int(qp + 0.5)) for qp in log]
    assert len(set(qps)) >= 4
    reference, trace = _trace_qps(clip)
    assert qps == reference
    assert re.search(r"sps_max_sub_layers_minus1\s+\d+\s+=\s+[1-6]", trace)
    assert re.search(r"chroma_format_idc\s+\d+\s+=\s+3", trace)


def test_default_settings_like_the_corpus(media_dir, need_ffmpeg):
    """x265 as the corpus encodes (superfast, zerolatency, 200k, AQ on): one QP per decoded frame, all in
    0..51 and as FFmpeg reads them; ten times the bitrate gives a lower mean QP."""
    means = []
    for rate in ("200k", "2000k"):
        clip = media_dir / f"corpus_{rate}.mkv"
        clipgen.run_ffmpeg([
            "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-frames:v", "20", "-c:v", "libx265",
            "-preset", "superfast", "-tune", "zerolatency", "-b:v", rate, "-x265-params", "log-level=error",
            "-pix_fmt", "yuv420p", os.fspath(clip),
        ])
        qps = hevc_frame_qps(clip)
        assert len(qps) == _decoded_frames(clip) == 20
        assert all(0 <= qp <= 51 for qp in qps)
        assert qps == _trace_qps(clip)[0]
        means.append(sum(qps) / len(qps))
    assert means[1] < means[0] - 3


def test_bad_input(media_dir, need_ffmpeg, tmp_path):
    """Random bytes, truncated streams, a missing PPS, H.264, a bad hvcC: a MediaError naming the file."""
    junk = tmp_path / "x.mkv"
    junk.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(MediaError) as err:
        hevc_frame_qps(junk)
    assert str(junk) in str(err.value)

    raw = media_dir / "bad_source.hevc"
    clipgen.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25", "-frames:v", "3", "-c:v", "libx265",
                        "-preset", "ultrafast", "-x265-params", "log-level=error", "-f", "hevc", os.fspath(raw)])
    data = raw.read_bytes()
    idr = min(data.find(b"\x00\x00\x01" + bytes([kind << 1, 1])) % len(data) for kind in (19, 20))  # first IDR
    cut = tmp_path / "cut.hevc"
    cut.write_bytes(data[:idr + 6])  # NAL unit header and 1 byte of the slice segment header
    with pytest.raises(MediaError) as err:
        hevc_frame_qps(cut)
    assert str(err.value).startswith(f"{cut}: truncated slice segment header")
    with pytest.raises(MediaError, match="truncated slice segment header"):
        HevcQpParser().packet(data[:idr + 6])
    with pytest.raises(MediaError, match="truncated sequence parameter set"):
        HevcQpParser().packet(data[:data.index(b"\x00\x00\x01\x42\x01") + 12])
    with pytest.raises(MediaError, match="picture parameter set 0"):
        HevcQpParser().packet(data[idr:])  # slices without their parameter sets

    whole = _x265(media_dir / "two_seconds.mkv", "qp=30", frames=50)
    assert len(hevc_frame_qps(whole)) == 50
    short = clipgen.truncate_file(whole, tmp_path / "short.mkv", keep=0.5)  # Matroska drops the cut block quietly
    with pytest.raises(MediaError, match="ends early") as err:
        hevc_frame_qps(short)
    assert str(short) in str(err.value)

    h264 = clipgen.make_clip(tmp_path / "avc.mkv", codec="libx264", size=(64, 48), fps=10, seconds=0.3)
    with pytest.raises(MediaError, match="is h264, not hevc") as err:
        hevc_frame_qps(h264)
    assert str(h264) in str(err.value)
    with pytest.raises(MediaError, match="hvcC"):
        HevcQpParser(b"\x01" + bytes(21) + b"\x01")  # claims one NAL unit array, holds none


class _BitWriter:
    """Writes RBSP syntax elements (for hand-built NAL units)."""

    def __init__(self):
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> _BitWriter:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, value: int) -> _BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> _BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def nal(self, kind: int) -> bytes:
        """The NAL unit (header, emulation prevention) with rbsp_trailing_bits."""
        bits = self.bits + [1] + [0] * (-(len(self.bits) + 1) % 8)
        rbsp = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))
        out, zeros = bytearray([kind << 1, 1]), 0
        for byte in rbsp:
            if zeros >= 2 and byte <= 3:
                out.append(3)
                zeros = 0
            out.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        return bytes(out)


def _scaling_list_data(w: _BitWriter) -> None:
    for size_id in range(4):
        for matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            explicit = (size_id + matrix_id) % 2 == 0
            w.u(1, explicit)
            if not explicit:
                w.ue(1 if matrix_id else 0)  # scaling_list_pred_matrix_id_delta
                continue
            if size_id > 1:
                w.se(-3)
            for i in range(min(64, 1 << (4 + 2 * size_id))):
                w.se((i % 5) - 2)


def _hand_built_stream() -> tuple[list[bytes], list[list[bytes]]]:
    """Parameter sets and three pictures' slice segments using syntax x265 never writes: SPS RPSs predicted from
    each other (7.3.7), long-term pictures, list modification, dependent slice segments, tiles, PCM, scaling
    lists in both SPS and PPS, extra slice header bits, output flags, a sub-layer in profile_tier_level.
    The pictures' QPs are 29 (slices at 28 and 30, and a dependent segment), 19 (B) and 32 (P)."""
    sps = _BitWriter().u(4, 0).u(3, 1).u(1, 1)  # vps id, sps_max_sub_layers_minus1 = 1, temporal id nesting
    sps.u(8, 1).u(32, 0x60000000).u(4, 0b1001).u(44, 0).u(8, 93)  # general profile, flags, level
    sps.u(1, 1).u(1, 1).u(2 * 7, 0).u(88, 0x7A5).u(8, 90)  # sub-layer 0: profile and level
    sps.ue(0).ue(1).ue(160).ue(96).u(1, 1).ue(0).ue(0).ue(0).ue(2)  # id, 4:2:0, size, conformance window
    sps.ue(0).ue(0).ue(2)  # bit depths, log2_max_pic_order_cnt_lsb_minus4: 6-bit POC LSBs
    sps.u(1, 1).ue(3).ue(2).ue(0).ue(4).ue(3).ue(1)  # ordering info for both sub-layers
    sps.ue(0).ue(1).ue(0).ue(2).ue(1).ue(1)  # 16x16 CTBs: 10x6 = 60 of them, 6-bit slice addresses
    sps.u(1, 1).u(1, 1)
    _scaling_list_data(sps)
    sps.u(1, 1).u(1, 1).u(1, 1).u(4, 7).u(4, 7).ue(0).ue(1).u(1, 0)  # amp, SAO, PCM
    sps.ue(3)  # num_short_term_ref_pic_sets
    sps.ue(2).ue(1).ue(0).u(1, 1).ue(1).u(1, 0).ue(0).u(1, 1)  # RPS 0: S0 {-1 used, -3}, S1 {+1 used}
    # RPS 1 from RPS 0, deltaRps -1: entries -2, -4, 0 (dropped though use_delta_flag), -1 -> S0 {-1 used, -2 used, -4}
    sps.u(1, 1).u(1, 1).ue(0).u(1, 1).u(1, 0).u(1, 1).u(1, 0).u(1, 1).u(1, 1)
    # RPS 2 from RPS 1, deltaRps +2: entries +1, 0 (dropped), -2, +2 -> S0 {-2}, S1 {+1 used, +2 used}
    sps.u(1, 1).u(1, 0).ue(1).u(1, 1).u(1, 0).u(1, 0).u(1, 0).u(1, 1).u(1, 1)
    sps.u(1, 1).ue(2).u(6, 5).u(1, 1).u(6, 9).u(1, 0)  # long-term pictures in the SPS: lsb 5 used, lsb 9 not
    sps.u(1, 1).u(1, 1).u(1, 0).u(1, 0)  # temporal MVP, strong intra smoothing, no VUI, no extensions

    def pps(pps_id: int, scaling_list: bool) -> bytes:
        w = _BitWriter().ue(pps_id).ue(0).u(1, 1).u(1, 1).u(3, 2).u(1, 0).u(1, 1)  # dependent slices, output flag...
        w.ue(1).ue(0).se(-3)  # 2 and 1 default refs, init_qp_minus26 = -3
        w.u(1, 0).u(1, 1).u(1, 1).ue(1).se(1).se(-1).u(1, 1).u(1, 1).u(1, 1).u(1, 0)  # ... weighted P and B
        w.u(1, 1).u(1, 1).ue(2).ue(1).u(1, 0).ue(2).ue(3).ue(2).u(1, 0)  # 3x2 tiles, not uniform
        w.u(1, 1).u(1, 1).u(1, 1).u(1, 0).se(0).se(-1)  # deblocking control
        w.u(1, scaling_list)
        if scaling_list:
            _scaling_list_data(w)
        return w.u(1, 1).ue(0).u(1, 0).u(1, 0).nal(34)  # lists_modification_present_flag, merge level

    def tail(w: _BitWriter) -> bytes:  # whatever follows slice_qp_delta: never read
        return w.u(16, 0xFFFF).u(24, 0).nal

    cra = 21
    i_first = _BitWriter().u(1, 1).u(1, 0).ue(3).u(2, 3).ue(2).u(1, 1).u(6, 17).u(1, 1).u(2, 2)
    i_first.ue(0).ue(0).u(1, 1).u(1, 1).u(1, 1).se(5)  # no long-term pics, TMVP, SAO, QP 23 + 5 = 28
    i_second = _BitWriter().u(1, 0).u(1, 0).ue(3).u(1, 0).u(6, 30).u(2, 0).ue(2).u(1, 1).u(6, 17).u(1, 1).u(2, 2)
    i_second.ue(0).ue(0).u(1, 1).u(1, 0).u(1, 0).se(7)  # QP 30
    dependent = _BitWriter().u(1, 0).u(1, 0).ue(3).u(1, 1).u(6, 45).u(40, 0x123456789A)

    b = _BitWriter().u(1, 1).ue(3).u(2, 1).ue(0).u(1, 0).u(6, 18).u(1, 0)  # B, its own RPS:
    # from RPS 2 (delta_idx_minus1 0), deltaRps -1: entries -3, 0 (dropped), +1, -1 -> 3 pictures used
    b.u(1, 1).ue(0).u(1, 1).ue(0).u(1, 1).u(1, 0).u(1, 0).u(1, 1).u(1, 1)
    b.ue(1).ue(1).u(1, 0).u(1, 1).ue(2).u(6, 40).u(1, 1).u(1, 0)  # 2 long-term pics, both used: NumPicTotalCurr 5
    b.u(1, 1).u(1, 1).u(1, 0)  # TMVP, SAO luma and chroma
    b.u(1, 1).ue(2).ue(1)  # 3 and 2 active refs
    b.u(1, 1).u(9, 0b001100010).u(1, 1).u(6, 0b011000)  # list_entry_l0/l1: 3 bits each
    b.u(1, 1).u(1, 1).u(1, 0).ue(1)  # mvd_l1_zero, cabac_init, collocated from L1, collocated_ref_idx
    b.ue(6).se(-1).u(3, 0b101).u(3, 0b011)  # pred_weight_table: L0 flags
    b.se(3).se(-4).se(1).se(0).se(2).se(-2).se(5).se(6).se(-1).se(1).se(1).se(7)
    b.u(2, 0b01).u(2, 0b10).se(1).se(1).se(-1).se(-1).se(9).se(-9)  # L1
    b.ue(2).se(-4)  # five_minus_max_num_merge_cand, QP 19

    p = _BitWriter().u(1, 1).ue(4).u(2, 0).ue(1).u(1, 1).u(6, 19).u(1, 1).u(2, 1)  # P, SPS RPS 1: 2 used
    p.ue(0).ue(0).u(1, 0).u(1, 1).u(1, 0)  # no long-term pics, no TMVP, SAO luma not chroma
    p.u(1, 0).u(1, 1).u(2, 0b01).u(1, 1)  # 2 default refs, list_entry_l0: 1 bit each, cabac_init
    p.ue(5).se(1).u(2, 0b11).u(2, 0b01).se(-2).se(2).se(3).se(3).se(-3).se(-3).se(1).se(-1)  # weights
    p.ue(0).se(9)  # QP 32

    parameter_sets = [bytes([32 << 1, 1, 0x0C, 0x01, 0xFF, 0xFF]), sps.nal(33), pps(3, True), pps(4, False)]
    pictures = [[tail(i_first)(cra), tail(i_second)(cra), tail(dependent)(cra)], [tail(b)(1)], [tail(p)(0)]]
    return parameter_sets, pictures


def test_hand_built_headers_annex_b_and_hvcc():
    """Hand-built parameter sets and slice headers, as an Annex B stream and as hvcC with 2-byte lengths."""
    parameter_sets, pictures = _hand_built_stream()
    start = b"\x00\x00\x00\x01"
    stream = b"".join(start + unit for unit in parameter_sets + [u for picture in pictures for u in picture])
    assert b"\x00\x00\x03" in stream  # emulation prevention is exercised
    assert HevcQpParser().packet(stream) == [29.0, 19.0, 32.0]

    hvcc = bytearray([1, 1, 0x60, 0, 0, 0, 0x90] + [0] * 5 + [93, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0D])
    hvcc.append(len(parameter_sets))
    for unit in parameter_sets:
        hvcc += bytes([0x80 | unit[0] >> 1]) + (1).to_bytes(2, "big") + len(unit).to_bytes(2, "big") + unit
    parser = HevcQpParser(bytes(hvcc))
    packets = [b"".join(len(u).to_bytes(2, "big") + u for u in picture) for picture in pictures]
    assert [parser.packet(packet) for packet in packets] == [[29.0], [19.0], [32.0]]
    with pytest.raises(MediaError, match="truncated"):
        parser.packet(packets[1][:-3])  # the length prefix says more than the packet holds
