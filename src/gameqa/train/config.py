"""Training configs: typed (pydantic), read from TOML or YAML, with inheritance and command-line overrides.

A config file may name a parent with ``inherit = "base.toml"`` (a path relative to the file); its tables are
merged over the parent's, key by key. Overrides like ``train.epochs=3`` or ``model.backbone=tiny`` are applied
last; their values are parsed as TOML (``3``, ``1e-3``, ``true``, ``"text"``, ``[1, 2]``) and read as text when
that fails. Unknown keys and wrong types are a ConfigError naming the file and the key, before any work starts.

Relative paths: ``data.manifest`` is relative to ``data.root`` (the corpus folder, by default
``$GAMEQA_CACHE/corpus``); ``out_dir`` is relative to the current directory (by default
``$GAMEQA_CACHE/runs/<name>``). ``$VARS`` and ``~`` are expanded in paths.
"""
from __future__ import annotations

import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from gameqa.errors import ConfigError, read_config_text
from gameqa.paths import cache_dir, corpus_dir

# Keys that may differ when a run is resumed (training may be extended, display may change).
RESUMABLE_KEYS = {"train.epochs", "train.max_steps", "train.progress", "train.threads"}


def _sample_policy(value: str) -> str:
    """A frame policy (``uniform:8``) in its normal spelling; a ValueError, so that pydantic's error names the
    config file and the key, when it is none."""
    from gameqa.media import SamplePolicy

    try:
        return str(SamplePolicy.parse(value))
    except ConfigError as exc:
        raise ValueError(exc.problem) from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the clips are and how frames are taken from them."""

    manifest: str = "manifests/corpus.csv"
    root: str = ""                      # corpus folder; "" = $GAMEQA_CACHE/corpus
    frames_cache: str = ""              # "" = $GAMEQA_CACHE/frames
    sample: str = "uniform:8"           # frames cached per clip (gameqa.media policy)
    logo_game: str = ""                 # leave-one-game-out: this game is the test split
    val_frames: int = Field(4, ge=1)    # frames per clip used for validation (spread over the cached ones)
    val_crops: int = Field(2, ge=1)     # crops per frame for validation (grid, as the ONNX engine takes them)
    limit_clips: int = Field(0, ge=0)   # use only the first N clips of each split (smoke runs); 0 = all
    groups: list[str] = Field(default_factory=list)  # manifest groups to use ("game", "natural", "soft", "synth"); [] = all
    pristine_anchors: bool = False      # also train on each train source's lossless capture, labelled pristine_mos
    pristine_mos: float = Field(5.0, ge=1.0, le=5.0)  # label of a pristine capture (top of the scale: VMAF 100)

    @field_validator("sample")
    @classmethod
    def _policy(cls, value: str) -> str:
        return _sample_policy(value)


class ModelConfig(_Section):
    """The network."""

    backbone: str = "efficientnet-lite0"  # efficientnet-lite0 | mobilenetv2-<width>[-s2d] (e.g. 0.5) | tiny
    reference: Literal["none", "full"] = "none"
    pretrained: bool = True
    head_hidden: int = Field(128, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    freeze_bn: bool = True
    init: str = ""   # a trained checkpoint (.pt) whose weights start the network where they fit (see init_path)
    context_rows: int = Field(0, ge=0)  # > 0: the whole frame as a strip of this many rows under each crop
    detail_channels: int = Field(0, ge=0)  # > 0: a small full-resolution branch beside the backbone (eraque.detail_branch)

    def init_path(self) -> Optional[Path]:
        """The ``init`` checkpoint; ``${GAMEQA_CACHE}`` stands for the cache folder even when the variable is unset."""
        return _cache_path(self.init)

    @field_validator("backbone")
    @classmethod
    def _backbone(cls, value: str) -> str:
        from gameqa.models.backbones import check_backbone

        return check_backbone(value)

    @field_validator("context_rows")
    @classmethod
    def _context_fits_backbone(cls, value: int, info: ValidationInfo) -> int:
        """The context strip must span whole feature rows of the backbone (declared, so validated, before it)."""
        from gameqa.models.backbones import context_feature_rows

        backbone = info.data.get("backbone")
        if backbone:  # an unknown backbone is reported by its own check
            context_feature_rows(backbone, value)
        return value

    @field_validator("detail_channels")
    @classmethod
    def _detail_without_context(cls, value: int, info: ValidationInfo) -> int:
        """The detail branch reads the crop alone: no context strip under it (declared, so validated, before it)."""
        if value and info.data.get("context_rows"):
            raise ValueError("detail_channels and context_rows cannot be combined")
        return value


class InputConfig(_Section):
    """Crops at full (display) resolution: no resize, no blur; flips only."""

    crop_size: int = Field(384, ge=16)
    hflip: bool = True
    crops_per_frame: int = Field(4, ge=1)   # at inference (exported model.json)
    crop_mode: Literal["grid", "texture", "typical"] = "grid"  # where those go, also in validation (texture: most detail)
    train_crops: Literal["random", "texture", "mixed", "frame"] = "random"  # texture: near one of the 4 most
    # detailed windows; mixed: texture or random at even odds; frame: each sample is the frame as inference reads
    # it (its crops_per_frame crops by crop_mode, moved by up to 1/8 of the crop) scored by the mean of its
    # crops, so train.batch_size counts frames and a step reads crops_per_frame times the crops

    @field_validator("crop_size")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 32:
            raise ValueError("crop_size must be a multiple of 32")
        return value


class LossConfig(_Section):
    """Regression plus the hard pairwise ranking loss."""

    regression: Literal["l1", "l2", "smooth_l1", "none"] = "l1"
    regression_weight: float = Field(1.0, ge=0.0)
    rank_weight: float = Field(1.0, ge=0.0)
    rank_threshold: float = Field(0.5, gt=0.0)
    rank_margin: Union[Literal["gap"], float] = "gap"
    margin_scale: float = Field(1.0, ge=0.0)
    pair_weighting: Literal["uniform", "closeness"] = "uniform"


class TrainConfig(_Section):
    """Optimisation and bookkeeping."""

    epochs: int = Field(10, ge=1)
    max_steps: int = Field(0, ge=0)             # stop after this many optimiser steps; 0 = no limit
    batch_size: int = Field(16, ge=2)           # crops per step per process
    frames_per_clip_per_epoch: int = Field(1, ge=1)  # random frames of each train clip per epoch
    lr: float = Field(3e-4, gt=0.0)
    backbone_lr_scale: float = Field(0.3, ge=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(50, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = Field(5.0, ge=0.0)
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)  # judge and keep a moving average of the weights; 0 = off
    validate_every: int = Field(1, ge=1)        # epochs
    checkpoint_every: int = Field(100, ge=1)    # steps
    log_every: int = Field(10, ge=1)            # steps
    threads: int = Field(0, ge=0)               # torch threads per process; 0 = all cores / processes
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True


class ExportConfig(_Section):
    """What the exported model.json says."""

    pooling: str = "mean"                       # or worst:P (mean of the worst P% of frames)
    display_height: int = Field(0, ge=0)        # 0 = the largest display height of the training clips
    description: str = ""

    @field_validator("pooling")
    @classmethod
    def _pooling(cls, value: str) -> str:
        import numpy as np

        from gameqa.models.pooling import pool_scores

        try:
            pool_scores(np.ones(1), value)
        except ConfigError as exc:  # a ValueError, so the config error names the file and the key
            raise ValueError(exc.problem) from None
        return value


class DistillConfig(_Section):
    """Knowledge distillation from a trained teacher (``gameqa distill``); ``teacher = ""`` means none.

    The student's loss is the ground-truth loss (``[loss]``) plus ``output_weight`` x the distance of its
    scores to the teacher's (soft targets) plus ``feature_weight`` x the normalised squared distance between
    the teacher's last feature map and the student's, mapped through a 1x1-conv adapter. Unlabelled crops
    (more frames of ``unlabelled_clips`` train clips, sampled with ``unlabelled_sample``) feed the two
    distillation terms only; with ``unlabelled_manifest`` they come from that manifest's clips instead (e.g. other
    games' gameplay; its labels are ignored, and clips of a content or source in the val or test split are left
    out). A weight of 0 switches its term off. ``output_target = "frame"`` takes as soft target of every crop the
    teacher's score of the whole frame, read the teacher's own way (its crops per frame, size and placement),
    computed once per cached frame and kept beside the frames (``teacher-scores/`` in the frame cache), instead
    of its reading of the student's crop. The teacher may also be an exported model (a registered name such as
    the bundled ``"eraque"``, or a model folder): it then gives those whole-frame targets only, read as
    ``gameqa score`` reads frames, so ``output_target = "frame"`` and ``feature_weight = 0`` go with it.
    ``block_weight`` adds, for a student whose backbone blocks give what the teacher's give in shape (a pruned
    copy of the teacher, ``efficientnet-lite0-p<keep>``), the mean over blocks of the normalised squared distance
    between each block's output and the teacher's, the student's block fed what the teacher's was fed: every
    block is taught its own part, not only the last map.
    """

    teacher: str = ""                         # checkpoint (.pt), or an exported model (whole-frame targets only)
    output_weight: float = Field(1.0, ge=0.0)
    output_loss: Literal["l1", "l2"] = "l1"
    output_target: Literal["crop", "frame"] = "crop"  # the teacher's score of the same crop, or of the whole frame
    feature_weight: float = Field(1.0, ge=0.0)
    block_weight: float = Field(0.0, ge=0.0)  # each backbone block's output against the teacher's (pruned students)
    unlabelled_clips: int = Field(0, ge=0)    # train clips that give extra, unlabelled frames; 0 = none
    unlabelled_sample: str = "uniform:12"     # frames taken from each of them (other times than data.sample)
    unlabelled_per_batch: int = Field(4, ge=0)  # unlabelled crops added to each batch
    unlabelled_manifest: str = ""             # draw the unlabelled clips from this manifest; "" = the train split
    init_from_teacher: bool = False           # start from the teacher's weights where names and shapes match

    @field_validator("unlabelled_sample")
    @classmethod
    def _policy(cls, value: str) -> str:
        return _sample_policy(value)

    def teacher_path(self) -> Optional[Path]:
        """The teacher file; ``${GAMEQA_CACHE}`` stands for the cache folder even when the variable is unset."""
        return _cache_path(self.teacher)

    def unlabelled_manifest_path(self) -> Optional[Path]:
        """The ``unlabelled_manifest`` file (``${GAMEQA_CACHE}`` as for the teacher); None for the train split."""
        return _cache_path(self.unlabelled_manifest)


class EraqueConfig(_Section):
    """A whole training run."""

    name: str = "eraque"
    version: str = "0.1.0"
    seed: int = 0
    out_dir: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    # -- resolved paths ------------------------------------------------------------------------------------
    def corpus_root(self) -> Path:
        return Path(_expand(self.data.root)) if self.data.root else corpus_dir()

    def manifest_path(self) -> Path:
        path = Path(_expand(self.data.manifest))
        return path if path.is_absolute() else self.corpus_root() / path

    def frames_dir(self) -> Path:
        return Path(_expand(self.data.frames_cache)) if self.data.frames_cache else cache_dir() / "frames"

    def run_dir(self) -> Path:
        return Path(_expand(self.out_dir)) if self.out_dir else cache_dir() / "runs" / self.name

    def to_flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.0003, ...}``: every setting by dotted key."""
        return _flatten(self.model_dump(mode="json"))


def _expand(text: str) -> str:
    return os.path.expanduser(os.path.expandvars(text))


def _cache_path(text: str) -> Optional[Path]:
    """A file named in a config, ``${GAMEQA_CACHE}`` standing for the cache folder even when unset; "" = None."""
    return Path(_expand(text.replace("${GAMEQA_CACHE}", str(cache_dir())))) if text else None


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_tree(path: Path) -> dict:
    text = read_config_text(path, "config")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            tree = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            tree = yaml.safe_load(text) or {}
        else:
            raise ConfigError(path, "config must be .toml, .yaml or .yml")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"bad TOML: {exc}") from None
    except ConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(path, f"bad YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ConfigError(path, "config must be a table of settings")
    return tree


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_tree(path: str | Path, _seen: Optional[set] = None) -> dict:
    """The raw settings of a config file with its ``inherit`` chain merged in (child wins)."""
    path = Path(path).resolve()
    seen = set() if _seen is None else _seen
    if path in seen:
        raise ConfigError(path, "inherit loop")
    seen.add(path)
    tree = _read_tree(path)
    parent = tree.pop("inherit", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigError(path, "inherit must be a file name")
    return _merge(load_tree(path.parent / parent, seen), tree)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001); the value is TOML, else plain text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(None, f"bad override {text!r}: expected section.key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Set each ``a.b=value`` in a copy of ``tree``."""
    out = copy.deepcopy(tree)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(None, f"bad override {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")  # our validators' own words
    return f"{where}: {message} (got {json.dumps(value, default=str)})"


def build_config(tree: dict, source: str | Path | None = None) -> EraqueConfig:
    """Validate a settings tree; the first problem becomes a one-line ConfigError."""
    try:
        return EraqueConfig.model_validate(tree)
    except ValidationError as exc:
        errors = exc.errors()
        extra = "" if len(errors) == 1 else f" (and {len(errors) - 1} more)"
        raise ConfigError(source, _describe(errors[0]) + extra) from None


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> EraqueConfig:
    """Read a TOML/YAML config, follow ``inherit``, apply ``a.b=value`` overrides, validate. A ``configs/...``
    path that is no file here is the bundled config (``gameqa.paths.config_file``)."""
    from gameqa.paths import config_file

    path = config_file(path)
    tree = apply_overrides(load_tree(path), list(overrides or []))
    return build_config(tree, path)


def config_changes(old: dict[str, Any], new: dict[str, Any], allowed: set[str] = RESUMABLE_KEYS) -> list[str]:
    """Dotted keys whose values differ between two flat configs, ignoring the ``allowed`` ones."""
    keys = sorted((set(old) | set(new)) - allowed)
    defaults = EraqueConfig().to_flat()  # a key added to gameqa after the run started counts as its default
    return [f"{k}: {old.get(k, defaults.get(k))!r} -> {new.get(k)!r}" for k in keys
            if old.get(k, defaults.get(k)) != new.get(k)]
