"""Export one ERAQUE checkpoint to every deployment format, each file checked against torch on real frames.

``export_model(ckpt, out)`` writes::

    out/model.json, out/model.onnx        fp32, dynamic batch/height/width (gameqa.export.onnx): a registry folder
    out/model.b<B>.onnx                   optional: fp32 with a fixed input shape B x C x crop x crop (on-device
                                          runtimes that want static shapes)
    out/model.torchscript.pt              optional: TorchScript (traced), takes N x C x H x W like the ONNX graph
    out/int8/model.json + model.onnx      optional: static int8 (QDQ, per-channel weights), calibrated on real
                                          corpus frames; registry name ``<name>-int8``
    out/int8-dynamic/...                  optional: dynamic int8; registry name ``<name>-int8-dynamic``
    out/export.json                       what was written, the calibration set, and every check

Every file is checked against the torch model on real frames: the bundled gameplay clip, plus cached val-split
frames of the calibration manifest when one is given. The check compares frame scores (mean over the engine's
crops, on the 1-5 scale) and records the max and mean absolute difference; registry folders are checked
through the ONNX engine itself (its own scaling, cropping and normalisation). fp32 files must agree to within
``tolerance``; int8 files are reported, not bounded. Each folder's ``model.json`` description carries its
numbers. The whole output is built in a temporary folder beside ``out`` and moved into place only when every
step succeeded, so a failure leaves no partial folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from gameqa.errors import ConfigError, GameQAError, ModelError
from gameqa.export.quantize import CALIBRATION_METHODS, manifest_frames, quantize_dynamic_onnx, quantize_static_onnx
from gameqa.models.onnx_engine import display_crops, normalise_input
from gameqa.sinks import check_replaceable, replace_folder

INT8_KINDS = ("static", "dynamic")
INT8_FOLDERS = {"static": "int8", "dynamic": "int8-dynamic"}
Pair = tuple[np.ndarray, Optional[np.ndarray]]  # (frame, reference frame or None)


@dataclass
class FileCheck:
    """One exported file against torch: frame-score differences on the 1-5 scale."""

    file: str                    # path inside the output folder
    format: str                  # onnx-fp32, onnx-fp32-fixed-batch, torchscript, onnx-int8-static-qdq, onnx-int8-dynamic
    model_name: Optional[str]    # registry name when the file is a model folder's graph
    size_bytes: int
    max_abs_diff: float
    mean_abs_diff: float
    frames: int
    via: str                     # "engine" (registry engine on whole frames) or "crops" (the file run on crops)


@dataclass
class ExportSummary:
    folder: Path
    name: str
    checks: list[FileCheck] = field(default_factory=list)
    check_frames: dict = field(default_factory=dict)
    calibration: Optional[dict] = None

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "name": self.name, "check_frames": self.check_frames,
                "calibration": self.calibration, "checks": [asdict(c) for c in self.checks]}


def _bundled_pairs(count: int, full_reference: bool) -> list[Pair]:
    """``count`` frames of the bundled 720p gameplay clip (JPEG-degraded copies against them for FR models)."""
    from importlib import resources

    from gameqa.export.onnx import _degrade
    from gameqa.media import read_frames

    clip = Path(str(resources.files("gameqa") / "assets" / "wesnoth_720p30.mp4"))
    frames = [f.rgb for f in read_frames(clip, f"uniform:{max(1, int(count))}")]
    return [(_degrade(f), f) if full_reference else (f, None) for f in frames]


def _is_export_output(name: str) -> bool:
    """Whether a file or folder of this name is one ``export_model`` writes (so replacing it loses nothing)."""
    return (name in ("model.json", "model.onnx", "export.json", "model.torchscript.pt", *INT8_FOLDERS.values())
            or (name.startswith("model.b") and name.endswith(".onnx")))


def _check_name(name: str) -> None:
    """The registry name an export writes must not be a built-in metric's (NIQE, PSNR, ...): a folder never
    replaces a registered model, so its scores would come out under a name that means another model. An exported
    model's name (a bundled ERAQUE) may be reused: that is how its weights are rebuilt."""
    from gameqa.models.registry import list_models

    if not name.strip():
        raise ConfigError(None, "the model name is empty: give --name")
    if name in {c.name for c in list_models() if c.engine != "onnx"}:
        raise ConfigError(None, f"model name {name!r} belongs to a built-in metric; choose another --name")


def _diffs(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    d = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    return float(d.max()), float(d.mean())


def _crop_frame_scores(run: Callable[[np.ndarray], np.ndarray], pairs: Sequence[Pair], preprocess: dict,
                       batch: Optional[int] = None) -> np.ndarray:
    """Frame scores of a raw graph: the engine's crops, ``run`` on them (in fixed batches if ``batch``), mean, clip."""
    crops = preprocess["crops"]
    scores = []
    for frame, ref in pairs:
        patches = display_crops(frame, ref, int(crops["size"]), int(crops["count"]), preprocess.get("display_height"),
                                crops.get("mode", "grid"), int(crops.get("context", 0)))
        x = normalise_input(patches, preprocess)
        if batch:
            pad = (-len(x)) % batch
            xp = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)]) if pad else x
            out = np.concatenate([np.asarray(run(xp[i:i + batch])).reshape(-1) for i in range(0, len(xp), batch)])
            out = out[:len(x)]
        else:
            out = np.asarray(run(x)).reshape(-1)
        scores.append(float(np.mean(out.astype(np.float64))))
    return np.clip(np.asarray(scores), 1.0, 5.0)


def _engine_frame_scores(folder: Path, pairs: Sequence[Pair], threads: int = 2) -> np.ndarray:
    from gameqa.models.registry import card_from_model_dir

    card = card_from_model_dir(folder)
    engine = card.factory(card, threads)
    refs = [r for _, r in pairs] if card.full_reference else None
    return engine.score_frames([f for f, _ in pairs], refs)


def _ort_runner(path: Path, threads: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _with_check_note(folder: Path, check: FileCheck, frames_note: str) -> None:
    spec_path = folder / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["description"] = (f"{spec.get('description', '')}; checked against the torch model on {frames_note}: "
                           f"frame score max abs diff {check.max_abs_diff:.4g}, mean {check.mean_abs_diff:.4g} "
                           f"(1-5 scale)")
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")


def export_model(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, name: Optional[str] = None,
                 fixed_batch: Optional[int] = None, torchscript: bool = False, int8: Sequence[str] = (),
                 calibration_manifest: Optional[str | os.PathLike] = None, calibration_clips: int = 16,
                 calibration_frames: int = 4, calibration_sample: str = "uniform:8", calibration_method: str = "minmax",
                 check_clips: int = 4, bundled_frames: int = 6, frames_cache: Optional[str | os.PathLike] = None,
                 root: Optional[str | os.PathLike] = None, tolerance: float = 1e-3, crops: Optional[int] = None,
                 int8_fp32_stride: int = 8, int8_fp32_head: bool = False, crop_mode: Optional[str] = None,
                 log: Callable[[str], None] = lambda _m: None) -> ExportSummary:
    """Export ``checkpoint`` to ``out_dir`` in the formats asked for and check each one (see the module doc).

    ``int8`` holds "static" and/or "dynamic"; "static" needs ``calibration_manifest`` (frames of
    ``calibration_clips`` train clips, ``calibration_frames`` each, from the frame cache with
    ``calibration_sample``). With a manifest, ``check_clips`` val-split clips join the check frames.
    ``int8_fp32_stride``: static int8 keeps fp32 the layers finer than 1/N of the crop (0: all int8);
    ``int8_fp32_head``: also the pooling and the head (every node outside the backbone).
    """
    import torch

    from gameqa.export.onnx import OPSET, export_onnx
    from gameqa.models.onnx_engine import check_crop_mode
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint, torch_frame_scores

    # -- everything a user can get wrong is checked before anything is written ------------------------------
    kinds = list(dict.fromkeys(int8))
    bad = [k for k in kinds if k not in INT8_KINDS]
    if bad:
        raise ConfigError(None, f"--int8 takes {' or '.join(INT8_KINDS)}, not {', '.join(map(repr, bad))}")
    if "static" in kinds and not calibration_manifest:
        raise ConfigError(None, "static int8 needs calibration frames: give --calibration MANIFEST")
    if calibration_method not in CALIBRATION_METHODS:
        raise ConfigError(None, f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
    if int8_fp32_stride < 0 or int8_fp32_stride == 1:
        raise ConfigError(None, f"--int8-fp32-stride must be 0 (all int8) or at least 2, not {int8_fp32_stride}")
    if crop_mode is not None:
        check_crop_mode(crop_mode)
    if fixed_batch is not None and fixed_batch < 1:
        raise ConfigError(None, f"fixed batch size must be at least 1, not {fixed_batch}")
    if calibration_manifest and not Path(calibration_manifest).is_file():
        raise ConfigError(calibration_manifest, "calibration manifest not found")
    ckpt = load_checkpoint(checkpoint)
    model, cfg = model_from_checkpoint(ckpt)
    full_ref = cfg.model.reference == "full"
    out = Path(out_dir)
    check_replaceable(out, marker="model.json", owned=lambda p: _is_export_output(p.name), what="model export",
                      option="--out", keep=[Path(checkpoint)])
    base_name = name or cfg.name
    _check_name(base_name)

    pairs = _bundled_pairs(bundled_frames, full_ref)
    frames_note = f"{len(pairs)} frames of the bundled gameplay clip"
    check_info = {"bundled_clip_frames": len(pairs), "manifest_clips": 0}
    calib_pairs: list[Pair] = []
    calibration = None
    if calibration_manifest:
        common = dict(sample=calibration_sample, frames_cache=frames_cache, root=root, full_reference=full_ref)
        if check_clips > 0:
            val, val_clips = manifest_frames(calibration_manifest, "val", clips=check_clips,
                                             frames_per_clip=calibration_frames, **common)
            pairs += val
            check_info.update(manifest=str(calibration_manifest), manifest_split="val", manifest_clips=val_clips,
                              manifest_frames=len(val))
            frames_note = f"{len(pairs)} real frames (bundled clip + {len(val)} val-split corpus frames)"
        if "static" in kinds:
            log(f"reading calibration frames: up to {calibration_clips} train clips x {calibration_frames} frames")
            calib_pairs, calib_clips = manifest_frames(calibration_manifest, "train", clips=calibration_clips,
                                                       frames_per_clip=calibration_frames, **common)
            calibration = {"manifest": str(calibration_manifest), "split": "train", "clips": calib_clips,
                           "frames": len(calib_pairs), "sample": calibration_sample, "method": calibration_method,
                           "fp32_stride": int8_fp32_stride, "fp32_head": int8_fp32_head}
    check_info["frames"] = len(pairs)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as exc:
        raise ConfigError(out, f"cannot make the model folder ({exc.strerror or exc})") from None
    try:
        summary = ExportSummary(out, base_name, check_frames=check_info, calibration=calibration)
        log("exporting fp32 ONNX (dynamic batch)")
        export_onnx(checkpoint, tmp, name=base_name, tolerance=tolerance, crops=crops, crop_mode=crop_mode)
        spec = json.loads((tmp / "model.json").read_text())
        pre = spec["input"]
        size, count = int(pre["crops"]["size"]), int(pre["crops"]["count"])
        crop_mode = pre["crops"].get("mode", "grid")
        display = pre.get("display_height")
        torch_scores = torch_frame_scores(
            model, [upscale(f, display) for f, _ in pairs],
            [upscale(r, display) for _, r in pairs] if full_ref else None, size, count, mode=crop_mode)

        def record(check: FileCheck, limit: Optional[float]) -> FileCheck:
            log(f"{check.file}: max abs diff {check.max_abs_diff:.3g}, mean {check.mean_abs_diff:.3g}")
            if limit is not None and not check.max_abs_diff <= limit:
                raise ModelError(tmp / check.file, f"{check.format} disagrees with torch (max abs frame score diff "
                                                   f"{check.max_abs_diff:.2e}, tolerance {limit:g})")
            summary.checks.append(check)
            return check

        def engine_check(folder: Path, fmt: str, limit: Optional[float]) -> FileCheck:
            got = _engine_frame_scores(folder, pairs)
            rel = folder.relative_to(tmp) / "model.onnx"
            card_name = json.loads((folder / "model.json").read_text())["name"]
            check = record(FileCheck(str(rel), fmt, card_name, (folder / "model.onnx").stat().st_size,
                                     *_diffs(got, torch_scores), len(pairs), "engine"), limit)
            _with_check_note(folder, check, frames_note)
            return check

        engine_check(tmp, "onnx-fp32", tolerance)

        rows = model.input_height(size)
        example = torch.zeros(1, model.in_channels, rows, size)
        if fixed_batch:
            path = tmp / f"model.b{fixed_batch}.onnx"
            log(f"exporting fp32 ONNX with fixed input {fixed_batch}x{model.in_channels}x{rows}x{size}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.zeros(fixed_batch, model.in_channels, rows, size),), str(path),
                                  dynamo=False, opset_version=OPSET, input_names=["crops"], output_names=["score"])
            got = _crop_frame_scores(_ort_runner(path), pairs, pre, batch=fixed_batch)
            record(FileCheck(path.name, "onnx-fp32-fixed-batch", None, path.stat().st_size, *_diffs(got, torch_scores),
                             len(pairs), "crops"), tolerance)

        if torchscript:
            path = tmp / "model.torchscript.pt"
            log("exporting TorchScript (traced)")
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, (example,), check_trace=False)
                traced.save(str(path))
                loaded = torch.jit.load(str(path), map_location="cpu").eval()

            def run_ts(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return loaded(torch.from_numpy(x)).numpy()

            got = _crop_frame_scores(run_ts, pairs, pre)
            record(FileCheck(path.name, "torchscript", None, path.stat().st_size, *_diffs(got, torch_scores),
                             len(pairs), "crops"), tolerance)

        for kind in kinds:
            folder = tmp / INT8_FOLDERS[kind]
            folder.mkdir()
            variant_name = f"{base_name}-{INT8_FOLDERS[kind]}"
            if kind == "static":
                log(f"quantizing: static int8 QDQ, {calibration_method} calibration on {len(calib_pairs)} frames")
                context = int(pre["crops"].get("context", 0))
                batches = [normalise_input(display_crops(f, r, size, count, display, crop_mode, context), pre)
                           for f, r in calib_pairs]
                quantize_static_onnx(tmp / "model.onnx", folder / "model.onnx", batches, method=calibration_method,
                                     fp32_stride=int8_fp32_stride,
                                     fp32_unless="/backbone" if int8_fp32_head else None)
                mixed = (f"layers finer than 1/{int8_fp32_stride} of the crop kept fp32; " if int8_fp32_stride
                         else "") + ("pooling and head kept fp32; " if int8_fp32_head else "")
                how = (f"static int8 (QDQ, per-channel int8 weights, uint8 activations; {mixed}{calibration_method} "
                       f"calibration on {len(calib_pairs)} frames of {calibration['clips']} train clips)")
            else:
                log("quantizing: dynamic int8")
                quantize_dynamic_onnx(tmp / "model.onnx", folder / "model.onnx")
                how = "dynamic int8 (uint8 weights, activations quantized at run time)"
            variant = dict(spec, name=variant_name, description=f"{spec['description'].split('; checked')[0]}; {how}")
            (folder / "model.json").write_text(json.dumps(variant, indent=2) + "\n")
            check = engine_check(folder, f"onnx-int8-{kind}" + ("-qdq" if kind == "static" else ""), None)
            (folder / "export.json").write_text(json.dumps(
                {"source": str(checkpoint), "format": check.format, "calibration": calibration if kind == "static"
                 else None, "check_frames": check_info, "check": asdict(check)}, indent=2) + "\n")

        (tmp / "export.json").write_text(json.dumps(dict(summary.to_dict(), source=str(checkpoint)), indent=2) + "\n")
        replace_folder(tmp, out)
    except GameQAError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _naming_the_export(exc, tmp, Path(checkpoint), out) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _naming_the_export(exc: GameQAError, tmp: Path, checkpoint: Path, out: Path) -> GameQAError:
    """An error about a file of the unfinished export (in its deleted temporary folder) names the checkpoint
    and the file it would have been in ``out``."""
    if exc.path is None or not (exc.path == str(tmp) or exc.path.startswith(str(tmp) + os.sep)):
        return exc
    inner = os.path.relpath(exc.path, tmp)
    return type(exc)(checkpoint, f"{inner}: {exc.problem}; nothing written to {out}")


def upscale(frame: Optional[np.ndarray], display_height: Optional[int]) -> Optional[np.ndarray]:
    from gameqa.models.onnx_engine import upscale_to_display

    return None if frame is None else upscale_to_display(frame, display_height)
