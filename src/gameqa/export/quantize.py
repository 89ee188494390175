"""Int8 quantization of an exported ERAQUE graph with ONNX Runtime's quantization tools (no torch here).

Two flavours, each written as its own ONNX file:

* dynamic: weights stored as uint8, activations quantized on the fly per batch (``ConvInteger`` /
  ``MatMulInteger``); needs no data, but the activation scale comes from the whole batch, so a frame's score
  depends slightly on the frames batched with it;
* static QDQ: int8 per-channel weights and uint8 activations with fixed scales, calibrated (min/max) on real
  corpus frames: the cached display-size frames (``gameqa.train.frames.FrameCache``) of N train-split clips of a
  manifest, cut into crops and normalised exactly as the ONNX engine (``gameqa.models.onnx_engine``) does.
  Mixed precision: the layers whose output is finer than 1/``fp32_stride`` of the crop (the first, full-resolution
  stages, the ones that see blocking and ringing of a few pixels) stay fp32. Quantizing them was the error: on
  the ERAQUE teacher, all-int8 scored test clips 0.09 higher on average (max 0.20, 1-5 scale); a sweep that kept
  one block at a time fp32 moved the error only for the stem and blocks 0-2 (stride <= 4), and keeping those
  four fp32 cut it to a 0.01 bias (see docs/models/eraque.md).

Both start from ONNX Runtime's pre-processing (symbolic shape inference + graph optimisation), which keeps the
batch, height and width dynamic.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from gameqa.errors import ConfigError, GameQAError, ModelError

# Min/max only: ONNX Runtime's entropy and percentile calibrators keep every activation of every calibration
# batch in memory (tens of GB for the teacher on a few dozen frames), and its moving-average min/max gave a
# larger error than plain min/max on the teacher.
CALIBRATION_METHODS = ("minmax",)


def _spread(n: int, k: int) -> list[int]:
    if k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def manifest_frames(manifest: str | os.PathLike, split: str = "train", *, clips: int = 16, frames_per_clip: int = 4,
                    sample: str = "uniform:8", frames_cache: Optional[str | os.PathLike] = None,
                    root: Optional[str | os.PathLike] = None, full_reference: bool = False,
                    ) -> tuple[list[tuple[np.ndarray, Optional[np.ndarray]]], int]:
    """(frame, reference or None) pairs and the number of clips they came from: display-size cached frames of
    ``clips`` clips of ``split`` (all of them when it has fewer), spread evenly over the split (so every game is
    in), ``frames_per_clip`` frames each, spread over the clip."""
    from gameqa.data.manifest import manifest_root, read_manifest, split_rows
    from gameqa.paths import cache_dir
    from gameqa.train.frames import FrameCache

    manifest = Path(manifest)
    if not manifest.is_file():
        raise ConfigError(manifest, "calibration manifest not found")
    rows = split_rows(read_manifest(manifest, root=manifest_root(manifest, root), check_files=False)).get(split, [])
    if not rows:
        raise ConfigError(manifest, f"no {split}-split clips to take frames from")
    chosen = [rows[i] for i in _spread(len(rows), max(1, int(clips)))]
    for row in chosen:
        if not os.path.isfile(row["abs_path"]):
            raise ConfigError(manifest, f"clip file {row['abs_path']} is missing")
    cache = FrameCache(Path(frames_cache) if frames_cache else cache_dir() / "frames", sample)
    pairs: list[tuple[np.ndarray, Optional[np.ndarray]]] = []
    for row in chosen:
        w, h = row["display_width"], row["display_height"]
        entry = cache.clip_frames(row["abs_path"], w, h)
        ref_entry = cache.reference_frames(row["abs_source_path"], entry.timestamps, w, h) if full_reference else None
        for i in _spread(len(entry), max(1, int(frames_per_clip))):
            pairs.append((entry.load(i), None if ref_entry is None else ref_entry.load(i)))
    return pairs, len(chosen)


def _preprocessed(src: Path, work: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "preprocessed.onnx"
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
    except Exception as exc:  # ONNX Runtime's tools raise many exception types
        raise ModelError(src, f"cannot pre-process the graph for quantization: {_first_line(exc)}") from None
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def quantize_dynamic_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write a dynamically quantized copy of ``src`` (uint8 weights, activations quantized at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="gameqa-quant-") as work:
        pre = _preprocessed(Path(src), Path(work))
        try:
            # uint8 weights: ONNX Runtime's CPU ConvInteger kernel takes uint8 weights only.
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8)
        except Exception as exc:
            raise ModelError(src, f"dynamic quantization failed: {_first_line(exc)}") from None
    return Path(dst)


def fine_stride_nodes(model_path: str | os.PathLike, size: int, stride: int) -> list[str]:
    """Names of the nodes whose 4-D output is finer than ``size / stride`` on a ``size`` x ``size`` input:
    the graph's first, full-resolution stages (shapes from ONNX shape inference with the input fixed)."""
    import onnx

    model = onnx.load(os.fspath(model_path))
    graph = model.graph
    initialisers = {t.name for t in graph.initializer}
    first = next(i for i in graph.input if i.name not in initialisers)
    dims = first.type.tensor_type.shape.dim
    for k, value in enumerate([1, dims[1].dim_value or 3, size, size]):
        dims[k].ClearField("dim_param")
        dims[k].dim_value = value
    del graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model)
    heights = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        shape = info.type.tensor_type.shape.dim
        if len(shape) == 4 and shape[2].dim_value > 0:
            heights[info.name] = shape[2].dim_value
    limit = size / float(stride)
    return [n.name for n in inferred.graph.node if any(heights.get(o, 0) > limit for o in n.output)]


def quantize_static_onnx(src: str | os.PathLike, dst: str | os.PathLike, batches: Sequence[np.ndarray], *,
                         method: str = "minmax", input_name: str = "crops", fp32_stride: int = 0,
                         fp32_unless: Optional[str] = None) -> Path:
    """Write a static QDQ int8 copy of ``src`` calibrated on ``batches`` (normalised N x C x H x W arrays).

    ``fp32_stride`` > 1 keeps fp32 the nodes whose output is finer than 1/``fp32_stride`` of the input;
    ``fp32_unless`` (a node-name prefix, e.g. ``/backbone``) also keeps fp32 every node outside it."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ConfigError(None, f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, not {method!r}")
    if not batches:
        raise ConfigError(None, "static quantization needs at least one calibration frame")
    calib = {"minmax": CalibrationMethod.MinMax}[method]

    class FrameReader(CalibrationDataReader):
        """Feeds the calibrator one frame's crops at a time."""

        def __init__(self):
            self.batches = iter(batches)

        def get_next(self) -> Optional[dict]:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    if fp32_stride < 0 or fp32_stride == 1:
        raise ConfigError(None, f"the fp32 stride must be 0 (all int8) or at least 2, not {fp32_stride}")
    with tempfile.TemporaryDirectory(prefix="gameqa-quant-") as work:
        pre = _preprocessed(Path(src), Path(work))
        keep = fine_stride_nodes(pre, int(batches[0].shape[-1]), fp32_stride) if fp32_stride else []
        if fp32_unless:
            import onnx

            keep += [n.name for n in onnx.load(str(pre)).graph.node if not n.name.startswith(fp32_unless)]
        try:
            quantize_static(str(pre), str(dst), FrameReader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                            nodes_to_exclude=keep)
        except GameQAError:
            raise
        except Exception as exc:
            raise ModelError(src, f"static quantization failed: {_first_line(exc)}") from None
    return Path(dst)
