"""Export a trained ERAQUE checkpoint to a registry model folder (``model.json`` + ``model.onnx``).

The folder is what ``gameqa.models.registry.register_model_dir`` reads and ``gameqa score --model DIR`` runs
with ONNX Runtime alone (no torch). The graph takes N x C x H x W normalised crops (batch, height and width
are dynamic; C is 3, or 6 for the full-reference variant) and returns N x 1 scores. ``model.json`` carries the
preprocessing the engine must apply: pixel scale, ImageNet mean/std, the crop size and count, the display
height frames are scaled up to, and the temporal pooling.

After writing, the export is checked: ONNX Runtime and torch must agree on real frames (crops of the bundled
gameplay clip, or frames given by the caller) to within ``tolerance``, both on the raw graph and through the
engine's own preprocessing.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from gameqa.errors import ModelError
from gameqa.models.eraque import normalise_crops
from gameqa.models.onnx_engine import IMAGENET_NORMALISATION, crop_patches
from gameqa.train.trainer import load_checkpoint, model_from_checkpoint, torch_frame_scores

OPSET = 17


@dataclass
class ExportReport:
    folder: Path
    max_abs_diff: float          # torch vs ONNX Runtime on the same normalised crops
    engine_max_abs_diff: float   # torch vs the registry engine (its own preprocessing) on whole frames
    crops_checked: int


def check_frames() -> list[np.ndarray]:
    """Two real 720p gameplay frames from the clip shipped with gameqa (for the export check)."""
    from importlib import resources

    from gameqa.media import read_frames

    clip = Path(str(resources.files("gameqa") / "assets" / "wesnoth_720p30.mp4"))
    return [f.rgb for f in read_frames(clip, "uniform:2")]


def _degrade(frame: np.ndarray) -> np.ndarray:
    """A JPEG-compressed copy (quality 20): a real distorted frame for checking the FR variant."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=20)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def export_onnx(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, name: Optional[str] = None,
                frames: Optional[Sequence[np.ndarray]] = None, tolerance: float = 1e-3,
                crops: Optional[int] = None, crop_mode: Optional[str] = None) -> ExportReport:
    """Write ``out_dir/model.json`` + ``model.onnx`` from a trainer checkpoint and check them against torch.

    ``crops`` sets the crops per frame at inference (default: the checkpoint's ``input.crops_per_frame``),
    ``crop_mode`` where the engine puts them ("grid", or "texture": the most detailed windows; default: the
    checkpoint's ``input.crop_mode``).
    """
    from gameqa.models.onnx_engine import check_crop_mode

    if crop_mode is not None:
        check_crop_mode(crop_mode)
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt)
    crop_mode = crop_mode or cfg.input.crop_mode
    if crops:
        cfg.input.crops_per_frame = int(crops)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.input.crop_size
    example = torch.zeros(1, model.in_channels, model.input_height(size), size)
    onnx_path = out / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            model, (example,), str(onnx_path), dynamo=False, opset_version=OPSET, input_names=["crops"],
            output_names=["score"], dynamic_axes={"crops": {0: "N", 2: "H", 3: "W"}, "score": {0: "N"}},
        )
    reference = cfg.model.reference
    spec = {
        "name": name or cfg.name,
        "kind": "video",
        "reference": reference,
        "score_range": [1, 5],
        "lower_better": False,
        "version": cfg.version,
        "weights": "model.onnx",
        "description": cfg.export.description or (
            f"ERAQUE ({'full' if reference == 'full' else 'no'}-reference): {cfg.model.backbone} on "
            f"{size}px full-resolution crops, trained with L{'1' if cfg.loss.regression == 'l1' else '2'} "
            f"regression + hard pairwise ranking (step {ckpt.get('step', '?')})"),
        "pooling": cfg.export.pooling,
        "input": {
            "layout": "NCHW", **IMAGENET_NORMALISATION,
            "crops": {"size": size, "count": cfg.input.crops_per_frame,
                      **({"mode": crop_mode} if crop_mode != "grid" else {}),
                      **({"context": model.context_rows} if model.context_rows else {})},
            "display_height": int(ckpt.get("display_height") or 0) or None,
        },
    }
    if spec["input"]["display_height"] is None:
        del spec["input"]["display_height"]
    (out / "model.json").write_text(json.dumps(spec, indent=2) + "\n")
    return _verify(model, out, list(frames) if frames is not None else check_frames(), size,
                   cfg.input.crops_per_frame, reference == "full", tolerance, crop_mode)


def _verify(model, folder: Path, frames: list[np.ndarray], size: int, count: int, full_ref: bool,
            tolerance: float, crop_mode: str = "grid") -> ExportReport:
    import onnxruntime as ort

    from gameqa.models.registry import card_from_model_dir

    dists = [_degrade(f) for f in frames] if full_ref else frames
    refs = frames if full_ref else None
    patches = [p for i, d in enumerate(dists)
               for p in crop_patches(d, None if refs is None else refs[i], size, count, crop_mode, model.context_rows)]
    x = normalise_crops(patches)
    with torch.no_grad():
        expected = model(x).reshape(-1).numpy()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"crops": x.numpy()})[0].reshape(-1)
    diff = float(np.abs(got - expected).max())
    # Through the registry engine: its own upscale/crop/normalise path must give torch's frame scores.
    engine = card_from_model_dir(folder).factory(card_from_model_dir(folder), 1)
    engine_scores = engine.score_frames(dists, refs)
    torch_scores = torch_frame_scores(model, [_display(engine, d) for d in dists],
                                      None if refs is None else [_display(engine, r) for r in refs], size, count,
                                      mode=crop_mode)
    engine_diff = float(np.abs(engine_scores - torch_scores).max())
    if not (diff <= tolerance and engine_diff <= tolerance):
        raise ModelError(folder / "model.onnx", f"ONNX Runtime and torch disagree (max abs diff {diff:.2e} on crops, "
                                                f"{engine_diff:.2e} through the engine; tolerance {tolerance:g})")
    return ExportReport(folder, diff, engine_diff, len(patches))


def _display(engine, frame: np.ndarray) -> np.ndarray:
    from gameqa.models.onnx_engine import upscale_to_display

    return upscale_to_display(frame, engine.display_height)
