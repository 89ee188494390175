"""Find and run the ffmpeg binary (argument lists only, never a shell string).

Order: ``$GAMEQA_FFMPEG``, the binary inside the ``imageio-ffmpeg`` wheel (it has x264, x265, VP9,
SVT-AV1, libaom and libvmaf), then ``ffmpeg`` on PATH.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import Sequence

from gameqa.errors import GameQAError


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary gameqa uses."""
    env = os.environ.get("GAMEQA_FFMPEG")
    if env:
        return env
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or no binary for this platform
        pass
    found = shutil.which("ffmpeg")
    if not found:
        raise GameQAError(None, "no ffmpeg found: pip install imageio-ffmpeg, or set GAMEQA_FFMPEG")
    return found


@functools.lru_cache(maxsize=None)
def available_encoders() -> frozenset[str]:
    """Names of the video encoders this ffmpeg has."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] == "V":
            names.add(parts[1])
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def has_filter(name: str) -> bool:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def run_ffmpeg(args: Sequence[str], *, path: str | None = None, timeout: float | None = None) -> None:
    """Run ffmpeg with ``args`` (after the binary); on failure raise one line with ffmpeg's last words."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GameQAError(path, f"ffmpeg took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.strip().splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]  # the first error says why; the last is a summary
        reason = (errors or lines or [f"exit code {proc.returncode}"])[0]
        raise GameQAError(path, f"ffmpeg failed: {reason}")
