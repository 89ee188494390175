"""8-bit luma (BT.601 Y') of an RGB uint8 frame, shared by the classical metrics.

Two ranges, both rounded to integers 0..255 like an 8-bit Y plane:
- ``limited=True`` (studio swing, Y in 16..235): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255. This is
  the Y plane ffmpeg's swscale writes when it converts rgb24 to yuv420p/yuv444p (BT.601 is its default
  matrix), i.e. what ffmpeg's psnr/ssim filters and VMAF see for 8-bit video. PSNR and SSIM use it.
- ``limited=False`` (full swing, like MATLAB's rgb2gray and JPEG): Y = 0.299 R + 0.587 G + 0.114 B.
  NIQE uses it, as Mittal et al.'s reference code does.
"""
from __future__ import annotations

import numpy as np

from gameqa.errors import ModelError

_LIMITED = np.array([65.481, 128.553, 24.966]) / 255.0
_FULL = np.array([0.299, 0.587, 0.114])


def check_frame(frame, what: str = "frame") -> np.ndarray:
    """Check an RGB uint8 HxWx3 frame (or an HxW uint8 luma plane) and return it as an array."""
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise ModelError(None, f"{what} must be uint8, got {arr.dtype}")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ModelError(None, f"{what} must be HxWx3 RGB (or HxW luma), got shape {arr.shape}")
    return arr


def luma(frame, *, limited: bool = True) -> np.ndarray:
    """BT.601 8-bit luma of an RGB uint8 HxWx3 frame as float64 integers 0..255 (HxW input is taken as luma)."""
    arr = check_frame(frame)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    weights = _LIMITED if limited else _FULL
    y = arr.astype(np.float64, order="C") @ weights  # one memory layout, one summation order: the same luma for
    # the same picture (BT.601 sums often land on .5 exactly, where another order would round the other way)
    if limited:
        y += 16.0
    return np.clip(np.floor(y + 0.5), 0.0, 255.0)
