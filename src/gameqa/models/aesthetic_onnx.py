"""Mean-and-spread image scorers without torch: an exported ONNX model folder run by onnxruntime.

A model folder holds ``model.onnx`` (input ``image``: 1 x 3 x H x W float32, ImageNet-normalised RGB, any H and
W; outputs ``mean`` and ``std``, each of shape 1, on the rating scale) and ``model.json`` (name, version, scale,
the panel size used for intervals, preprocessing). Preprocessing is :func:`prepare_image`, shared with the
training side so that cached features and the exported model see the same pixels:

* decode to upright 8-bit RGB (``gameqa.media.image.load_image``);
* if the longer side exceeds ``max_side`` (512 by default), resize so that it equals ``max_side``, keeping the
  aspect ratio (Pillow, bicubic with antialiasing); smaller images are left at their size (no upscaling) unless a
  side is under ``min_side`` (32), then they are upscaled to it; a side under 16 px, or an image so thin that
  this would take it past 8K's pixel count, is refused (as in ``gameqa.models.onnx_engine``);
* /255, then the ImageNet mean/std.

For each image the scorer returns the predicted mean opinion score, the predicted standard deviation of the
raters' scores, the 95% confidence interval of the mean for a panel of ``n`` raters (``mean +- t(n-1) * std /
sqrt(n)``), and the range holding about 95% of individual raters' scores (``mean +- 1.96 * std``, clipped to the
scale).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gameqa.errors import ModelError, naming

DEFAULT_MAX_SIDE = 512
MIN_SIDE = 32
Z95 = 1.959963984540054


def resize_for_model(rgb: np.ndarray, max_side: int = DEFAULT_MAX_SIDE, min_side: int = MIN_SIDE) -> np.ndarray:
    """H x W x 3 uint8 -> the same, with the longer side at most ``max_side`` and the shorter at least ``min_side``."""
    from PIL import Image

    from gameqa.models.onnx_engine import MAX_SHOWN_PIXELS, MIN_SIDE as SMALLEST_SIDE

    height, width = rgb.shape[:2]
    if min(height, width) < SMALLEST_SIDE:
        raise ModelError(None, f"image {width}x{height} is too small to score: each side needs at least "
                               f"{SMALLEST_SIDE} px")
    factor = 1.0
    if max(height, width) > max_side:
        factor = max_side / max(height, width)
    if min(height, width) * factor < min_side:
        factor = min_side / min(height, width)
    if factor == 1.0:
        return rgb
    size = (max(min_side, round(width * factor)), max(min_side, round(height * factor)))
    if size[0] * size[1] > MAX_SHOWN_PIXELS:
        raise ModelError(None, f"image {width}x{height} is too long and thin to score: this model would read it at "
                               f"{size[0]}x{size[1]}, over {MAX_SHOWN_PIXELS / 1e6:.0f} M pixels")
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC, reducing_gap=None))


def normalise_image(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> 1 x 3 x H x W float32 (/255, ImageNet mean/std: the engine's ``normalise_input``)."""
    from gameqa.models.onnx_engine import IMAGENET_NORMALISATION, normalise_input

    return normalise_input([rgb], IMAGENET_NORMALISATION)


def prepare_image(image, max_side: int = DEFAULT_MAX_SIDE) -> np.ndarray:
    """A path or an H x W x 3 uint8 array -> the model input (1 x 3 x H x W float32)."""
    if isinstance(image, (str, os.PathLike)):
        from gameqa.media.image import load_image

        image = load_image(image)
    return normalise_image(resize_for_model(np.asarray(image), max_side))


def mean_interval(mean: float, std: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of a mean opinion score from the raters' std and their number ``n``."""
    if n < 2:
        return (math.nan, math.nan)
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
    return (mean - half, mean + half)


@dataclass(frozen=True)
class SpreadScore:
    """One image's prediction: mean, raters' std, the 95% interval of the mean for ``n`` raters, raters' range."""

    path: str
    mean: float
    std: float
    ci_low: float
    ci_high: float
    raters: int
    raters_low: float
    raters_high: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SpreadCard:
    """What ``model.json`` says about a mean-and-spread model."""

    name: str
    version: str
    description: str
    scale: tuple[float, float]
    raters: int
    max_side: int
    kind: str = "mean-spread"

    @classmethod
    def read(cls, folder: Path) -> "SpreadCard":
        path = folder / "model.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ModelError(path, f"cannot read the model card ({exc.strerror or exc})") from None
        except ValueError as exc:  # not UTF-8, or not JSON
            raise ModelError(path, f"not valid JSON ({exc})") from None
        if data.get("kind") != "mean-spread":
            raise ModelError(path, f"not a mean-and-spread model (kind {data.get('kind')!r})")
        try:
            low, high = (float(v) for v in data["scale"])
            return cls(str(data["name"]), str(data.get("version", "1")), str(data.get("description", "")),
                       (low, high), int(data.get("raters", 100)), int(data.get("max_side", DEFAULT_MAX_SIDE)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(path, f"bad model card field ({exc})") from None


def bundled_models_dir() -> Path:
    """The folder of mean-and-spread model folders shipped inside the package (``spread_weights``: kept apart from
    ``weights/``, whose folders the frame-model registry loads and whose ``model.json`` has another layout)."""
    return Path(__file__).resolve().parent / "spread_weights"


def resolve_model_folder(model: str) -> Path:
    """A model folder path, or the name of a bundled mean-and-spread model."""
    path = Path(model).expanduser()
    if (path / "model.onnx").is_file():
        return path
    bundled = bundled_models_dir() / model
    if (bundled / "model.onnx").is_file() and (bundled / "model.json").is_file():
        return bundled
    names = sorted(p.parent.name for p in bundled_models_dir().glob("*/model.json")
                   if '"mean-spread"' in p.read_text(encoding="utf-8"))
    raise ModelError(model, f"no such mean-and-spread model (a folder with model.onnx + model.json, or one of: "
                            f"{', '.join(names) or 'none bundled'})")


class SpreadScorer:
    """Loads ``model.onnx`` + ``model.json`` from a folder and scores images: mean, std and intervals."""

    def __init__(self, model: str | os.PathLike, threads: int = 1, raters: int | None = None):
        import onnxruntime as ort

        self.folder = resolve_model_folder(os.fspath(model))
        self.card = SpreadCard.read(self.folder)
        self.raters = int(raters) if raters is not None else self.card.raters
        if self.raters < 2:
            raise ModelError(None, f"the interval needs at least 2 raters, not {self.raters}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        onnx_path = self.folder / "model.onnx"
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(onnx_path, f"cannot load the ONNX model ({str(exc).splitlines()[0]})") from None
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs[:2] != ["mean", "std"]:
            raise ModelError(onnx_path, f"outputs must be 'mean' and 'std', not {outputs}")
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, image) -> tuple[float, float]:
        """(mean, std) for a path or an H x W x 3 uint8 array."""
        x = prepare_image(image, self.card.max_side)
        mean, std = self.session.run(["mean", "std"], {self.input_name: x})
        return float(np.ravel(mean)[0]), float(np.ravel(std)[0])

    def score(self, image, path: str = "") -> SpreadScore:
        """The full prediction for one image (a path, or an array with ``path`` naming it)."""
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
        with naming(path):
            raw_mean, std = self.predict(image)
        lo_scale, hi_scale = self.card.scale
        mean = min(max(raw_mean, lo_scale), hi_scale)  # a score is on the model's scale, whatever the head says

        def on_scale(value: float) -> float:
            return min(max(value, lo_scale), hi_scale)

        low, high = mean_interval(mean, std, self.raters)
        return SpreadScore(path, mean, std, on_scale(low), on_scale(high), self.raters,
                           on_scale(mean - Z95 * std), on_scale(mean + Z95 * std))


def quantize_model_folder(source: str | os.PathLike, target: str | os.PathLike, images: Sequence,
                          fp32_stride: int = 8) -> Path:
    """Copy a mean-and-spread model folder with static int8 weights and activations (QDQ, per-channel weights,
    min/max calibration on ``images``: paths or arrays, prepared as the scorer prepares them). Mixed precision:
    the backbone's layers finer than 1/``fp32_stride`` of the image and everything after the backbone (the
    multi-level pooling and the heads) stay fp32; on CLIVE, quantizing the pooled features too moved the mean
    by up to 4 points of 100 and ONNX Runtime's dynamic int8 by up to 30. The card gains ``"quantized"``."""
    from gameqa.export.quantize import quantize_static_onnx

    source, target = Path(source), Path(target)
    card = json.loads((source / "model.json").read_text(encoding="utf-8"))
    max_side = int(card.get("max_side", DEFAULT_MAX_SIDE))
    batches = [prepare_image(image, max_side) for image in images]
    if not batches:
        raise ModelError(source, "int8 calibration needs at least one image")
    target.mkdir(parents=True, exist_ok=True)
    quantize_static_onnx(source / "model.onnx", target / "model.onnx", batches, input_name="image",
                         fp32_stride=fp32_stride, fp32_unless="/backbone")
    card["quantized"] = (f"int8 static (QDQ; backbone layers finer than 1/{fp32_stride} of the image, pooling and "
                         f"heads kept fp32; min/max calibration on {len(batches)} images)")
    (target / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return target
