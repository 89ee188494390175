"""Full-reference metrics on 8-bit BT.601 limited-range luma: PSNR and SSIM.

PSNR: 10*log10(255^2 / MSE), peak 255, capped (by default at 100 dB).

SSIM (Wang, Bovik, Sheikh, Simoncelli 2004): Gaussian window 11x11, sigma 1.5 (normalised), K1=0.01, K2=0.03, L=255; local statistics with
population (1/N-weighted) variances; the SSIM map is averaged over the "valid" region only (5 pixels
trimmed on every side, as filter2(..., 'valid') in the authors' MATLAB code), so no border padding
enters the score. The MATLAB code's optional 2x downsampling of large images is NOT applied: the score
is taken at full resolution, which matches scikit-image's structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=255).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from gameqa.errors import ModelError
from gameqa.models.classical.luma import luma

PSNR_MAX_DB = 100.0


def psnr(dist_rgb, ref_rgb, *, max_db: float = PSNR_MAX_DB) -> float:
    """PSNR in dB of ``dist_rgb`` against ``ref_rgb`` (RGB uint8 HxWx3, same shape) on luma.

    10*log10(255^2 / MSE) of the limited-range Y planes (the Y that ffmpeg's psnr filter reports after
    an rgb24 -> yuv conversion). Identical frames (MSE 0) and anything above ``max_db`` give ``max_db``,
    so the result lies in [0, max_db]; higher is better.
    """
    dist_y, ref_y = luma(dist_rgb), luma(ref_rgb)
    if dist_y.shape != ref_y.shape:
        raise ModelError(None, f"psnr: frame sizes differ ({dist_y.shape} vs {ref_y.shape})")
    mse = float(np.mean((dist_y - ref_y) ** 2))
    if mse == 0.0:
        return float(max_db)
    return float(min(10.0 * math.log10(255.0 ** 2 / mse), max_db))


WINDOW_RADIUS = 5
WINDOW_SIGMA = 1.5
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0


def _gaussian_taps() -> np.ndarray:
    offsets = np.arange(-WINDOW_RADIUS, WINDOW_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / WINDOW_SIGMA) ** 2)
    return taps / taps.sum()


def _local_mean(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable Gaussian mean, cut to the 'valid' region (pixels whose window lies inside the image)."""
    out = ndimage.correlate1d(image, taps, axis=0, mode="constant")
    out = ndimage.correlate1d(out, taps, axis=1, mode="constant")
    r = WINDOW_RADIUS
    return out[r:-r, r:-r]


def ssim_map(dist_y: np.ndarray, ref_y: np.ndarray) -> np.ndarray:
    """Local SSIM over the valid region of two same-size float luma planes (0..255)."""
    taps = _gaussian_taps()
    mu_d, mu_r = _local_mean(dist_y, taps), _local_mean(ref_y, taps)
    var_d = _local_mean(dist_y * dist_y, taps) - mu_d * mu_d
    var_r = _local_mean(ref_y * ref_y, taps) - mu_r * mu_r
    cov = _local_mean(dist_y * ref_y, taps) - mu_d * mu_r
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    return ((2 * mu_d * mu_r + c1) * (2 * cov + c2)) / ((mu_d ** 2 + mu_r ** 2 + c1) * (var_d + var_r + c2))


def ssim(dist_rgb, ref_rgb) -> float:
    """Mean SSIM of ``dist_rgb`` against ``ref_rgb`` (RGB uint8 HxWx3, same shape, at least 11x11) on luma.

    1.0 for identical frames; higher is better; practically in [0, 1] (it can dip below 0 for
    anti-correlated content).
    """
    dist_y, ref_y = luma(dist_rgb), luma(ref_rgb)
    if dist_y.shape != ref_y.shape:
        raise ModelError(None, f"ssim: frame sizes differ ({dist_y.shape} vs {ref_y.shape})")
    size = 2 * WINDOW_RADIUS + 1
    if min(dist_y.shape) < size:
        raise ModelError(None, f"ssim: frame {dist_y.shape[1]}x{dist_y.shape[0]} is smaller than the {size}x{size} window")
    return float(np.mean(ssim_map(dist_y, ref_y)))
