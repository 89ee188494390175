"""Knowledge distillation: train a small ERAQUE student from a trained teacher (``gameqa distill CONFIG``).

The student is an ordinary ERAQUE config (e.g. ``model.backbone = "mobilenetv2-0.5"``) with a ``[distill]``
section naming the teacher checkpoint. Every step the frozen teacher sees the same crops as the student, and
the student's loss is

    ground truth (regression + hard ranking, ``[loss]``, labelled crops only)
    + output_weight  x |student score - teacher score|    (soft targets; L1 or L2)
    + feature_weight x ||adapter(student map) - teacher map||^2 / ||teacher map||^2
    + block_weight   x mean over backbone blocks of ||student block(teacher block's input) - teacher block||^2
                       / ||teacher block||^2

where the adapter is a 1x1 convolution from the student's last feature map to the teacher's (trained with the
student, dropped at export); the block term is for a student whose blocks give the teacher's shapes (a pruned
copy of the teacher, ``gameqa.models.pruning``); with ``distill.output_target = "frame"`` the soft target of a
crop is the teacher's score of its whole frame, read the teacher's own way (``teacher_frame_scores``).
Unlabelled crops -- more frames of the train clips than the labelled cache holds, sampled at other times, or
frames of the clips of another manifest (``distill.unlabelled_manifest``: more gameplay, other games; contents
and sources of the val and test splits left out) -- feed the distillation terms only. Everything else (splits,
caching, schedule, validation, checkpoints, resume, torchrun) is the ERAQUE trainer's.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gameqa.data.corpus import file_digest
from gameqa.errors import ConfigError, ModelError
from gameqa.models.backbones import lite0_blocks
from gameqa.models.eraque import normalise_crops
from gameqa.train.config import EraqueConfig
from gameqa.train.frames import CachedFrames, FrameCache
from gameqa.train.trainer import (Trainer, _barrier, channels_last, copy_weights, load_checkpoint,
                                  model_from_checkpoint, random_crop, spread, torch_frame_scores)


CALIBRATION_CROPS = 32  # train crops that pick a pruned student's channels from the teacher's


def feature_distance(student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """Mean squared difference, divided by the teacher map's mean square (scale-free); sizes pooled to match."""
    if student_map.shape[-2:] != teacher_map.shape[-2:]:
        student_map = F.adaptive_avg_pool2d(student_map, teacher_map.shape[-2:])
    return (student_map - teacher_map).pow(2).mean() / teacher_map.pow(2).mean().clamp_min(1e-8)


def output_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Distance of the student's scores to the teacher's (soft targets)."""
    return F.l1_loss(student, teacher) if kind == "l1" else F.mse_loss(student, teacher)


def teacher_frame_scores(score: Callable[[list[np.ndarray]], np.ndarray], tag: str, entries: list[CachedFrames],
                         store: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """The teacher's score of every frame of ``entries`` (cache key -> one score per frame), read its own way by
    ``score`` (frames -> one score each, e.g. the mean over its crops, as its exported model scores a frame).

    Kept in ``store/<tag>.json`` (``tag`` names the teacher file and its reading; entries are keyed by the frame
    cache's content keys), written every few dozen entries, so that reruns and resumed runs only score what is
    new."""
    path = store / f"{tag}.json"
    known: dict[str, list[float]] = json.loads(path.read_text()) if path.is_file() else {}
    todo = list({e.key: e for e in entries if e.key not in known}.values())

    def save() -> None:
        store.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, path)

    for i, entry in enumerate(todo):
        known[entry.key] = [round(float(v), 6) for v in score([entry.load(j) for j in range(len(entry))])]
        if (i + 1) % 50 == 0 or i + 1 == len(todo):
            save()
        if progress:
            progress(i + 1, len(todo))
    return {e.key: known[e.key] for e in entries}


def _tag(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def unlabelled_rows(manifest: Path, held_out: list[dict], logo_game: str = "") -> list[dict]:
    """The rows of ``manifest`` (clip paths resolved, files checked) whose content and source are in none of
    ``held_out`` (the val and test rows), and (leaving one game out) not of ``logo_game`` at all, its soft and
    JPEG-blocked variants included, so that no held-out scene reaches training even unlabelled."""
    from gameqa.data.manifest import manifest_root, read_manifest

    contents = {r["content"] for r in held_out} - {""}  # a row without a content is checked by its source
    sources = {r["source_id"] for r in held_out}
    rows = [r for r in read_manifest(manifest, root=manifest_root(manifest), check_files=True)
            if r["content"] not in contents and r["source_id"] not in sources
            and not (logo_game and r["game"] == logo_game)]
    if not rows:
        raise ConfigError(manifest, "every clip is of a val or test content: no unlabelled clips left")
    return rows


def _same_blocks(student: str, teacher: str) -> bool:
    """Whether two backbone names are EfficientNet-Lite0 networks with the same blocks (pruned or not)."""
    return lite0_blocks(student) is not None and lite0_blocks(student) == lite0_blocks(teacher)


def _lite0_blocks(model: nn.Module) -> list[nn.Module]:
    """The MBConv blocks of an EfficientNet-Lite0 ``EraqueNet`` (plain, truncated or pruned)."""
    return list(model.backbone.net._blocks)


class DistillTrainer(Trainer):
    """The ERAQUE trainer with a frozen teacher, an adapter, and unlabelled crops."""

    def __init__(self, cfg: EraqueConfig, *, resume: bool = True, log: Callable[[str], None] = print):
        dcfg = cfg.distill
        path = dcfg.teacher_path()
        if path is None:
            raise ConfigError(None, "distill.teacher is empty: name the teacher to distil from (a checkpoint .pt, "
                                    "or an exported model)")
        exported = path.suffix != ".pt"  # a registered model name or an exported model folder (ONNX)
        if exported:
            from gameqa.models.registry import create_model, get_card

            try:
                card = get_card(dcfg.teacher)
            except ModelError:
                raise ConfigError(path, "teacher not found (distill.teacher: a checkpoint .pt, or a registered "
                                        "or exported model)") from None
            if dcfg.output_target != "frame" or dcfg.output_weight <= 0 or dcfg.feature_weight > 0 \
                    or dcfg.block_weight > 0 or dcfg.init_from_teacher:
                raise ConfigError(path, "an exported teacher gives whole-frame scores only: set distill.output_target "
                                        "= \"frame\", output_weight > 0, feature_weight = 0, block_weight = 0, "
                                        "init_from_teacher = false")
            if card.full_reference != (cfg.model.reference == "full"):
                raise ConfigError(path, f"the teacher {card.name!r} and the student (reference="
                                        f"{cfg.model.reference!r}) must see the same input")
        elif not path.is_file():
            raise ConfigError(path, "teacher checkpoint not found (distill.teacher)")
        else:
            teacher_ckpt = load_checkpoint(path)
            if dcfg.block_weight > 0 and not _same_blocks(cfg.model.backbone,
                                                          teacher_ckpt["config"]["model"]["backbone"]):
                raise ConfigError(path, "distill.block_weight needs a student whose backbone blocks give the "
                                        "teacher's outputs in shape (an EfficientNet-Lite0 teacher and a pruned copy, "
                                        "model.backbone = \"efficientnet-lite0-p<keep>\")")
        if cfg.model.reference == "full" and dcfg.unlabelled_clips:
            raise ConfigError(path, "unlabelled frames are for no-reference students "
                                    "(set distill.unlabelled_clips = 0)")
        extra = dcfg.unlabelled_manifest_path()
        if extra is not None and not extra.is_file():
            raise ConfigError(extra, "manifest not found (distill.unlabelled_manifest)")
        super().__init__(cfg, resume=resume, log=log)
        self.teacher: nn.Module | None = None
        self.teacher_cfg: EraqueConfig | None = None
        self.teacher_engine = None
        if exported:
            self.teacher_engine = create_model(dcfg.teacher, threads=max(1, torch.get_num_threads()))
            self.teacher_path = Path(self.teacher_engine.card.weights)
        else:
            self.teacher, self.teacher_cfg = model_from_checkpoint(teacher_ckpt)
            if self.teacher_cfg.model.reference != cfg.model.reference:
                raise ConfigError(path, f"the teacher is reference={self.teacher_cfg.model.reference!r}, the student "
                                        f"reference={cfg.model.reference!r}: they must see the same input")
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.teacher_path = path
        self.frame_targets: dict[str, list[float]] = {}
        self.adapter: nn.Module | None = None
        self._adapter_run: nn.Module | None = None
        self.unlabelled, self.unlabelled_ids = [], []
        self.unlabelled_pool = (self.splits["train"] if extra is None else
                                unlabelled_rows(extra, self.splits.get("val", []) + self.splits.get("test", []),
                                                logo_game=cfg.data.logo_game))
        self.extra_log = {"distill_output": 0.0, "distill_feature": 0.0, "distill_blocks": 0.0}
        self._student_blocks: list[nn.Module] = []
        self._teacher_blocks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- setup --------------------------------------------------------------------------------------------------
    def _cache(self) -> None:
        super()._cache()
        cfg, d = self.cfg, self.dist
        n = cfg.distill.unlabelled_clips
        if not n or not cfg.distill.unlabelled_per_batch or \
                cfg.distill.output_weight + cfg.distill.feature_weight + cfg.distill.block_weight == 0:
            return
        extra = cfg.distill.unlabelled_manifest_path()
        what = "train clips" if extra is None else f"clips of {extra.name} (no val or test content)"
        pool = self.unlabelled_pool
        rows = [pool[i] for i in spread(len(pool), n)]
        cache = FrameCache(cfg.frames_dir(), cfg.distill.unlabelled_sample)
        if d.main:
            self.log(f"caching unlabelled frames ({cfg.distill.unlabelled_sample}) of {len(rows)} {what}")
        entries = self.cache_shared(cache, rows, "caching unlabelled")
        self.unlabelled = [entries[r["clip_id"]][0] for r in rows]
        self.unlabelled_ids = [r["clip_id"] for r in rows]

    def _frame_reader(self) -> tuple[Callable[[list[np.ndarray]], np.ndarray], str, str]:
        """How the teacher reads a whole frame: (frames -> scores, the tag of its kept scores, a description)."""
        digest = file_digest(self.teacher_path)
        if self.teacher_engine is not None:  # an exported teacher reads frames as `gameqa score` does
            engine = self.teacher_engine
            return engine.score_frames, _tag(f"{digest}|onnx"), f"exported model {engine.card.name!r}"
        t = self.teacher_cfg.input
        score = partial(torch_frame_scores, self.teacher, refs=None, size=t.crop_size, count=t.crops_per_frame,
                        device=self.device, mode=t.crop_mode)
        return score, _tag(f"{digest}|{t.crop_size}|{t.crops_per_frame}|{t.crop_mode}"), \
            f"{t.crops_per_frame} {t.crop_mode} crops of {t.crop_size} px"

    def _frame_targets(self) -> None:
        """The teacher's whole-frame scores of every train and unlabelled frame (``output_target = "frame"``)."""
        cfg, d = self.cfg, self.dist
        entries = [c.frames for c in self.clips["train"]] + list(self.unlabelled)
        store = cfg.frames_dir() / "teacher-scores"
        score, tag, how = self._frame_reader()
        if d.main:  # the main process scores and keeps them; the others read what it kept
            self.log(f"teacher scores of whole frames ({how}) of {len(entries)} cached clips under {store}")
            self.frame_targets = teacher_frame_scores(score, tag, entries, store,
                                                      progress=self._progress_cb("teacher frame scores"))
        _barrier(d)
        if not d.main:
            self.frame_targets = teacher_frame_scores(score, tag, entries, store)

    def _build(self):
        model, optimizer = super()._build()
        if self.teacher is not None:
            self.teacher.to(self.device).eval()
        if self.cfg.distill.output_target == "frame" and self.cfg.distill.output_weight > 0:
            self._frame_targets()
        if self.cfg.distill.init_from_teacher:
            # a pruned student keeps the teacher's channels that vary most on train crops
            copied = copy_weights(model, self.teacher,
                                  calibration=lambda: self._calibration_crops(CALIBRATION_CROPS))
            if self.dist.main:
                self.log(f"initialised {copied} of {len(model.state_dict())} student tensors from the teacher")
        if self.cfg.distill.block_weight > 0:
            self._watch_blocks(model)
        if self.cfg.distill.feature_weight > 0:
            torch.manual_seed(self.cfg.seed + 17)
            self.adapter = channels_last(nn.Conv2d(model.feature_channels, self.teacher.feature_channels, 1)
                                         .to(self.device))
            lr = self.cfg.train.lr
            optimizer.add_param_group({"params": list(self.adapter.parameters()), "lr": lr, "base_lr": lr})
            self._adapter_run = self.adapter
            if self.dist.active:
                from torch.nn.parallel import DistributedDataParallel

                ids = [self.dist.local_rank] if self.device == "cuda" else None
                self._adapter_run = DistributedDataParallel(self.adapter, device_ids=ids)
        return model, optimizer

    def _calibration_crops(self, count: int) -> torch.Tensor:
        """``count`` random crops of cached train frames (seeded), normalised, on the device."""
        rng = np.random.default_rng([self.cfg.seed, 29])
        train = self.clips["train"]
        crops = []
        for _ in range(count):
            frames = train[int(rng.integers(len(train)))].frames
            crops.append(random_crop(frames.load(int(rng.integers(len(frames)))), None, self.cfg.input.crop_size,
                                     rng, hflip=False))
        return channels_last(normalise_crops(crops).to(self.device))

    def _watch_blocks(self, model: nn.Module) -> None:
        """Keep what goes into and comes out of each of the teacher's backbone blocks at every forward (the block
        term; ``__init__`` has checked that the student's blocks give the teacher's shapes)."""
        self._student_blocks = _lite0_blocks(model)
        for k, block in enumerate(_lite0_blocks(self.teacher)):
            def keep(_module, args, out, k=k):
                self._teacher_blocks[k] = (args[0], out)
            block.register_forward_hook(keep)

    def block_distance(self) -> torch.Tensor:
        """Mean over backbone blocks of the distance of the student's block, fed what the teacher's block was fed
        at the last teacher forward, to the teacher block's output: each block learns its part on its own,
        without the errors of the blocks before it."""
        terms = [feature_distance(self._student_blocks[k](given), wanted)
                 for k, (given, wanted) in sorted(self._teacher_blocks.items())]
        return sum(terms) / len(terms)

    def extra_state(self) -> dict:
        state = {"teacher": str(self.teacher_path)}
        if self.adapter is not None:
            state["adapter"] = self.adapter.state_dict()
        return state

    def load_extra_state(self, ckpt: dict) -> None:
        if self.adapter is not None and "adapter" in ckpt:
            self.adapter.load_state_dict(ckpt["adapter"])

    # -- data and loss ------------------------------------------------------------------------------------------
    def load_batch(self, plan, epoch: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The labelled batch, then ``unlabelled_per_batch`` unlabelled crops (target NaN). With whole-frame
        teacher targets the targets are two columns: the label, and the teacher's score of the crop's frame."""
        x, y = super().load_batch(plan, epoch, batch)
        frame_target = bool(self.frame_targets)
        if frame_target:
            train = self.clips["train"]
            teacher = [self.frame_targets[train[plan[pos][0]].frames.key][plan[pos][1]]
                       for pos in self.batch_positions(batch)]
        k = self.cfg.distill.unlabelled_per_batch if self.unlabelled else 0
        patches = []
        if k:
            rng = np.random.default_rng([self.cfg.seed, epoch, 3, batch, self.dist.rank])
            for _ in range(k):
                frames = self.unlabelled[int(rng.integers(len(self.unlabelled)))]
                fi = int(rng.integers(len(frames)))
                patches.extend(self.sample_crops(frames.load(fi), None, rng))
                if frame_target:
                    teacher.append(self.frame_targets[frames.key][fi])
            x = torch.cat([x, normalise_crops(patches)])
            y = torch.cat([y, torch.full((k,), float("nan"))])
        if frame_target:
            y = torch.stack([y, torch.tensor(teacher, dtype=torch.float32)], dim=1)
        return x, y

    def step_loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
        dcfg = self.cfg.distill
        y, frame_target = (y[:, 0], y[:, 1]) if y.ndim == 2 else (y, None)
        labelled = ~torch.isnan(y)
        pred, fmap = model(x, features=True)
        pred = self.sample_scores(pred)
        parts = self.ground_truth_loss(pred[labelled], y[labelled])
        t_map = None
        if frame_target is None or self._adapter_run is not None or dcfg.block_weight > 0:
            with torch.no_grad():  # the teacher reads the crop (without the student's context strip)
                t_pred, t_map = self.teacher(x[:, :, :x.shape[3]], features=True)
        total = parts.total
        target = self.sample_scores(t_pred) if frame_target is None else frame_target
        out_term = output_distance(pred, target, dcfg.output_loss)
        if dcfg.output_weight > 0:
            total = total + dcfg.output_weight * out_term
        feat_term = torch.zeros(())
        if self._adapter_run is not None:
            feat_term = feature_distance(self._adapter_run(fmap), t_map)
            total = total + dcfg.feature_weight * feat_term
        block_term = torch.zeros(())
        if dcfg.block_weight > 0:
            block_term = self.block_distance()
            total = total + dcfg.block_weight * block_term
        parts.total = total
        self.extra_log = {"distill_output": float(out_term.detach()), "distill_feature": float(feat_term.detach()),
                          "distill_blocks": float(block_term.detach())}
        return parts
