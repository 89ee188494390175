"""The AV1 base_q_idx reader (gameqa.media.av1_qp) on real libaom and SVT-AV1 encodes.

Checked three ways: exact values where the encoder is told one quantizer (libaom maps its quantizer q, 0..63, to
base_q_idx 4*q for q <= 61, 62 -> 249, 63 -> 255: checked empirically with these settings), against an independent
reader (FFmpeg's own AV1 header parser, the ``trace_headers`` bitstream filter) where rate control picks the values,
and against PyAV's decoded frame count: every frame header with show_frame = 0 (an alt-ref) is shown later by one
show_existing_frame header, so the new frame headers are exactly as many as the decoded frames.
"""
from __future__ import annotations

import random
import re
import struct
import subprocess
from pathlib import Path

import av
import pytest

import clipgen
from gameqa.errors import MediaError
from gameqa.media.bitstream import frame_qps
from gameqa.media.av1_qp import Av1QpParser

SIZE = (160, 96)


def av1_frame_qps(path) -> list[float]:
    """The per-frame QPs of a av1 file, through the package's reader."""
    return list(frame_qps(path, "av1").qps)


def _aom_fixed(clip_factory, q: int) -> Path:
    """12 frames of libaom (realtime) told to use quantizer q for every frame, no adaptive quantization."""
    return clip_factory(f"aom_q{q}.mkv", codec="libaom-av1", size=SIZE, fps=10, seconds=1.2, extra=[
        "-crf", str(q), "-qmin", str(q), "-qmax", str(q), "-aq-mode", "0", "-aom-params", "deltaq-mode=0"])


def _svt(clip_factory, name: str, params: str = "", bitrate: str | None = None, seconds: float = 2.0) -> Path:
    """SVT-AV1 at preset 12 (its random-access mini-GOPs, with hidden alt-ref frames), 10 fps."""
    extra = ["-svtav1-params", "verbosity=0" + (":" + params if params else "")]
    if bitrate:
        extra += ["-b:v", bitrate]
    return clip_factory(name, codec="libsvtav1", size=SIZE, fps=10, seconds=seconds, extra=extra)


def _stream(path: Path) -> tuple[bytes, list[bytes]]:
    """The first video stream's extradata and its non-empty packets."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        return extradata, [bytes(p) for p in container.demux(stream) if p.size]


def _parse(path: Path) -> tuple[list[int], Av1QpParser]:
    extradata, packets = _stream(path)
    parser = Av1QpParser(extradata)
    qps = [qp for packet in packets for qp in parser.packet(packet)]
    return qps, parser


def _decoded(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _ffmpeg_trace(path: Path) -> str:
    """FFmpeg's AV1 header parser's trace of every header field (the trace_headers bitstream filter)."""
    done = subprocess.run([clipgen.FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                           "-bsf:v", "trace_headers", "-f", "null", "-"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-1000:]
    return done.stderr


def _ffmpeg_trace_qps(path: Path) -> list[int]:
    """base_q_idx of each frame header as FFmpeg's AV1 header parser reads them."""
    return [int(value) for value in re.findall(r"\bbase_q_idx\s+[01]+ = (\d+)", _ffmpeg_trace(path))]


def _obus(packet: bytes) -> list[tuple[int, bytes]]:
    """(obu_type, payload) of each OBU of a packet (no extension headers, sizes present: what the encoders write)."""
    out, pos = [], 0
    while pos < len(packet):
        head = packet[pos]
        assert not head & 0x04 and head & 0x02
        pos += 1
        size = shift = 0
        while True:
            byte = packet[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append(((head >> 3) & 15, packet[pos:pos + size]))
        pos += size
    return out


def _obu(obu_type: int, payload: bytes, extension: int | None = None, size_bytes: int = 0) -> bytes:
    """One OBU; ``extension``: the extension byte; ``size_bytes``: a leb128 size padded to that many bytes
    (0: minimal; -1: no size field)."""
    head = bytes([obu_type << 3 | (4 if extension is not None else 0) | (0 if size_bytes < 0 else 2)])
    if extension is not None:
        head += bytes([extension])
    if size_bytes < 0:
        return head + payload
    size, leb = len(payload), bytearray()
    while True:
        leb.append(size & 0x7F)
        size >>= 7
        if not size and len(leb) >= size_bytes:
            break
    for i in range(len(leb) - 1):
        leb[i] |= 0x80
    return head + bytes(leb) + payload


# (1) one quantizer for every frame: exact values


@pytest.mark.parametrize(("q", "qindex"), [(30, 120), (62, 249)])
def test_libaom_fixed_quantizer_gives_its_base_q_idx(clip_factory, q, qindex):
    path = _aom_fixed(clip_factory, q)
    assert av1_frame_qps(path) == [qindex] * 12
    assert _decoded(path) == 12


# (2) SVT-AV1: rate control, and a fixed qp at two levels


def test_svt_rate_control_matches_ffmpeg_and_the_decoded_frames(clip_factory):
    path = _svt(clip_factory, "svt_200k.mkv", bitrate="200k")
    qps, parser = _parse(path)
    assert qps == av1_frame_qps(path) == _ffmpeg_trace_qps(path)
    assert all(0 <= qp <= 255 for qp in qps) and len(set(qps)) > 3  # rate control varies it
    decoded = _decoded(path)
    assert decoded == 20
    # hidden alt-refs are new frame headers; each is shown later by a show_existing_frame header (skipped)
    assert parser.hidden_frames > 0 and parser.hidden_frames == parser.shown_existing
    assert len(qps) - parser.hidden_frames + parser.shown_existing == decoded
    assert len(qps) == decoded


def test_svt_fixed_qp_levels(clip_factory):
    means = []
    for qp in (20, 50):
        path = _svt(clip_factory, f"svt_qp{qp}.mkv", params=f"rc=0:qp={qp}", seconds=1.2)
        qps, parser = _parse(path)
        assert len(qps) == _decoded(path) == 12
        assert parser.hidden_frames == parser.shown_existing > 0
        # SVT-AV1 codes its top temporal layer at the qp's qindex (4 * qp) and the lower layers below it
        assert max(qps) == 4 * qp and min(qps) >= 0
        means.append(sum(qps) / len(qps))
    assert means[1] > means[0] + 50


# header syntax that moves base_q_idx: each encode must use the feature (per FFmpeg's trace) and agree with FFmpeg

_FEATURES = {
    # name: (codec, extra output options, a header field the trace must show non-zero or a regex the trace has[,
    # size]); all at 10 fps, 10 frames
    "error_resilient_frame_ids": ("libaom-av1", ["-crf", "40", "-aom-params", "error-resilient=1"],
                                  "frame_id_numbers_present_flag"),
    "decoder_model": ("libaom-av1", ["-crf", "40", "-aom-params", "timing-info=model"],
                      "buffer_removal_time_present_flag"),
    "sb128": ("libaom-av1", ["-crf", "40", "-aom-params", "sb-size=128"], "use_128x128_superblock"),
    "screen_content": ("libaom-av1", ["-crf", "40", "-usage", "good", "-aom-params", "tune-content=screen"],
                       "allow_screen_content_tools"),
    "no_order_hint": ("libaom-av1", ["-crf", "40", "-usage", "good", "-aom-params", "enable-order-hint=0"],
                      r"\benable_order_hint\s+0 = 0"),
    # 128 px wide coded at half width: one superblock column, so tile_info reads no bit it would read at 128 px
    "superres": ("libsvtav1", ["-svtav1-params", "verbosity=0:superres-mode=1:superres-denom=16:superres-kf-denom=16"],
                 "use_superres", (128, 64)),
    "resize_found_ref": ("libsvtav1", ["-svtav1-params", "verbosity=0:resize-mode=1:resize-denom=12"], "found_ref"),
    "tiles": ("libsvtav1", ["-svtav1-params", "verbosity=0:tile-columns=1:tile-rows=1"], "tile_cols_log2"),
}


@pytest.mark.parametrize("feature", sorted(_FEATURES))
def test_header_features_match_ffmpeg(clip_factory, feature):
    codec, extra, field, *size = _FEATURES[feature]
    path = clip_factory(f"feature_{feature}.mkv", codec=codec, size=size[0] if size else SIZE, fps=10, seconds=1.0,
                        extra=extra)
    trace = _ffmpeg_trace(path)
    pattern = field if "\\" in field else rf"\b{field}(\[\d+\])?\s+[01]+ = [1-9]"
    assert re.search(pattern, trace), f"the encoder did not use {field}"
    expected = [int(value) for value in re.findall(r"\bbase_q_idx\s+[01]+ = (\d+)", trace)]
    qps, parser = _parse(path)
    assert qps == expected and len(qps) >= 10
    assert len(qps) - parser.hidden_frames + parser.shown_existing == _decoded(path) == 10


def test_still_picture_reduced_header(clip_factory):
    path = clip_factory("aom_still.mkv", codec="libaom-av1", size=SIZE, fps=10, seconds=0.1,
                        extra=["-crf", "30", "-qmin", "30", "-qmax", "30", "-still-picture", "1"])
    assert re.search(r"\breduced_still_picture_header\s+1 = 1", _ffmpeg_trace(path))
    assert av1_frame_qps(path) == [120]


# (3) containers: av1C extradata (Matroska, WebM, MP4) and raw OBUs (IVF)


def test_same_values_from_every_container(clip_factory, media_dir):
    ivf = _svt(clip_factory, "svt_200k_1s.ivf", bitrate="200k", seconds=1.0)
    expected = _ffmpeg_trace_qps(ivf)
    assert len(expected) == 10
    assert av1_frame_qps(ivf) == expected
    assert _stream(ivf)[0][:1] == b"\x0a"  # IVF: the demuxer's extradata is a bare sequence header OBU
    for ext in ("mkv", "webm", "mp4"):
        copy = media_dir / f"svt_200k_1s_copy.{ext}"
        if not copy.exists():
            clipgen.run_ffmpeg(["-i", str(ivf), "-c", "copy", str(copy)])
        assert _stream(copy)[0][:1] == b"\x81"  # an av1C record
        assert av1_frame_qps(copy) == expected, ext


def test_in_band_sequence_header_and_none_at_all(clip_factory):
    extradata, packets = _stream(_svt(clip_factory, "svt_200k.mkv", bitrate="200k"))
    with_record = Av1QpParser(extradata)
    expected = [qp for packet in packets for qp in with_record.packet(packet)]
    in_band = Av1QpParser()  # SVT repeats the sequence header in its key frame's temporal unit
    assert [qp for packet in packets for qp in in_band.packet(packet)] == expected
    with pytest.raises(MediaError, match="before any sequence header") as err:
        Av1QpParser().packet(packets[1])
    assert err.value.path is None


# OBU syntax the encoders above do not write


def test_extension_headers_padded_sizes_delimiters_and_unsized_last_obu(clip_factory):
    extradata, packets = _stream(_aom_fixed(clip_factory, 30))
    rewritten = []
    for packet in packets:
        obus = _obus(packet)
        parts = [_obu(2, b"", extension=0, size_bytes=3)]  # a temporal delimiter, extension, padded size
        for i, (obu_type, payload) in enumerate(obus):
            last = i == len(obus) - 1
            parts.append(_obu(obu_type, payload, extension=0, size_bytes=-1 if last else 4))
        rewritten.append(b"".join(parts))
    parser = Av1QpParser(extradata)
    assert [qp for packet in rewritten for qp in parser.packet(packet)] == [120] * 12
    # a size one byte too long runs past the packet: truncated
    obu_type, payload = _obus(packets[1])[-1]
    with pytest.raises(MediaError, match="truncated"):
        Av1QpParser(extradata).packet(_obu(obu_type, payload)[:-1])


def test_frame_header_copies_and_redundant_headers_add_no_frame(clip_factory):
    """libaom with 2x2 tiles in two tile groups writes OBU_FRAME_HEADER + 2 OBU_TILE_GROUP per frame; a copy of
    the header between the groups (OBU_FRAME_HEADER again, or OBU_REDUNDANT_FRAME_HEADER) is no new frame."""
    path = clip_factory("aom_tiles_tg.mkv", codec="libaom-av1", size=SIZE, fps=10, seconds=0.6,
                        extra=["-crf", "40", "-tiles", "2x2", "-aom-params", "num-tile-groups=2"])
    expected = _ffmpeg_trace_qps(path)
    assert len(expected) == 6
    extradata, packets = _stream(path)
    for copy_type in (3, 7):
        parser, qps = Av1QpParser(extradata), []
        for packet in packets:
            obus = _obus(packet)
            header = next(payload for obu_type, payload in obus if obu_type == 3)
            assert [t for t, _ in obus if t == 4] == [4, 4]
            out = [_obu(obu_type, payload) for obu_type, payload in obus]
            out.insert(len(out) - 1, _obu(copy_type, header))  # between the two tile groups
            qps += parser.packet(b"".join(out))
        assert qps == expected, copy_type
    # once its last tile group is in, the frame is complete: the same header again starts a new frame
    parser = Av1QpParser(extradata)
    doubled = [qp for packet in packets for qp in parser.packet(packet + packet)]
    assert doubled == [qp for qp in expected for _ in range(2)]


# (4) bad input


def test_random_bytes_named_mkv(media_dir):
    path = media_dir / "x.mkv"
    path.write_bytes(random.Random(0).randbytes(4000))
    with pytest.raises(MediaError) as err:
        av1_frame_qps(path)
    assert err.value.path == str(path)


def test_truncated_ivf_packet_is_a_truncated_obu(clip_factory, media_dir):
    data = _svt(clip_factory, "svt_200k_1s.ivf", bitrate="200k", seconds=1.0).read_bytes()
    pos = struct.unpack_from("<H", data, 6)[0]  # IVF header length; then 12-byte frame headers
    pos += 12 + struct.unpack_from("<I", data, pos)[0]  # skip the key frame
    size = struct.unpack_from("<I", data, pos)[0]
    assert size > 100
    path = media_dir / "svt_cut.ivf"
    path.write_bytes(data[:pos + 12 + size // 2])  # cut the second packet in half
    with pytest.raises(MediaError, match="truncated AV1 data") as err:
        av1_frame_qps(path)
    assert err.value.path == str(path)


def test_truncated_mkv_ends_early(clip_factory, media_dir):
    path = media_dir / "svt_cut.mkv"
    clipgen.truncate_file(_svt(clip_factory, "svt_200k.mkv", bitrate="200k"), path, keep=0.5)
    with pytest.raises(MediaError, match="ends early") as err:
        av1_frame_qps(path)
    assert err.value.path == str(path)


def test_not_av1(tiny_video):
    with pytest.raises(MediaError, match="is h264, not av1") as err:
        av1_frame_qps(tiny_video)
    assert err.value.path == str(tiny_video)


def test_bad_extradata_and_garbled_packets_raise_media_error_only(clip_factory):
    with pytest.raises(MediaError, match="av1C"):
        Av1QpParser(b"\x82\x00\x0c\x00")
    extradata, packets = _stream(_svt(clip_factory, "svt_200k.mkv", bitrate="200k"))
    (obu_type, sequence_header), = _obus(extradata[4:])
    assert obu_type == 1
    with pytest.raises(MediaError, match="sequence header"):  # a whole OBU holding a cut sequence header
        Av1QpParser(extradata[:4] + _obu(1, sequence_header[:-3]))
    Av1QpParser(extradata[:4] + _obu(1, sequence_header + b"\0\0"))  # trailing bits may run on as zero bytes
    with pytest.raises(MediaError, match="trailing bits"):
        Av1QpParser(extradata[:4] + _obu(1, sequence_header + b"\x80"))
    rng = random.Random(1)
    errors = 0
    for _ in range(200):
        parser = Av1QpParser(extradata)
        try:
            for packet in packets:
                packet = bytearray(packet)
                for _ in range(rng.randint(0, 3)):
                    i = rng.randrange(min(len(packet), 48))
                    packet[i] ^= 1 << rng.randrange(8)
                parser.packet(bytes(packet))
        except MediaError as exc:  # anything else (IndexError, ValueError) fails the test
            assert exc.path is None
            errors += 1
    assert errors > 20
