"""Encode one source with one ladder spec: scale down, encode at a target bitrate with a fast preset."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gameqa.data.ladder import EncodeSpec, Ladder
from gameqa.errors import GameQAError
from gameqa.ffmpeg import available_encoders, ffmpeg_exe, has_filter, run_ffmpeg

CONTAINER = {"libvpx-vp9": ".webm"}


def encoded_size(src_w: int, src_h: int, height: int) -> tuple[int, int]:
    """The encode size for a rung: the rung's height (never above the source's), even dimensions."""
    h = min(height, src_h)
    w = round(src_w * h / src_h)
    return w - w % 2, h - h % 2


def encode_args(source: str, spec: EncodeSpec, size: tuple[int, int], src_fps: float, out: str) -> list[str]:
    """The ffmpeg argument list (after the binary) for one encode."""
    kbps = spec.rung.kbps
    fps = spec.rung.fps or src_fps
    filters = [f"scale={size[0]}:{size[1]}:flags=bicubic"]
    if spec.rung.fps:
        filters.append(f"fps={spec.rung.fps:g}")
    gop = max(1, round(spec.gop_seconds * fps))
    args = ["-y", "-i", source, "-t", f"{spec.seconds:g}", "-an", "-vf", ",".join(filters),
            "-pix_fmt", "yuv420p", "-c:v", spec.codec.encoder, *spec.codec.args,
            *spec.codec.rate_control(kbps), "-g", str(gop)]
    return args + [out]


def build_tools_missing(ladder: Ladder) -> list[str]:
    """What building ``ladder``'s clips needs and gameqa's ffmpeg lacks (its encoders, libvmaf for the labels),
    one phrase each; empty when nothing is missing. Checked once before a long build, not clip by clip."""
    how = "pip install -e '.[corpus]' (the ffmpeg inside imageio-ffmpeg has them all), or set GAMEQA_FFMPEG"
    try:
        exe = ffmpeg_exe()
        encoders, vmaf = available_encoders(), has_filter("libvmaf")
    except GameQAError:
        return [f"an ffmpeg ({how})"]
    except OSError as exc:
        return [f"a working ffmpeg: {exe} cannot run ({exc.strerror or exc}); {how}"]
    wanted = sorted({codec.encoder for codec in ladder.codecs} - encoders)
    missing = [f"the encoder{'s' * (len(wanted) > 1)} {', '.join(wanted)}"] if wanted else []
    missing += [] if vmaf else ["the libvmaf filter"]
    return [f"{' and '.join(missing)} in {exe} ({how})"] if missing else []


def encode_clip(source: str, spec: EncodeSpec, src_size: tuple[int, int], src_fps: float, out: str | Path) -> Path:
    """Encode ``source`` into ``out`` (written atomically: a temp file, then a rename)."""
    out = Path(out)
    if spec.codec.encoder not in available_encoders():
        raise GameQAError(source, f"encoder {spec.codec.encoder} is missing from this ffmpeg; skipping {spec.codec.name}")
    size = encoded_size(src_size[0], src_size[1], spec.rung.height)
    return encode_atomically(source, lambda tmp: encode_args(source, spec, size, src_fps, tmp), out, timeout=600)


def encode_atomically(source: str, args, out: str | Path, timeout: float) -> Path:
    """Run ffmpeg with ``args(tmp)`` (the argument list writing to ``tmp``, a temp file beside ``out``), then rename
    it to ``out``: an interrupted or failed encode leaves no clip. Errors name ``source``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".enc-", suffix=out.suffix)
    os.close(fd)
    try:
        run_ffmpeg(args(tmp), path=source, timeout=timeout)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
