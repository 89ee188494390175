"""gameqa.media.bitstream: the encoder's quantiser per frame, for the four codecs of the corpus (real encodes)."""
from __future__ import annotations

import re

import pytest

import clipgen
from gameqa.errors import MediaError
from gameqa.media.bitstream import QPCollector, frame_qps
from gameqa.media.video import iter_frames


def test_h264_constant_qp_reads_every_macroblock(tmp_path):
    # -qp 30 with no I/P offsets and no adaptive quantisation: every macroblock of every frame is coded at 30
    # (the decoder exports a base QP of 26 plus a delta per macroblock, so a reader of the base alone fails).
    clip = clipgen.make_clip(tmp_path / "qp30.mkv", codec="libx264", size=(160, 96), fps=10, seconds=1.2,
                             extra=["-qp", "30", "-x264-params", "ipratio=1:pbratio=1:aq-mode=0", "-bf", "0"])
    qps = frame_qps(clip)
    assert qps.codec == "h264" and qps.qps == (30.0,) * 12
    assert qps.to_dict() == {"codec": "h264", "frames": 12, "mean_qp": 30.0, "qp_max": 51, "level": round(30 / 51, 5)}


def test_h264_frame_qp_is_the_mean_over_its_macroblocks_as_x264_logs_it(tmp_path):
    # Rate control with adaptive quantisation: QPs vary over each frame. x264's first-pass log gives each frame's
    # mean macroblock QP after AQ ("aq:"), in coded order (no B-frames, so the decode order too).
    log = tmp_path / "x264"
    clip = clipgen.make_clip(tmp_path / "aq.mkv", codec="libx264", size=(320, 192), fps=15, seconds=1,
                             source="mandelbrot", extra=["-b:v", "150k", "-bf", "0", "-pass", "1",
                                                         "-passlogfile", str(log)])
    lines = (tmp_path / "x264-0.log").read_text().splitlines()
    logged = {int(re.search(r"out:(\d+)", line)[1]): float(re.search(r" aq:([\d.]+)", line)[1])
              for line in lines if line.startswith("in:")}
    qps = frame_qps(clip).qps
    assert len(qps) == len(logged) == 15 and len(set(logged.values())) > 3
    assert qps == pytest.approx([logged[i] for i in range(15)], abs=0.01)


@pytest.mark.parametrize("quantizer", [20, 40])
def test_vp9_fixed_quantizer_gives_its_q_index(tmp_path, quantizer):
    # libvpx maps its quantizer (0..63) to the q index as 4 * q below 61.
    clip = clipgen.make_clip(tmp_path / "fixed.webm", codec="libvpx-vp9", size=(160, 96), fps=10, seconds=1.2,
                             extra=["-qmin", str(quantizer), "-qmax", str(quantizer), "-b:v", "1M", "-aq-mode", "0"])
    qps = frame_qps(clip)
    assert qps.codec == "vp9" and qps.qp_max == 255 and qps.qps == (4.0 * quantizer,) * 12


@pytest.mark.parametrize("encoder, ext", [("libx264", "mkv"), ("libx265", "mkv"), ("libvpx-vp9", "webm"),
                                          ("libsvtav1", "mkv")])
def test_a_lower_bitrate_is_quantised_coarser(tmp_path, encoder, ext):
    levels = {}
    for rate in ("50k", "800k"):
        clip = clipgen.make_clip(tmp_path / f"{rate}.{ext}", codec=encoder, size=(320, 192), fps=15, seconds=1,
                                 source="mandelbrot", extra=["-b:v", rate])
        qps = frame_qps(clip)
        assert len(qps.qps) == 15 and all(0 <= q <= qps.qp_max for q in qps.qps)
        levels[rate] = qps.level
    assert levels["50k"] > levels["800k"] + 0.2


def test_other_codecs_and_broken_files_are_named(tmp_path):
    mpeg4 = clipgen.make_clip(tmp_path / "old.avi", codec="mpeg4", size=(160, 96), fps=10, seconds=0.5)
    with pytest.raises(MediaError, match="no quantiser reader for mpeg4 video") as err:
        frame_qps(mpeg4)
    assert err.value.path == str(mpeg4)

    h264 = clipgen.make_clip(tmp_path / "avc.mkv", codec="libx264", size=(160, 96), fps=10, seconds=2)
    with pytest.raises(MediaError, match="is h264, not hevc"):
        frame_qps(h264, "hevc")
    cut = clipgen.truncate_file(h264, tmp_path / "cut.mkv", keep=0.5)
    with pytest.raises(MediaError, match="ends early") as err:
        frame_qps(cut)
    assert err.value.path == str(cut)
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(MediaError) as err:
        frame_qps(junk)
    assert err.value.path == str(junk)


@pytest.mark.parametrize("encoder, ext", [("libx264", "mp4"), ("libvpx-vp9", "webm")])
@pytest.mark.parametrize("policy", ["fps:2", "uniform:3", "all"])
def test_the_quantiser_read_while_sampling_is_the_whole_streams(tmp_path, encoder, ext, policy):
    # B-frames and frame threads in the sampled decode: the collector still gets every frame's QP, in decode order.
    clip = clipgen.make_clip(tmp_path / f"c.{ext}", codec=encoder, size=(160, 96), fps=10, seconds=2,
                             extra=["-b:v", "40k"] + (["-bf", "3"] if encoder == "libx264" else []))
    collector = QPCollector()
    frames = list(iter_frames(clip, policy, collector))
    assert len(frames) == {"fps:2": 4, "uniform:3": 3, "all": 20}[policy]
    assert collector.result() == frame_qps(clip)


def test_the_collector_gives_nothing_for_a_codec_read_from_headers_or_a_decode_cut_short(tmp_path):
    hevc = clipgen.make_clip(tmp_path / "c.mkv", codec="libx265", size=(160, 96), fps=10, seconds=1)
    collector = QPCollector()
    assert len(list(iter_frames(hevc, "fps:2", collector))) == 2 and collector.result() is None
    h264 = clipgen.make_clip(tmp_path / "c.mp4", size=(160, 96), fps=10, seconds=1)
    collector = QPCollector()
    frames = iter_frames(h264, "all", collector)
    next(frames), frames.close()  # the consumer stopped after one frame
    assert collector.result() is None


def test_the_quantiser_read_while_sampling_a_720p_clip_is_the_same_every_time():
    # Frame-threaded decoding exported QP maps that changed between runs on this clip; every read must equal the
    # single-threaded header-to-end pass.
    from pathlib import Path
    import gameqa
    clip = Path(gameqa.__file__).parent / "assets" / "wesnoth_720p30.mp4"
    whole = frame_qps(clip)
    for _ in range(3):
        collector = QPCollector()
        list(iter_frames(clip, "fps:2", collector))
        assert collector.result() == whole
