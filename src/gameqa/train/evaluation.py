"""Evaluate a model on a manifest split: predicted clip scores vs MOS (SROCC, KROCC, PLCC, RMSE).

The model is a trainer checkpoint (``.pt``: torch), or a registered model name / exported model folder (ONNX
Runtime: torch is not imported). Both score the same cached, display-size frames (``gameqa.train.frames``), take
grid crops, average crops per frame and pool frames per clip, so a checkpoint and its export give the same table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from gameqa.data.manifest import logo_split, manifest_root, read_manifest, source_rows, split_rows
from gameqa.errors import ConfigError
from gameqa.evaluate import correlation_table
from gameqa.models.pooling import pool_scores
from gameqa.paths import cache_dir
from gameqa.train.frames import FrameCache


@dataclass
class SplitEvaluation:
    clip_ids: list[str]
    predictions: list[float]
    mos: list[float]
    table: list[dict]


def _checkpoint_scorer(path: str, crops: Optional[int] = None, crop_mode: Optional[str] = None,
                       crop_size: Optional[int] = None):
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint, torch_frame_scores

    model, cfg = model_from_checkpoint(load_checkpoint(path))
    size, count = crop_size or cfg.input.crop_size, crops or cfg.input.crops_per_frame
    crop_mode = crop_mode or cfg.input.crop_mode

    def score(frames, refs):
        return torch_frame_scores(model, frames, refs, size, count, mode=crop_mode)

    return score, cfg.model.reference == "full", cfg.export.pooling, cfg.data.sample


def _registry_scorer(name: str, crops: Optional[int] = None, crop_mode: Optional[str] = None,
                     crop_size: Optional[int] = None):
    """The engine of a registered model or model folder; ``crops``, ``crop_mode`` and ``crop_size`` replace a crop
    model's own reading (``gameqa.models.crop_view.crop_engine``)."""
    from gameqa.models.crop_view import crop_engine

    engine = crop_engine(name, crops, crop_mode, crop_size)
    return engine.score_frames, engine.card.full_reference, engine.card.pooling, None


def _bitstream_head(name: str):
    """``finish(path, pooled, pooling) -> clip score``: the model folder's quantiser head, as the scorer applies it;
    None for a model without one."""
    from gameqa.models.qp_head import QPHead
    from gameqa.models.registry import get_card

    card = get_card(name)
    if not card.bitstream_head:
        return None
    head = QPHead.load(card.bitstream_head)
    return lambda path, pooled, pooling: head.apply(path, "video", pooled, pooling, card.score_range)[0]


def _check_split(split: str, crop_mode: Optional[str]) -> None:
    """A ConfigError (bad user input) unless ``split`` names a split and ``crop_mode`` a crop placement."""
    from gameqa.models.onnx_engine import check_crop_mode

    if split not in ("train", "val", "test"):
        raise ConfigError(None, f"split must be train, val or test, not {split!r}")
    if crop_mode is not None:
        check_crop_mode(crop_mode)


def split_of(manifest: Path, split: str, logo_game: Optional[str], root: Optional[str] = None) -> list[dict]:
    """The rows of ``split`` (every clip file checked), of the leave-one-game-out split when ``logo_game``."""
    rows = read_manifest(manifest, root=manifest_root(manifest, root), check_files=True)
    return (logo_split(rows, logo_game, manifest) if logo_game else split_rows(rows)).get(split, [])


def score_sources(model: str, manifest: str | os.PathLike, split: str = "test", *, logo_game: Optional[str] = None,
                  frames_cache: Optional[str] = None, crops: Optional[int] = None,
                  crop_mode: Optional[str] = None) -> dict[str, float]:
    """source_id -> a no-reference checkpoint's score of the pristine source itself, for every source of ``split``:
    its frames at the times of its first clip's sampled frames, cropped and pooled as ``evaluate_split`` does.

    A pristine source is the best its content can look; a model that rates one far below the top has learnt the
    content's look (flat art, soft sky) as a loss of quality, which no encode then corrects.
    """
    _check_split(split, crop_mode)
    if not str(model).endswith(".pt"):
        raise ConfigError(model, "pristine sources are scored with a trainer checkpoint (.pt)")
    manifest = Path(manifest)
    chosen = split_of(manifest, split, logo_game)
    score, full_ref, pooling, sample = _checkpoint_scorer(str(model), crops, crop_mode)
    if full_ref:
        raise ConfigError(model, "a full-reference model has no score for the reference itself")
    cache = FrameCache(Path(frames_cache) if frames_cache else cache_dir() / "frames", sample or "uniform:8")
    out = {}
    for row in source_rows(chosen, manifest, "pristine scores"):
        source = row["source_id"]
        w, h = row["display_width"], row["display_height"]
        clip = cache.clip_frames(row["abs_path"], w, h)
        ref = cache.reference_frames(row["abs_source_path"], clip.timestamps, w, h)
        frames = [ref.load(i) for i in range(len(ref))]
        out[source] = pool_scores(np.asarray(score(frames, None), dtype=np.float64), pooling)
    return out


def score_rows(model: str, rows: list[dict], *, sample: Optional[str] = None, frames_cache: Optional[str] = None,
               pooling: Optional[str] = None, crops: Optional[int] = None, crop_mode: Optional[str] = None,
               crop_size: Optional[int] = None, bitstream_head: bool = True,
               progress: Optional[Callable[[int, int], None]] = None) -> list[float]:
    """Each manifest row's clip score (``abs_path`` set; ``abs_source_path`` for a full-reference model): cached
    display-size frames, crops averaged per frame, frames pooled; a model folder's quantiser head on the pooled score
    unless ``bitstream_head`` is False (the pixel score alone)."""
    finish = None  # a model folder's quantiser head on the pooled score
    if model.endswith(".pt"):
        score, full_ref, model_pooling, model_sample = _checkpoint_scorer(model, crops, crop_mode, crop_size)
    else:
        score, full_ref, model_pooling, model_sample = _registry_scorer(model, crops, crop_mode, crop_size)
        finish = _bitstream_head(model) if bitstream_head else None
    cache = FrameCache(Path(frames_cache) if frames_cache else cache_dir() / "frames", sample or model_sample or "uniform:8")
    preds = []
    for done, row in enumerate(rows, start=1):
        w, h = row["display_width"], row["display_height"]
        clip = cache.clip_frames(row["abs_path"], w, h)
        refs = None
        if full_ref:
            if not os.path.isfile(row["abs_source_path"]):
                raise ConfigError(row["abs_source_path"], "the reference file is missing")
            ref_entry = cache.reference_frames(row["abs_source_path"], clip.timestamps, w, h)
            refs = [ref_entry.load(i) for i in range(len(ref_entry))]
        frames = [clip.load(i) for i in range(len(clip))]
        frame_scores = np.asarray(score(frames, refs), dtype=np.float64)
        pooled = pool_scores(frame_scores, pooling or model_pooling)
        preds.append(finish(row["abs_path"], pooled, pooling or model_pooling) if finish else pooled)
        if progress:
            progress(done, len(rows))
    return preds


def evaluate_split(model: str, manifest: str | os.PathLike, split: str = "test", *, root: Optional[str] = None,
                   logo_game: Optional[str] = None, sample: Optional[str] = None, frames_cache: Optional[str] = None,
                   pooling: Optional[str] = None, bootstrap: int = 1000, crops: Optional[int] = None,
                   crop_mode: Optional[str] = None, crop_size: Optional[int] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> SplitEvaluation:
    """Score every clip of ``split`` and build the correlation table against its MOS.

    ``crops`` overrides a checkpoint's crops per frame (``input.crops_per_frame``, an inference setting);
    ``crop_mode`` ("grid" or "texture", ``gameqa.models.onnx_engine.choose_boxes``) where they go (default: the
    checkpoint's ``input.crop_mode``) and ``crop_size`` their side in pixels (default: ``input.crop_size``, the
    training size; the networks are fully convolutional). All three apply to checkpoints and to exported crop
    models (whose own reading is in their ``model.json``).
    """
    _check_split(split, crop_mode)
    if crops is not None and crops < 1:
        raise ConfigError(None, f"crops per frame must be at least 1, not {crops}")
    if crop_size is not None and (crop_size < 32 or crop_size % 32):
        raise ConfigError(None, f"crop size must be a multiple of 32 pixels, not {crop_size}")
    manifest = Path(manifest)
    chosen = split_of(manifest, split, logo_game, root)
    if len(chosen) < 2:
        raise ConfigError(manifest, f"the {split} split has {len(chosen)} clips; a correlation needs at least 2")
    preds = score_rows(model, chosen, sample=sample, frames_cache=frames_cache, pooling=pooling, crops=crops,
                       crop_mode=crop_mode, crop_size=crop_size, progress=progress)
    mos, ids = [float(r["mos"]) for r in chosen], [r["clip_id"] for r in chosen]
    table = correlation_table(preds, mos, bootstrap=bootstrap)
    return SplitEvaluation(ids, preds, mos, table)
