"""Real test images (scikit-image's bundled photos) and classic distortions of them, for the metric tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage


def image(name: str) -> np.ndarray:
    """A scikit-image sample as H x W x 3 uint8 (grey ones repeated over 3 channels)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise, rounded and clipped to 8 bits."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(img + rng.normal(0, sigma, img.shape)), 0, 255).astype(np.uint8)


def blurred(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel."""
    return np.clip(np.round(ndimage.gaussian_filter(img.astype(float), (sigma, sigma, 0))), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip through Pillow."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
