"""The ERAQUE trainer: config in, checkpoints, metrics log and learning curve out.

Every check on the inputs (config, manifest rows and labels, clip files, crop size vs frame size, a resumed
run's config) happens in ``Trainer.__init__``, before frames are cached or a step is taken.

Training samples are (clip, cached frame) pairs: each epoch takes ``frames_per_clip_per_epoch`` random frames
of every train clip, one random crop each at full display resolution, randomly flipped (no blur, no resize:
they would change the artefacts the label describes). Every random choice is drawn from a generator seeded by
(seed, epoch, position), so a resumed run continues exactly as an uninterrupted one would.

Validation scores each val clip as the ONNX engine will: ``val_frames`` frames, ``val_crops`` grid crops per
frame, crop mean per frame, temporal pooling (``export.pooling``) per clip; the best checkpoint is the one
with the highest val SROCC.

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) each process takes its share of every global batch and
DistributedDataParallel averages the gradients (gloo on CPU, nccl on GPUs); validation is sharded and
gathered, and only rank 0 writes files. The same config runs unchanged on 1 or N processes.

Files in the run folder: ``last.pt``, ``best.pt``, ``metrics.csv``, ``learning_curve.png``, ``config.json``.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from gameqa.data.manifest import logo_split, read_manifest, source_rows, split_rows
from gameqa.errors import ConfigError
from gameqa.evaluate import plcc, rmse, srocc
from gameqa.losses import eraque_loss
from gameqa.models.backbones import lite0_keep, space_to_depth
from gameqa.models.eraque import EraqueNet, full_reference_patch, normalise_crops
from gameqa.models.mobilenet import folded_filters
from gameqa.models.onnx_engine import choose_boxes, context_strip, crop_patches, cut_patches, with_context
from gameqa.models.pooling import pool_scores
from gameqa.sinks import save_figure
from gameqa.train.config import EraqueConfig, build_config, config_changes
from gameqa.train.frames import CachedFrames, FrameCache

CHECKPOINT_FORMAT = "gameqa-eraque-checkpoint-1"
METRIC_COLUMNS = ["step", "epoch", "lr", "train_loss", "regression", "ranking", "hard_pairs", "distill_output",
                  "distill_feature", "distill_blocks", "val_srocc", "val_plcc", "val_rmse", "seconds"]


# -- distributed helpers ---------------------------------------------------------------------------------------
@dataclass
class Dist:
    """Process-group facts: one process is rank 0 of world 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        # Caching frames of a big corpus before the first barrier can take long: be patient.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=6))
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _deterministic_cuda() -> None:
    """Seeded runs on a GPU repeat exactly, as on the CPU: deterministic cuDNN and cuBLAS kernels (an op with no
    deterministic kernel warns and runs as it is)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def _barrier(d: Dist) -> None:
    if d.active:
        torch.distributed.barrier()


def _gather(d: Dist, obj):
    if not d.active:
        return [obj]
    out = [None] * d.world
    torch.distributed.all_gather_object(out, obj)
    return out


def _mean_across(d: Dist, values: list[float]) -> list[float]:
    if not d.active:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return (t / d.world).tolist()


# -- data ------------------------------------------------------------------------------------------------------
def load_splits(cfg: EraqueConfig) -> dict[str, list[dict]]:
    """Manifest rows by split (content-disjoint; leave-one-game-out if ``data.logo_game``), files checked."""
    manifest = cfg.manifest_path()
    rows = read_manifest(manifest, root=cfg.corpus_root(), check_files=True)
    if cfg.data.groups:
        present = {r["group"] for r in rows}
        missing = [g for g in cfg.data.groups if g not in present]
        if missing:  # e.g. "synth" named on a training cache built before the synthetic scenes
            raise ConfigError(manifest, f"no clips of group(s) {missing} (data.groups; the manifest has "
                                        f"{', '.join(sorted(present))})")
        rows = [r for r in rows if r["group"] in cfg.data.groups]
    if cfg.model.reference == "full":
        for line, row in enumerate(rows, start=2):
            if not os.path.isfile(row["abs_source_path"]):
                raise ConfigError(manifest, f"line {line}: reference file {row['abs_source_path']} is missing")
    splits = logo_split(rows, cfg.data.logo_game, manifest) if cfg.data.logo_game else split_rows(rows)
    splits = {name: list(splits.get(name, [])) for name in ("train", "val", "test")}
    if cfg.data.limit_clips:
        splits = {name: part[: cfg.data.limit_clips] for name, part in splits.items()}
    if cfg.data.pristine_anchors:
        splits["train"] = splits["train"] + pristine_rows(splits["train"], cfg.data.pristine_mos, manifest)
    for name in ("train", "val"):
        if len(splits[name]) < 2:
            raise ConfigError(manifest, f"the {name} split has {len(splits[name])} clips; training needs at least 2")
    sources = {s: {r["source_id"] for r in part} for s, part in splits.items()}
    shared = (sources["train"] & sources["val"]) | (sources["train"] & sources["test"])
    if shared and not cfg.data.logo_game:
        raise ConfigError(manifest, f"splits are not content-disjoint: source {sorted(shared)[0]} is in two splits")
    size = cfg.input.crop_size
    for part in splits.values():
        for row in part:
            if row["display_width"] < size or row["display_height"] < size:
                raise ConfigError(manifest, f"clip {row['clip_id']} is shown at {row['display_width']}x"
                                            f"{row['display_height']}, smaller than input.crop_size {size}")
    return splits


def pristine_rows(rows: list[dict], mos: float, manifest: Path) -> list[dict]:
    """One training row per source of ``rows``: its lossless capture, labelled ``mos`` (``data.pristine_anchors``).

    A no-reference model meets each content only through its encodes; the capture they were made from shows it
    what the content itself looks like undamaged, whatever its art, so that a flat or dark level is not taken for
    damage. The row is the source's first clip with the capture as its file (and as its own reference)."""
    return [{**row, "clip_id": f"{row['source_id']}-pristine", "path": row["source_path"],
             "abs_path": row["abs_source_path"], "codec": "none", "encoder": "", "encoder_args": "",
             "height": row["display_height"], "width": row["display_width"], "kbps": 0,
             "actual_kbps": 0.0, "vmaf": 100.0, "mos": float(mos)}
            for row in source_rows(rows, manifest, "data.pristine_anchors")]


@dataclass
class ClipFrames:
    """A manifest row with its cached frames (and reference frames for FR)."""

    row: dict
    frames: CachedFrames
    refs: Optional[CachedFrames]

    @property
    def mos(self) -> float:
        return float(self.row["mos"])


TEXTURE_POOL = 4  # training crops of ``train_crops = "texture"`` start near one of this many detailed windows


def random_crop(frame: np.ndarray, ref: Optional[np.ndarray], size: int, rng: np.random.Generator,
                hflip: bool, placement: str = "random", context: int = 0) -> np.ndarray:
    """One size x size crop (the same place in the reference), maybe mirrored left-right; with ``context`` rows
    the frame's context strip under it (``onnx_engine.with_context``), mirrored with it.

    ``placement`` "random" (also "frame", whose samples ``frame_view`` cuts): anywhere; "texture": one of the
    ``TEXTURE_POOL`` most detailed windows (``texture_boxes``), moved by up to 1/8 of the crop, so that training
    sees what texture inference picks; "mixed": either of the two, at even odds (the detailed windows without
    losing the rest of the frame)."""
    h, w = frame.shape[:2]
    if placement == "mixed":
        placement = "texture" if rng.random() < 0.5 else "random"
    if placement == "texture":
        from gameqa.models.onnx_engine import texture_boxes

        boxes = texture_boxes(frame, size, TEXTURE_POOL)
        y, x = nudge(boxes[int(rng.integers(len(boxes)))], size, h, w, rng)
    else:
        y = int(rng.integers(0, h - size + 1))
        x = int(rng.integers(0, w - size + 1))
    flip = bool(hflip and rng.random() < 0.5)
    patch = frame[y:y + size, x:x + size]
    if ref is not None:
        patch = full_reference_patch(patch, ref[y:y + size, x:x + size])
    if context:
        patch = with_context(patch, context_strip(frame, context, size))
    return np.ascontiguousarray(patch[:, ::-1] if flip else patch)


def nudge(box: tuple[int, int], size: int, h: int, w: int, rng: np.random.Generator) -> tuple[int, int]:
    """A crop's top-left corner moved by up to 1/8 of the crop each way, kept inside the h x w frame."""
    jitter = size // 8
    y, x = box
    return (int(np.clip(y + rng.integers(-jitter, jitter + 1), 0, h - size)),
            int(np.clip(x + rng.integers(-jitter, jitter + 1), 0, w - size)))


def frame_view(frame: np.ndarray, ref: Optional[np.ndarray], size: int, count: int, mode: str,
               rng: np.random.Generator, hflip: bool, context: int = 0) -> list[np.ndarray]:
    """The frame as inference reads it, for ``train_crops = "frame"``: its ``count`` crops placed by ``mode``
    (``choose_boxes``), each moved by up to 1/8 of the crop, all mirrored left-right together or none (the mean
    of the crops' scores is that of the mirrored frame)."""
    h, w = frame.shape[:2]
    boxes = [nudge(box, size, h, w, rng) for box in choose_boxes(frame, size, count, mode)]
    patches = cut_patches(frame, ref, size, boxes, context)
    if hflip and rng.random() < 0.5:
        patches = [p[:, ::-1] for p in patches]
    return [np.ascontiguousarray(p) for p in patches]


def view_crops(cfg: EraqueConfig) -> int:
    """Crops per training sample: the inference view's ``crops_per_frame`` with ``train_crops = "frame"``, else 1."""
    return cfg.input.crops_per_frame if cfg.input.train_crops == "frame" else 1


def sample_scores(crop_scores: torch.Tensor, crops: int) -> torch.Tensor:
    """One score per training sample of ``crops`` consecutive crops: their mean, as a frame's score is read."""
    return crop_scores.reshape(-1, crops).mean(dim=1)


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


# -- memory layout ---------------------------------------------------------------------------------------------
def channels_last(item):
    """A network or a 4-D batch in channels-last (NHWC) layout: the same numbers in another order, which
    oneDNN's convolutions run about 1.3x faster on this CPU (and far faster when other work shares its cores);
    ``gameqa bench train`` times both layouts side by side. Every network the trainers build, and every batch
    they feed it, goes through here."""
    if isinstance(item, torch.nn.Module):
        return item.to(memory_format=torch.channels_last)
    return item.contiguous(memory_format=torch.channels_last) if item.dim() == 4 else item


# -- scoring with a torch model (validation and `gameqa eval` of a checkpoint) ---------------------------------
@torch.no_grad()
def torch_frame_scores(model: torch.nn.Module, frames: list[np.ndarray], refs: Optional[list[np.ndarray]],
                       size: int, count: int, device: str = "cpu", batch: int = 16, mode: str = "grid") -> np.ndarray:
    """One score per frame: mean over its grid crops, as ``OnnxFrameModel.score_frames`` computes it (with the
    context strip under each crop for a context model)."""
    owners, patches = [], []
    context = getattr(model, "context_rows", 0)
    for i, frame in enumerate(frames):
        for p in crop_patches(frame, None if refs is None else refs[i], size, count, mode, context):
            owners.append(i)
            patches.append(p)
    scores = []
    for start in range(0, len(patches), batch):
        x = channels_last(normalise_crops(patches[start:start + batch]).to(device))
        scores.append(model(x).reshape(-1).double().cpu().numpy())
    flat = np.concatenate(scores)
    sums = np.bincount(owners, weights=flat, minlength=len(frames))
    counts = np.bincount(owners, minlength=len(frames))
    return np.clip(sums / counts, 1.0, 5.0)


def clip_metrics(pred: list[float], mos: list[float]) -> dict[str, float]:
    if len(pred) < 2:
        return {"srocc": float("nan"), "plcc": float("nan"), "rmse": float("nan")}
    return {"srocc": float(srocc(pred, mos)), "plcc": float(plcc(pred, mos)), "rmse": float(rmse(pred, mos))}


# -- checkpoints -----------------------------------------------------------------------------------------------
def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by the trainer (a ModelError-like ConfigError if it is not one)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises OSError, RuntimeError, pickle errors, EOFError, ...
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(path, f"cannot read checkpoint ({text})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(path, "not an ERAQUE checkpoint")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("model"), dict):
        raise ConfigError(path, "not a complete ERAQUE checkpoint (its config or weights are missing)")
    height = ckpt.get("display_height")
    if height is not None and (isinstance(height, bool) or not isinstance(height, int) or height < 0):
        raise ConfigError(path, f"damaged ERAQUE checkpoint: display_height is {height!r}, not a whole number")
    return ckpt


def copy_weights(model: torch.nn.Module, source: torch.nn.Module,
                 calibration: Optional[Callable[[], torch.Tensor]] = None) -> int:
    """Start ``model`` from ``source``'s weights where they fit; returns how many tensors were copied.

    Backbone tensors are copied where name and shape match (the first blocks of a truncated EfficientNet-Lite0
    take the full net's); a stem with more input channels takes the source's filters in its first channels,
    the others keep their start (zeros for the full-reference difference channels: the model starts as its
    no-reference source); a space-to-depth stem takes a plain source stem's filters folded (``folded_filters``: it
    starts as the source reading the block-averaged crop); the head is copied when all of it fits, else it stays
    new (a detail branch or context map the source lacks does not count: each starts at zero). A pruned
    EfficientNet-Lite0 (``efficientnet-lite0-p<keep>``) started from a full one takes the full one's most important
    channels (``gameqa.models.pruning.pruned_copy``; by their activity on the crops ``calibration()``
    gives, when given, else by their weights). Nothing shared is an error: the option would silently do nothing."""
    keep = lite0_keep(getattr(model, "backbone_name", ""))
    if keep is not None and keep < 1.0 and getattr(source, "backbone_name", "") == "efficientnet-lite0":
        from gameqa.models.pruning import pruned_copy

        source = pruned_copy(source, keep, calibration() if calibration is not None else None)
    mine = model.state_dict()
    plain_source = space_to_depth(getattr(source, "backbone_name", "")) == 1
    r = space_to_depth(getattr(model, "backbone_name", "")) if plain_source else 1
    copy: dict[str, torch.Tensor] = {}
    for key, value in source.state_dict().items():
        if key not in mine:
            continue
        target = mine[key]
        if target.shape == value.shape:
            copy[key] = value
        elif (r * r > 1 and key.startswith("backbone.") and target.dim() == 4 and target.shape[0] == value.shape[0]
              and target.shape[2:] == value.shape[2:] and target.shape[1] == value.shape[1] * r * r):
            copy[key] = folded_filters(value, r)  # a plain stem starts the folded one (space to depth)
        elif (key.startswith("backbone.") and target.dim() == 4 and target.shape[0] == value.shape[0]
              and target.shape[2:] == value.shape[2:] and target.shape[1] > value.shape[1]):
            widened = target.clone()
            widened[:, : value.shape[1]] = value
            copy[key] = widened
    # the detail branch and the context strip's map are new to a crop-only source and start without effect (their
    # maps at zero): not part of the head, which is copied so the network begins as its source
    head = [k for k in mine if not k.startswith(("backbone.", *EraqueNet.SIDE_PATHS))]
    whole_head = all(k in copy for k in head)
    copy = {k: v for k, v in copy.items() if k.startswith("backbone.") or whole_head}
    if not copy:
        raise ConfigError(None, "the network shares no layer with the checkpoint it should start from")
    model.load_state_dict(copy, strict=False)
    return len(copy)


def network_from_config(cfg: EraqueConfig, pretrained: Optional[bool] = None, init_score: float = 3.0) -> EraqueNet:
    """The network ``cfg.model`` describes (``pretrained``: the config's unless given; a rebuilt checkpoint needs none)."""
    m = cfg.model
    return EraqueNet(m.backbone, m.reference, pretrained=m.pretrained if pretrained is None else pretrained,
                     head_hidden=m.head_hidden, dropout=m.dropout, init_score=init_score,
                     context_rows=m.context_rows, detail_channels=m.detail_channels)


def model_from_checkpoint(ckpt: dict) -> tuple[EraqueNet, EraqueConfig]:
    """Rebuild the network of a checkpoint (no pretrained download or read needed) in eval mode; weights of
    another network are a ConfigError."""
    cfg = build_config(ckpt["config"])
    model = network_from_config(cfg, pretrained=False)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ConfigError(None, f"its weights do not fit its config's network ({str(exc).splitlines()[0]})") from None
    return channels_last(model).eval(), cfg


def state_digest(model: torch.nn.Module) -> str:
    """SHA-1 over every parameter and buffer, in order: equal digests mean identical weights."""
    h = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- the trainer -----------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_srocc: float
    best_step: int
    last_val: dict = field(default_factory=dict)
    digest: str = ""
    seconds: float = 0.0


class WeightAverage:
    """An exponential moving average of a model's weights (``train.ema_decay``, Polyak averaging).

    After every optimiser step each parameter moves ``1 - d`` of the way to the trained one, with
    ``d = min(decay, (1 + step) / (10 + step))`` so that early steps are not frozen into the average; buffers are
    copied. The average is what validation judges, what best.pt keeps as ``model`` (so eval, export and
    distillation read it) and the trained weights are kept beside it as ``trained_model`` for resuming."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            for avg, p in zip(self.model.parameters(), model.parameters()):
                avg.lerp_(p.detach(), 1.0 - d)
            for avg, b in zip(self.model.buffers(), model.buffers()):
                avg.copy_(b)


class Trainer:
    """``Trainer(cfg).fit()``; construction validates everything and fails before any training work."""

    def __init__(self, cfg: EraqueConfig, *, resume: bool = True, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.train.device == "auto" else cfg.train.device
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(None, "train.device is cuda but no CUDA device is available")
        self.run_dir = cfg.run_dir()
        init = cfg.model.init_path()
        if init is not None and not init.is_file():
            raise ConfigError(init, "checkpoint not found (model.init)")
        self.splits = load_splits(cfg)
        self.resume_from = self._check_resume(resume)
        self.dist = Dist()
        self.log = log
        self.clips: dict[str, list[ClipFrames]] = {}
        self.average: Optional[WeightAverage] = None

    # -- setup --------------------------------------------------------------------------------------------------
    def _check_resume(self, resume: bool) -> Optional[Path]:
        last = self.run_dir / "last.pt"
        if not last.is_file():
            return None
        if not resume:
            raise ConfigError(self.run_dir, "holds a run already (last.pt); resume it, or choose another out_dir")
        ckpt = load_checkpoint(last)
        changes = config_changes(_flat(ckpt.get("config", {})), self.cfg.to_flat())
        if changes:
            more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
            raise ConfigError(last, f"the config changed since this run started: {changes[0]}{more}; "
                                    "resume with the same config or choose another out_dir")
        return last

    def _threads(self) -> None:
        threads = self.cfg.train.threads or max(1, (os.cpu_count() or 1) // max(1, self._local_world()))
        torch.set_num_threads(threads)

    @staticmethod
    def _local_world() -> int:
        return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))

    def _cache(self) -> None:
        cfg, d = self.cfg, self.dist
        cache = FrameCache(cfg.frames_dir(), cfg.data.sample)
        rows = self.splits["train"] + self.splits["val"]
        fr = cfg.model.reference == "full"
        if d.main:
            anchors = sum(r["codec"] == "none" for r in self.splits["train"]) if cfg.data.pristine_anchors else 0
            also = f" (with {anchors} pristine captures of the train sources)" if anchors else ""
            self.log(f"caching frames of {len(rows)} clips{also} under {cfg.frames_dir()}")
        entries = self.cache_shared(cache, rows, "caching", reference=fr)
        for split in ("train", "val"):
            self.clips[split] = [ClipFrames(r, *entries[r["clip_id"]]) for r in self.splits[split]]

    def cache_shared(self, cache: FrameCache, rows: list[dict], label: str, reference: bool = False) -> dict:
        """Each process caches its share of ``rows``, then everyone reads every entry (``clip_id -> entries``)."""
        d = self.dist
        share = rows[d.rank::d.world]
        cache.cache_rows(share, reference=reference, progress=self._progress_cb(label))
        if d.main and self.cfg.train.progress:
            self.log(f"{label}: {len(share)} clips ready; this run decoded {cache.built} cache entries, "
                     "the rest were cached already or by another run")
        _barrier(d)
        return cache.cache_rows(rows, reference=reference)

    def _progress_cb(self, label: str):
        if not (self.dist.main and self.cfg.train.progress):
            return None
        state = {"last": 0.0}

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - state["last"] > 5:
                state["last"] = now
                self.log(f"{label}: {done}/{total}")
        return report

    def _build(self):
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = network_from_config(cfg, init_score=float(np.mean([c.mos for c in self.clips["train"]])))
        init = cfg.model.init_path()
        if init is not None:
            source, _ = model_from_checkpoint(load_checkpoint(init))
            copied = copy_weights(model, source)
            if self.dist.main:
                self.log(f"initialised {copied} of {len(model.state_dict())} tensors from {init}")
        channels_last(model.to(self.device))
        backbone = list(model.backbone.parameters())
        head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]  # head (context, detail)
        groups = [{"params": head, "lr": cfg.train.lr, "base_lr": cfg.train.lr}]
        if cfg.train.backbone_lr_scale > 0:
            lr = cfg.train.lr * cfg.train.backbone_lr_scale
            groups.append({"params": backbone, "lr": lr, "base_lr": lr})
        else:
            for p in backbone:
                p.requires_grad_(False)
        optimizer = torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)
        return model, optimizer

    # -- schedule and data --------------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        n = len(self.clips["train"]) * min(self.cfg.train.frames_per_clip_per_epoch, self._min_frames())
        return n // (self.cfg.train.batch_size * self.dist.world)

    def _min_frames(self) -> int:
        return min(len(c.frames) for c in self.clips["train"])

    def _lr_factor(self, step: int, total: int) -> float:
        warm = self.cfg.train.warmup_steps
        if warm and step < warm:
            return (step + 1) / warm
        if self.cfg.train.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def epoch_plan(self, epoch: int) -> list[tuple[int, int]]:
        """(clip index, frame index) of every sample of an epoch, in order (the same on every process)."""
        rng = np.random.default_rng([self.cfg.seed, epoch, 1])
        k = min(self.cfg.train.frames_per_clip_per_epoch, self._min_frames())
        samples = []
        for ci, clip in enumerate(self.clips["train"]):
            for fi in rng.choice(len(clip.frames), size=k, replace=False):
                samples.append((ci, int(fi)))
        order = rng.permutation(len(samples))
        return [samples[i] for i in order]

    def batch_positions(self, batch: int) -> range:
        """The positions in an epoch plan of this process's share of global batch ``batch``."""
        size, d = self.cfg.train.batch_size, self.dist
        start = (batch * d.world + d.rank) * size
        return range(start, start + size)

    def load_batch(self, plan: list[tuple[int, int]], epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's share of global batch ``batch`` of ``epoch``: normalised crops and their MOS."""
        cfg = self.cfg
        patches, targets = [], []
        for pos in self.batch_positions(batch):
            ci, fi = plan[pos]
            clip = self.clips["train"][ci]
            rng = np.random.default_rng([cfg.seed, epoch, 2, pos])
            frame = clip.frames.load(fi)
            ref = clip.refs.load(fi) if clip.refs is not None else None
            patches.extend(self.sample_crops(frame, ref, rng))
            targets.append(clip.mos)
        return normalise_crops(patches), torch.tensor(targets, dtype=torch.float32)

    @property
    def view_crops(self) -> int:
        """Crops per training sample (``view_crops``)."""
        return view_crops(self.cfg)

    def sample_crops(self, frame: np.ndarray, ref: Optional[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """The crops of one training sample: one random crop, or the whole inference view (``frame_view``)."""
        cfg = self.cfg
        if cfg.input.train_crops == "frame":
            return frame_view(frame, ref, cfg.input.crop_size, cfg.input.crops_per_frame, cfg.input.crop_mode, rng,
                              cfg.input.hflip, cfg.model.context_rows)
        return [random_crop(frame, ref, cfg.input.crop_size, rng, cfg.input.hflip, cfg.input.train_crops,
                            cfg.model.context_rows)]

    def sample_scores(self, crop_scores: torch.Tensor) -> torch.Tensor:
        """One score per training sample: the mean over its ``view_crops`` crops (``sample_scores``)."""
        return sample_scores(crop_scores, self.view_crops)

    # -- validation -----------------------------------------------------------------------------------------------
    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        model.eval()
        mine = []
        for clip in self.clips["val"][d.rank::d.world]:
            picks = spread(len(clip.frames), cfg.data.val_frames)
            frames = [clip.frames.load(i) for i in picks]
            refs = [clip.refs.load(i) for i in picks] if clip.refs is not None else None
            scores = torch_frame_scores(model, frames, refs, cfg.input.crop_size, cfg.data.val_crops, self.device,
                                        mode=cfg.input.crop_mode)
            mine.append((clip.row["clip_id"], pool_scores(scores, cfg.export.pooling), clip.mos))
        gathered = sorted(item for part in _gather(d, mine) for item in part)
        return clip_metrics([p for _, p, _ in gathered], [m for _, _, m in gathered])

    # -- the loss of one step (the distillation trainer extends it) ---------------------------------------------
    extra_log: dict = {}

    def step_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Ground-truth loss of one batch: regression plus the hard pairwise ranking loss."""
        return self.ground_truth_loss(self.sample_scores(model(x)), y)

    def ground_truth_loss(self, pred: torch.Tensor, y: torch.Tensor):
        """``[loss]`` of predicted vs labelled scores: regression plus the hard pairwise ranking loss."""
        loss = self.cfg.loss
        return eraque_loss(pred, y, regression=loss.regression, regression_weight=loss.regression_weight,
                           rank_weight=loss.rank_weight, rank_threshold=loss.rank_threshold,
                           rank_margin=loss.rank_margin, margin_scale=loss.margin_scale,
                           pair_weighting=loss.pair_weighting)

    def extra_state(self) -> dict:
        """More state to keep in checkpoints (the distillation adapter)."""
        return {}

    def load_extra_state(self, ckpt: dict) -> None:
        """Restore what ``extra_state`` saved, on resume."""

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    def _write_metrics(self, row: dict) -> None:
        path = self.run_dir / "metrics.csv"
        new = not path.is_file()
        with open(path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def _trim_metrics(self, step: int) -> None:
        """On resume, drop log rows written after the checkpoint (they will be written again)."""
        path = self.run_dir / "metrics.csv"
        if not path.is_file():
            return
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        kept = [r for r in rows if int(r["step"]) <= step]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def _checkpoint(self, model, optimizer, step, epoch, batch, best, name="last.pt") -> None:
        rng_states = _gather(self.dist, torch.get_rng_state())
        cuda_rng = _gather(self.dist, torch.cuda.get_rng_state()) if self.device == "cuda" else None
        if not self.dist.main:
            return
        weights = {"model": _unwrap(model).state_dict()}
        if self.average is not None:  # the average is the model; the trained weights are kept to resume
            weights = {"model": self.average.model.state_dict(), "trained_model": weights["model"]}
        _save_atomic({
            "format": CHECKPOINT_FORMAT, "config": self.cfg.model_dump(mode="json"),
            **weights, "optimizer": optimizer.state_dict(),
            "step": step, "epoch": epoch, "batch": batch, "best": best, "world": self.dist.world,
            "rng": rng_states, **({"cuda_rng": cuda_rng} if cuda_rng is not None else {}),
            "display_height": self.display_height(), **self.extra_state(),
        }, self.run_dir / name)

    def display_height(self) -> int:
        if self.cfg.export.display_height:
            return self.cfg.export.display_height
        return max(int(r["display_height"]) for r in self.splits["train"])

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg = self.cfg
        t_start = time.monotonic()
        self.dist = d = init_distributed(self.device)
        if self.device == "cuda":
            if d.active:
                torch.cuda.set_device(d.local_rank)
            _deterministic_cuda()
        self._threads()
        if d.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
        self._cache()
        spe = self.steps_per_epoch()
        if spe < 1:
            raise ConfigError(cfg.manifest_path(), f"the train split gives fewer samples per epoch than one batch "
                                                   f"({cfg.train.batch_size} x {d.world} processes)")
        total = cfg.train.epochs * spe
        stop = min(total, cfg.train.max_steps) if cfg.train.max_steps else total
        model, optimizer = self._build()
        self.average = WeightAverage(model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        judged = self.average.model if self.average is not None else model  # what validation and best.pt hold
        step, epoch0, batch0 = 0, 0, 0
        best = {"srocc": -float("inf"), "step": -1}
        if self.resume_from is not None:
            ckpt = torch.load(self.resume_from, map_location="cpu", weights_only=False)
            model.load_state_dict(ckpt.get("trained_model", ckpt["model"]))
            if self.average is not None:
                self.average.model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            step, epoch0, batch0, best = ckpt["step"], ckpt["epoch"], ckpt["batch"], ckpt["best"]
            self.load_extra_state(ckpt)
            if ckpt.get("world") == d.world:
                torch.set_rng_state(ckpt["rng"][d.rank])
                if self.device == "cuda" and "cuda_rng" in ckpt:  # dropout on a GPU draws from its own generator
                    torch.cuda.set_rng_state(ckpt["cuda_rng"][d.rank])
            else:
                self.log(f"resuming with {d.world} processes instead of {ckpt.get('world')}: not bit-identical")
                torch.manual_seed(cfg.seed + 1000 * step + d.rank)
            if d.main:
                self._trim_metrics(step)
                self.log(f"resuming {self.run_dir} at step {step} (epoch {epoch0 + 1}, batch {batch0})")
        else:
            torch.manual_seed(cfg.seed * 7919 + d.rank)  # dropout and drop-connect draws, per process
            if d.main:
                (self.run_dir / "metrics.csv").unlink(missing_ok=True)
        ddp = model
        if d.active:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(model, device_ids=[d.local_rank] if self.device == "cuda" else None)
        last_val: dict = {}
        validated_at = -1
        progress = self._progress(stop, step)
        window: list[tuple[float, float, float, int]] = []
        t_log = time.monotonic()
        prefetch = ThreadPoolExecutor(max_workers=1)
        try:
            for epoch in range(epoch0, cfg.train.epochs):
                if step >= stop:
                    break
                plan = self.epoch_plan(epoch)
                first = batch0 if epoch == epoch0 else 0
                pending = prefetch.submit(self.load_batch, plan, epoch, first) if first < spe else None
                for batch in range(first, spe):
                    if step >= stop:
                        break
                    x, y = pending.result()
                    pending = prefetch.submit(self.load_batch, plan, epoch, batch + 1) if batch + 1 < spe else None
                    ddp.train()
                    if cfg.model.freeze_bn:
                        model.freeze_batchnorm()
                    factor = self._lr_factor(step, total)
                    for group in optimizer.param_groups:
                        group["lr"] = group["base_lr"] * factor
                    parts = self.step_loss(ddp, channels_last(x.to(self.device)), y.to(self.device))
                    optimizer.zero_grad(set_to_none=True)
                    parts.total.backward()
                    if cfg.train.grad_clip:
                        params = [p for group in optimizer.param_groups for p in group["params"]]
                        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                    optimizer.step()
                    step += 1
                    if self.average is not None:
                        self.average.update(model, step)
                    logged = {"train_loss": float(parts.total.detach()), "regression": parts.regression,
                              "ranking": parts.ranking, "hard_pairs": parts.hard_pairs, **self.extra_log}
                    window.append(list(logged.values()))
                    if progress:
                        progress[0].update(progress[1], completed=step, loss=window[-1][0])
                    if step % cfg.train.log_every == 0 or step == stop:
                        means = _mean_across(d, np.mean(np.array(window, dtype=np.float64), axis=0).tolist())
                        window = []
                        if d.main:
                            now = time.monotonic()
                            self._write_metrics({"step": step, "epoch": epoch + 1, "lr": cfg.train.lr * factor,
                                                 **dict(zip(logged, means)), "seconds": now - t_log})
                            t_log = now
                    end_of_epoch = batch + 1 == spe
                    if (end_of_epoch and (epoch + 1) % cfg.train.validate_every == 0) or step == stop:
                        last_val = self.validate(judged)  # unwrapped: DDP's forward would sync buffers across ranks
                        validated_at = step
                        best = self._after_validation(model, optimizer, step, epoch, batch + 1, best, last_val)
                    if step % cfg.train.checkpoint_every == 0 or end_of_epoch or step == stop:
                        nxt = (epoch + 1, 0) if end_of_epoch else (epoch, batch + 1)
                        self._checkpoint(model, optimizer, step, *nxt, best)
                batch0 = 0
            if validated_at != step:  # resumed at the very end: make sure the last state is judged
                last_val = self.validate(judged)  # unwrapped: DDP's forward would sync buffers across ranks
                best = self._after_validation(model, optimizer, step, cfg.train.epochs, 0, best, last_val)
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)
            if progress:
                progress[0].stop()
        _barrier(d)
        result = TrainResult(self.run_dir, step, best["srocc"], best["step"], last_val, state_digest(judged),
                             time.monotonic() - t_start)
        if d.main:
            self.log(f"done: {step} steps, best val SROCC {best['srocc']:.4f} at step {best['step']}; "
                     f"{self.run_dir / 'best.pt'}")
        return result

    def _after_validation(self, model, optimizer, step, epoch, batch, best, val) -> dict:
        if self.dist.main:
            self._write_metrics({"step": step, "epoch": epoch + 1, "val_srocc": val["srocc"], "val_plcc": val["plcc"],
                                 "val_rmse": val["rmse"]})
            plot_learning_curve(self.run_dir / "metrics.csv", self.run_dir / "learning_curve.png")
            self.log(f"step {step}: val SROCC {val['srocc']:.4f} PLCC {val['plcc']:.4f} RMSE {val['rmse']:.4f}")
        score = val["srocc"] if np.isfinite(val["srocc"]) else -1.0
        if score > best["srocc"]:
            best = {"srocc": score, "step": step}
            self._checkpoint(model, optimizer, step, epoch, batch, best, name="best.pt")
        return best

    def _progress(self, stop: int, step: int):
        if not (self.dist.main and self.cfg.train.progress):
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from gameqa.console import console as plain_console

        bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                       TimeElapsedColumn(), TimeRemainingColumn(), console=plain_console(stderr=True))
        task = bar.add_task("train", total=stop, completed=step, loss=float("nan"))
        bar.start()
        return bar, task


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _flat(tree: dict) -> dict:
    from gameqa.train.config import _flatten

    return _flatten(tree)


def plot_learning_curve(metrics_csv: Path, out_png: Path) -> None:
    """Train loss and val SROCC against steps, from the metrics log (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(io.StringIO(Path(metrics_csv).read_text())))
    train = [(int(r["step"]), float(r["train_loss"])) for r in rows if r.get("train_loss")]
    val = [(int(r["step"]), float(r["val_srocc"])) for r in rows if r.get("val_srocc")]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), color="tab:blue", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss", color="tab:blue")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", color="tab:red", label="val SROCC")
        ax2.set_ylabel("val SROCC", color="tab:red")
    ax.set_title("ERAQUE learning curve")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=100)


def train(cfg: EraqueConfig, *, resume: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Validate, cache frames, train; see ``Trainer``."""
    return Trainer(cfg, resume=resume, log=log).fit()


def _timed_step(cfg: EraqueConfig, model: EraqueNet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> float:
    """Seconds of one training step (forward, both losses, backward, AdamW) on a synthetic batch."""
    t0 = time.perf_counter()
    model.train()
    if cfg.model.freeze_bn:
        model.freeze_batchnorm()
    loss = eraque_loss(sample_scores(model(x), view_crops(cfg)), y, regression=cfg.loss.regression,
                       rank_threshold=cfg.loss.rank_threshold).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t0


def _synthetic_run(cfg: EraqueConfig, layout_channels_last: bool = True):
    """(model, AdamW, synthetic batch) for timing ``cfg``'s training step: seeded, in the given layout."""
    torch.manual_seed(cfg.seed)
    model = network_from_config(cfg)
    x = torch.randn(cfg.train.batch_size * view_crops(cfg), model.in_channels, model.input_height(cfg.input.crop_size),
                    cfg.input.crop_size)
    if layout_channels_last:
        model, x = channels_last(model), channels_last(x)
    return model, torch.optim.AdamW(model.parameters(), lr=cfg.train.lr), x


def measure_step_seconds(cfg: EraqueConfig, steps: int = 5) -> dict[str, float]:
    """Seconds per training step (forward, both losses, backward, AdamW) and per eval crop, for ``cfg``'s
    backbone, crop size and batch size, on this machine's CPU threads (synthetic crops: the cost does not
    depend on pixel values). The trainers' channels-last layout and the plain (contiguous) one are timed side by
    side, a step of each in turn; the first step of each is a warm-up and is not counted."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    batch = cfg.train.batch_size
    y = torch.linspace(1.0, 5.0, batch)
    runs = {layout: (*_synthetic_run(cfg, layout == "channels_last"), []) for layout in ("channels_last", "contiguous")}

    for _ in range(steps + 1):
        for model, optimizer, x, times in runs.values():
            times.append(_timed_step(cfg, model, optimizer, x, y))
    model, _, x, _ = runs["channels_last"]
    model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        model(x)
        per_crop = (time.perf_counter() - t0) / len(x)
    steady = {layout: sorted(run[3][1:]) for layout, run in runs.items()}
    median = {layout: t[len(t) // 2] for layout, t in steady.items()}
    return {"step_s_median": median["channels_last"], "step_s_min": steady["channels_last"][0],
            "step_s_median_contiguous": median["contiguous"],
            "contiguous_over_channels_last": median["contiguous"] / median["channels_last"],
            "eval_s_per_crop": per_crop, "threads": torch.get_num_threads()}


def _lane(cfg: EraqueConfig, threads: int, steps: int, start, finished, out) -> None:
    """One process of ``measure_lanes``: warm up, wait for the others, time ``steps`` channels-last steps, then
    keep stepping (untimed) until every lane has its steps, so that all of them are timed under the same load."""
    torch.set_num_threads(threads)
    model, optimizer, x = _synthetic_run(cfg)
    y = torch.linspace(1.0, 5.0, cfg.train.batch_size)
    _timed_step(cfg, model, optimizer, x, y)
    start.wait()
    times = [_timed_step(cfg, model, optimizer, x, y) for _ in range(steps)]
    with finished.get_lock():
        finished.value += 1
    out.put(times)
    while finished.value < start.parties:
        _timed_step(cfg, model, optimizer, x, y)


def check_lanes(lanes: int, cores: Optional[int] = None) -> int:
    """The cores ``measure_lanes`` shares out; refuses fewer than 2 lanes or fewer cores than lanes."""
    cores = cores or os.cpu_count() or 1
    if lanes < 2 or cores // lanes < 1:
        raise ConfigError("--lanes", f"needs 2 or more lanes with a thread each (asked for {lanes} on "
                                     f"{cores} core{'' if cores == 1 else 's'})")
    return cores


def measure_lanes(cfg: EraqueConfig, lanes: int, steps: int = 4, rounds: int = 2,
                  cores: Optional[int] = None) -> dict[str, float]:
    """Training steps per hour of one run on all ``cores`` against ``lanes`` runs side by side, each on
    ``cores // lanes`` threads (how `scripts/logo.sh` runs its games). Each setting runs in fresh processes,
    the two alternate for ``rounds`` rounds, and the median step time of each is taken over all its steps."""
    import multiprocessing as mp
    import queue

    cores = check_lanes(lanes, cores)
    ctx = mp.get_context("spawn")
    times: dict[int, list[float]] = {1: [], lanes: []}
    for _ in range(rounds):
        for n in (1, lanes):
            start, finished, out = ctx.Barrier(n), ctx.Value("i", 0), ctx.Queue()
            procs = [ctx.Process(target=_lane, args=(cfg, cores // n, steps, start, finished, out)) for _ in range(n)]
            for p in procs:
                p.start()
            got: list[list[float]] = []
            while len(got) < n:
                try:
                    got.append(out.get(timeout=2))
                except queue.Empty:
                    failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                    if failed:
                        for p in procs:
                            p.terminate()
                        raise ConfigError("--lanes", f"a timing process failed (exit code {failed[0]})")
            for p in procs:
                p.join()
            times[n] += [t for lane in got for t in lane]
    median = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    one_h, lanes_h = 3600 / median[1], lanes * 3600 / median[lanes]
    return {"lanes": lanes, "cores": cores, "one_run_threads": cores, "lane_threads": cores // lanes,
            "one_run_step_s": median[1], "lane_step_s": median[lanes], "one_run_steps_per_h": one_h,
            "lanes_steps_per_h": lanes_h, "lanes_over_one_run": lanes_h / one_h}


def estimate_hours(cfg: EraqueConfig, train_clips: int, val_clips: int, step_s: float, crop_s: float,
                   load_s_per_frame: float = 0.04) -> dict[str, float]:
    """Projected training time: steps x step time, validations, and PNG loading (not overlapped, a bound)."""
    steps_per_epoch = train_clips * cfg.train.frames_per_clip_per_epoch // cfg.train.batch_size
    steps = steps_per_epoch * cfg.train.epochs
    validations = cfg.train.epochs // cfg.train.validate_every
    val_s = val_clips * cfg.data.val_frames * (cfg.data.val_crops * crop_s + load_s_per_frame)
    train_s = steps * (step_s + cfg.train.batch_size * load_s_per_frame)
    return {"steps": steps, "train_h": train_s / 3600, "validation_h": validations * val_s / 3600,
            "total_h": (train_s + validations * val_s) / 3600}
