"""Objective labels of a distorted clip against its source: VMAF, PSNR-Y and SSIM, per frame and pooled.

One ffmpeg pass with libvmaf (model vmaf_v0.6.1, with its psnr and float_ssim features): the distorted clip
is scaled back up to the source size with bicubic filtering, as a player displays it, and frame-rate drops are
repeated back to the source rate, so both streams are compared frame by frame at the source's size and rate.

The MOS-like label comes from VMAF by a documented, monotonic map: VMAF was fitted so that 20, 40, 60, 80
and 100 fall on the five ACR categories (bad ... excellent), so ``mos = clip(vmaf / 20, 1, 5)``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gameqa.errors import GameQAError
from gameqa.ffmpeg import has_filter, run_ffmpeg

VMAF_MODEL = "vmaf_v0.6.1"


def vmaf_to_mos(vmaf):
    """VMAF (0-100) to a 1-5 MOS-like scale: 20 -> 1 (bad), 100 -> 5 (excellent), linear between, clipped."""
    return np.clip(np.asarray(vmaf, dtype=np.float64) / 20.0, 1.0, 5.0)


@dataclass
class ClipLabels:
    """Per-frame and pooled objective labels of one distorted clip."""

    vmaf: float
    vmaf_p5: float
    psnr_y: float
    ssim: float
    mos: float
    frames: int
    per_frame: dict = field(default_factory=dict)  # name -> list of floats
    vmaf_model: str = VMAF_MODEL

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ClipLabels":
        return cls(**json.loads(text))


def measure_labels(distorted: str, source: str, size: tuple[int, int], fps: float, seconds: float,
                   threads: int = 1) -> ClipLabels:
    """Run libvmaf on ``distorted`` against the first ``seconds`` of ``source`` (size and rate of the source)."""
    if not has_filter("libvmaf"):
        raise GameQAError(None, "this ffmpeg has no libvmaf: pip install imageio-ffmpeg or set GAMEQA_FFMPEG")
    w, h = size
    fd, log = tempfile.mkstemp(suffix=".json", prefix="vmaf-")
    os.close(fd)
    graph = (
        f"[0:v]scale={w}:{h}:flags=bicubic,fps={fps:g},format=yuv420p,setpts=PTS-STARTPTS[d];"
        f"[1:v]fps={fps:g},format=yuv420p,setpts=PTS-STARTPTS[r];"
        f"[d][r]libvmaf=model=version={VMAF_MODEL}:log_fmt=json:log_path={log}:n_threads={threads}"
        ":feature=name=psnr|name=float_ssim:shortest=1"
    )
    try:
        run_ffmpeg(["-i", distorted, "-t", f"{seconds:g}", "-i", source, "-lavfi", graph, "-f", "null", "-"],
                   path=distorted, timeout=1800)
        data = json.loads(Path(log).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GameQAError(distorted, f"no VMAF log was written ({exc})") from None
    finally:
        if os.path.exists(log):
            os.unlink(log)
    frames = data.get("frames", [])
    if not frames:
        raise GameQAError(distorted, "VMAF compared no frames")
    vmaf = np.array([f["metrics"]["vmaf"] for f in frames])
    psnr = np.array([f["metrics"]["psnr_y"] for f in frames])
    ssim = np.array([f["metrics"]["float_ssim"] for f in frames])
    mean_vmaf = float(vmaf.mean())
    return ClipLabels(
        vmaf=mean_vmaf,
        vmaf_p5=float(np.percentile(vmaf, 5)),
        psnr_y=float(psnr.mean()),
        ssim=float(ssim.mean()),
        mos=float(vmaf_to_mos(mean_vmaf)),
        frames=len(frames),
        per_frame={
            "vmaf": [round(float(v), 4) for v in vmaf],
            "psnr_y": [round(float(v), 4) for v in psnr],
            "ssim": [round(float(v), 6) for v in ssim],
        },
    )
