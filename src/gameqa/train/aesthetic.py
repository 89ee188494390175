"""Training and evaluation of the mean-and-spread models (``gameqa.models.aesthetic``).

The backbone is frozen by default (as in MLSP): each image's pooled multi-level features are computed once and
cached (``$GAMEQA_CACHE/features/<set>-<backbone>-<max_side>.npz``), then only the heads train -- seconds per
split, so the repeated random 80/20 protocol over 10 seeds runs in minutes. ``train.finetune = true`` trains
backbone and heads end to end on the images instead (slow without a GPU).

Config (TOML; see ``configs/aesthetic/*.toml``)::

    name = "clive-quality-spread"     # the model's name (a quality model here: CLIVE rates technical quality)
    purpose = "quality"               # "quality" or "aesthetic"; an aesthetic model needs real aesthetic ratings
    [data]   format, path, images, scale, raters, threshold, train_panel, simulated = {...}
    [features] backbone, max_side, pooling
    [model]  attention, attention_design, hidden, reduction, dropout
    [loss]   mean, std, std_weight, rank ("ci" | "ci-fidelity" | "plain" | "none"), rank_weight, overlap_weight,
             margin_scale, emd_weight, confidence
    [train]  epochs, batch_size, lr, weight_decay, seeds, test_fraction, threads, finetune, finetune_lr

Overrides ``section.key=value`` (values parsed as TOML) are applied after the file.
"""
from __future__ import annotations

import json
import math
import os
import time
import tomllib
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gameqa.data.ratings import AVA_SCALE, RatingSet, read_ratings, simulate_panel, smaller_panel
from gameqa.errors import ConfigError, read_config_text
from gameqa.paths import cache_dir

Log = Callable[[str], None]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulatedConfig(_Section):
    """A generated image set rated by a simulated AVA-like panel (for proving the aesthetic path)."""

    count: int = Field(600, ge=8)
    size: int = Field(256, ge=32)
    seed: int = 0
    raters_mean: int = Field(210, ge=2)   # AVA: about 210 votes per image (78 to 549)
    raters_min: int = Field(78, ge=2)
    raters_max: int = Field(549, ge=2)


class DataSection(_Section):
    format: Literal["clive", "ava", "mos", "raters", "votes", "simulated"] = "clive"
    path: str = ""                       # the ratings file (or the CLIVE release folder; the output folder if simulated)
    images: str = ""                     # image folder the ids are relative to ("" = the reader's default)
    scale: Optional[tuple[float, float]] = None
    raters: Optional[int] = None         # n where the source has no per-image count
    train_panel: int = Field(0, ge=0)    # > 1: training labels re-drawn as from this many raters per image (a
                                         # small study; test labels keep the full panel); 0 = the set's own labels
    threshold: Optional[float] = None    # binary-accuracy threshold ("" = the scale's midpoint)
    simulated: SimulatedConfig = SimulatedConfig()


class FeatureSection(_Section):
    backbone: Literal["efficientnet-lite0", "tiny"] = "efficientnet-lite0"
    max_side: int = Field(512, ge=32)
    pooling: Literal["avg", "avgstd"] = "avg"
    cache: str = ""                      # "" = $GAMEQA_CACHE/features


class ModelSection(_Section):
    attention: bool = True
    attention_design: Literal["stage-masks", "state-masks"] = "stage-masks"
    hidden: int = Field(128, ge=4)
    reduction: int = Field(32, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class LossSection(_Section):
    mean: Literal["l1", "l2", "smooth_l1"] = "l2"
    std: Literal["l1", "l2", "smooth_l1"] = "l1"
    std_weight: float = Field(1.0, ge=0.0)
    rank: Literal["ci", "ci-fidelity", "plain", "none"] = "ci"
    rank_weight: float = Field(1.0, ge=0.0)
    overlap_weight: float = Field(2.0, gt=0.0)
    margin_scale: float = Field(1.0, ge=0.0)
    emd_weight: float = Field(0.0, ge=0.0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)


class TrainSection(_Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-3, ge=0.0)
    seeds: int = Field(10, ge=1)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    threads: int = Field(1, ge=1)
    finetune: bool = False
    finetune_lr: float = Field(1e-4, gt=0.0)
    finetune_epochs: int = Field(8, ge=1)
    finetune_batch: int = Field(8, ge=2)


class AestheticConfig(_Section):
    name: str = "mean-spread"
    purpose: Literal["quality", "aesthetic"] = "quality"
    description: str = ""
    version: str = "1"
    data: DataSection = DataSection()
    features: FeatureSection = FeatureSection()
    model: ModelSection = ModelSection()
    loss: LossSection = LossSection()
    train: TrainSection = TrainSection()
    source: str = ""                     # the config file (set by load_config)


def _set_key(data: dict, dotted: str, value, where: str) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(where, f"override {dotted!r}: {key!r} is not a table")
    node[keys[-1]] = value


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> AestheticConfig:
    """Read a TOML config and apply ``section.key=value`` overrides; bad keys or values are a ConfigError. A
    ``configs/...`` path that is no file here is the bundled config (``gameqa.paths.config_file``)."""
    from gameqa.paths import config_file

    path = config_file(path)
    text = read_config_text(path, "config")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML ({exc})") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(path, f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        _set_key(data, key.strip(), value, str(path))
    data["source"] = str(path)
    try:
        cfg = AestheticConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(path, f"{where}: {first['msg']}") from None
    if cfg.data.train_panel == 1:
        raise ConfigError(path, "data.train_panel: a panel needs at least 2 raters (0 = the set's own labels)")
    if cfg.purpose == "aesthetic" and cfg.data.format == "simulated":
        cfg = cfg.model_copy(update={"description": cfg.description or "simulated panel: proof of the training path"})
    return cfg


def _resolve(text: str, base: Path) -> Path:
    path = Path(os.path.expandvars(text)).expanduser()
    return path if path.is_absolute() else (base / path)


# --- data --------------------------------------------------------------------------------------------------

def _simulated_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random scene in muted colours: a smooth colour field, shapes and fine texture (so blur has detail to remove)."""
    from PIL import Image, ImageDraw

    def muted(count: int) -> np.ndarray:  # natural-looking colours: random hues at half saturation
        colours = rng.uniform(30, 225, (count, 3))
        return colours.mean(axis=1, keepdims=True) + 0.45 * (colours - colours.mean(axis=1, keepdims=True))

    field = muted(16).reshape(4, 4, 3).astype(np.uint8)
    base = Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
        w, h = rng.uniform(0.08, 0.5, 2) * size
        colour = tuple(int(c) for c in muted(1)[0])
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=colour)
    image = np.asarray(base).astype(np.float64)
    stripes = np.sin(np.arange(size)[:, None] * rng.uniform(0.5, 1.5) + np.arange(size)[None, :] * rng.uniform(0.5, 1.5))
    return image + 18.0 * stripes[:, :, None]


SIMULATED_SETTINGS = "settings.json"   # the SimulatedConfig a simulated set was made with


def make_simulated_set(folder: str | os.PathLike, sim: SimulatedConfig, log: Log = print) -> Path:
    """Write ``count`` generated images and an AVA.txt-style file of simulated panel votes into ``folder``.

    Each image has two hidden properties: its quality ``q`` (blur and noise; the true mean is ``2.5 + 5 q`` on
    1-10) and how polarising it is ``p`` (a strong colour push; the true spread is ``0.9 + 1.4 p``). A finite
    panel of ``raters`` (AVA-like counts) then votes (``gameqa.data.ratings.simulate_panel``). ``truth.csv`` keeps
    the true values. Returns the AVA file's path.
    """
    from PIL import Image, ImageFilter

    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sim.seed)
    q = rng.uniform(0.0, 1.0, sim.count)
    p = rng.uniform(0.0, 1.0, sim.count)
    true_mean = 2.5 + 5.0 * q
    true_spread = 0.9 + 1.4 * p
    for i in range(sim.count):
        scene = _simulated_scene(rng, sim.size)
        grey = scene.mean(axis=2, keepdims=True)
        push = np.array([1.0, -0.6, 0.9])   # towards a vivid magenta cast
        scene = grey + (1.0 + 1.8 * p[i]) * (scene - grey) + 70.0 * p[i] * push
        img = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
        img = img.filter(ImageFilter.GaussianBlur(float(3.0 * (1.0 - q[i]))))
        noisy = np.asarray(img).astype(np.float64) + rng.normal(0, 25.0 * (1.0 - q[i]) ** 2, (sim.size, sim.size, 1))
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(images / f"{i:05d}.jpg", quality=95)
    raters = np.clip(np.round(rng.lognormal(math.log(sim.raters_mean), 0.35, sim.count)), sim.raters_min,
                     sim.raters_max).astype(int)
    counts = simulate_panel(true_mean, true_spread, raters, rng, AVA_SCALE)
    ava = folder / "AVA.txt"
    with ava.open("w", encoding="utf-8") as handle:   # AVA.txt layout: index, id, 10 counts, tag, tag, challenge
        for i in range(sim.count):
            handle.write(f"{i + 1} {i:05d} " + " ".join(str(int(c)) for c in counts[i]) + " 0 0 0\n")
    with (folder / "truth.csv").open("w", encoding="utf-8") as handle:
        handle.write("image,true_mean,true_spread\n")
        for i in range(sim.count):
            handle.write(f"{i:05d}.jpg,{true_mean[i]:.6f},{true_spread[i]:.6f}\n")
    (folder / SIMULATED_SETTINGS).write_text(json.dumps(sim.model_dump(), sort_keys=True), encoding="utf-8")
    log(f"simulated {sim.count} images rated by {raters.mean():.0f} raters on average -> {folder}")
    return ava


def simulated_set_is_current(folder: str | os.PathLike, sim: SimulatedConfig) -> bool:
    """True when ``folder`` holds a simulated set made with exactly these settings (else it is made again)."""
    folder = Path(folder)
    try:
        made_with = json.loads((folder / SIMULATED_SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / "AVA.txt").exists() and made_with == sim.model_dump()


def load_ratings(cfg: AestheticConfig, log: Log = print) -> RatingSet:
    """The config's rating set, with its image folder (the simulated set is generated on first use)."""
    base = Path(cfg.source).parent if cfg.source else Path.cwd()
    data = cfg.data
    if not data.path:
        raise ConfigError(cfg.source or None, "data.path is empty")
    path = _resolve(data.path, base)
    if data.format == "simulated":
        ava = path / "AVA.txt"
        if not simulated_set_is_current(path, data.simulated):
            make_simulated_set(path, data.simulated, log)
        ratings = read_ratings("ava", ava, root=path / "images")
        sim = data.simulated   # the images depend on these three (the panel does not): the feature cache's key
        ratings = RatingSet(f"simulated-{sim.seed}-{sim.count}x{sim.size}px", ratings.ids, ratings.mean, ratings.std,
                            ratings.n, ratings.scale, ratings.histogram, ratings.bins, ratings.root)
    else:
        ratings = read_ratings(data.format, path, scale=data.scale, raters=data.raters,
                               root=_resolve(data.images, base) if data.images else None)
    if data.images:
        ratings = RatingSet(ratings.name, ratings.ids, ratings.mean, ratings.std, ratings.n, ratings.scale,
                            ratings.histogram, ratings.bins, _resolve(data.images, base), ratings.info)
    if ratings.root is None:
        raise ConfigError(cfg.source or None, "data.images: where are the images?")
    return ratings


def threshold_of(cfg: AestheticConfig, ratings: RatingSet) -> float:
    """The binary-accuracy threshold: the config's, else the middle of the scale (AVA: 5.5 -> use 5 in configs)."""
    return cfg.data.threshold if cfg.data.threshold is not None else sum(ratings.scale) / 2.0


def training_labels(cfg: AestheticConfig, train_set: RatingSet, seed: int) -> RatingSet:
    """The labels a model learns from: the set's own, or with ``data.train_panel = k`` those of a k-rater panel
    (``smaller_panel``, drawn with seed ``2000 + seed``); what it is judged against never changes."""
    k = cfg.data.train_panel
    return train_set if k == 0 else smaller_panel(train_set, k, np.random.default_rng(2000 + seed))


# --- feature cache -----------------------------------------------------------------------------------------

def feature_cache_path(cfg: AestheticConfig, ratings: RatingSet) -> Path:
    root = Path(cfg.features.cache) if cfg.features.cache else cache_dir() / "features"
    return root / f"{ratings.name}-{cfg.features.backbone}-{cfg.features.max_side}.npz"


def cached_features(cfg: AestheticConfig, ratings: RatingSet, log: Log = print) -> tuple[np.ndarray, list[int]]:
    """(N x D features in ``ratings`` order, the backbone's stage widths), computing what the cache lacks.

    The cache keeps global average *and* std pooling of every stage; ``features.pooling`` picks from it.
    """
    import torch

    from gameqa.models.aesthetic import LMLSP, build_extractor
    from gameqa.models.aesthetic_onnx import prepare_image

    path = feature_cache_path(cfg, ratings)
    known: dict[str, np.ndarray] = {}
    channels: list[int] | None = None
    if path.exists():
        with np.load(path) as cache:
            channels = [int(c) for c in cache["channels"]]
            known = dict(zip((str(i) for i in cache["ids"]), cache["features"]))
    todo = [i for i in ratings.ids if i not in known]
    if todo:
        torch.set_num_threads(cfg.train.threads)
        backbone, _ = build_extractor(cfg.features.backbone, "avg", pretrained=True)
        pooling = LMLSP(backbone.level_channels, "avgstd")
        channels = list(backbone.level_channels)
        start = time.perf_counter()
        log(f"caching features of {len(todo)} images ({cfg.features.backbone}, longer side <= {cfg.features.max_side})")
        for k, image_id in enumerate(todo, start=1):
            x = prepare_image(ratings.root / image_id, cfg.features.max_side)
            with torch.no_grad():
                known[image_id] = pooling(backbone(torch.from_numpy(x))).squeeze(0).numpy().astype(np.float32)
            if k % 100 == 0 or k == len(todo):
                log(f"  {k}/{len(todo)} images, {(time.perf_counter() - start) / k:.3f} s per image")
                path.parent.mkdir(parents=True, exist_ok=True)
                ids = sorted(known)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, ids=np.array(ids), features=np.stack([known[i] for i in ids]), channels=np.array(channels))
                os.replace(tmp, path)
    features = np.stack([known[i] for i in ratings.ids]).astype(np.float32)
    return select_pooling(features, channels, cfg.features.pooling), channels


def select_pooling(features: np.ndarray, channels: list[int], pooling: str) -> np.ndarray:
    """From cached [avg_l, std_l] per stage, keep the averages (``avg``) or both (``avgstd``)."""
    if pooling == "avgstd":
        return features
    keep, offset = [], 0
    for c in channels:
        keep.extend(range(offset, offset + c))
        offset += 2 * c
    return features[:, keep]


def level_dims(channels: list[int], pooling: str) -> list[int]:
    return [2 * c for c in channels] if pooling == "avgstd" else list(channels)


# --- head training -----------------------------------------------------------------------------------------

def build_heads(cfg: AestheticConfig, channels: list[int], ratings: RatingSet):
    from gameqa.models.aesthetic import MeanSpreadHeads

    low, high = ratings.scale
    span = high - low
    m = cfg.model
    return MeanSpreadHeads(level_dims(channels, cfg.features.pooling), ratings.scale, attention=m.attention,
                           hidden=m.hidden, reduction=m.reduction, dropout=m.dropout, attention_design=m.attention_design,
                           init_mean=float(np.mean((ratings.mean - low) / span)), init_std=float(np.mean(ratings.std / span)))


def loss_terms(cfg: AestheticConfig, pred_mean, pred_std, mean, std, n, probs, bins, span: float):
    """The training loss in normalised units (mean on 0..1, std as a fraction of the scale's span)."""
    from gameqa.losses.ci_rank import ci_fidelity_loss, ci_rank_loss, plain_rank_loss
    from gameqa.losses.distribution import emd_loss, gaussian_histogram
    from gameqa.losses.regression import regression_loss

    lc = cfg.loss
    total = regression_loss(pred_mean, mean, lc.mean) + lc.std_weight * regression_loss(pred_std, std, lc.std)
    if lc.rank_weight > 0 and lc.rank == "ci":
        total = total + lc.rank_weight * ci_rank_loss(pred_mean, mean, std, n, confidence=lc.confidence,
                                                      overlap_weight=lc.overlap_weight, margin_scale=lc.margin_scale)[0]
    elif lc.rank_weight > 0 and lc.rank == "ci-fidelity":
        total = total + lc.rank_weight * ci_fidelity_loss(pred_mean, mean, std, n)[0]
    elif lc.rank_weight > 0 and lc.rank == "plain":
        total = total + lc.rank_weight * plain_rank_loss(pred_mean, mean, lc.margin_scale)[0]
    if lc.emd_weight > 0 and probs is not None:
        normalised_bins = [(b - bins[0]) / span for b in bins]
        total = total + lc.emd_weight * emd_loss(gaussian_histogram(pred_mean, pred_std, normalised_bins), probs)
    return total


def train_heads(cfg: AestheticConfig, features: np.ndarray, channels: list[int], ratings: RatingSet, seed: int):
    """Train mean and std heads on cached features; returns the heads in eval mode."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(cfg.train.threads)
    rng = np.random.default_rng(seed)
    heads = build_heads(cfg, channels, ratings)
    x = torch.from_numpy(features)
    heads.fit_feature_norm(x)
    low, high = ratings.scale
    span = high - low
    mean = torch.from_numpy((ratings.mean - low) / span).float()
    std = torch.from_numpy(ratings.std / span).float()
    n = ratings.n
    probs = ratings.probabilities()
    probs_t = None if probs is None else torch.from_numpy(probs).float()
    tc = cfg.train
    optimiser = torch.optim.AdamW(heads.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, foreach=True)
    steps_per_epoch = max(1, math.ceil(len(ratings) / tc.batch_size))
    total_steps = max(4, tc.epochs * steps_per_epoch)
    # warm-up over 10% of the steps, but at least 2 (OneCycleLR divides by the warm-up's last step index)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=tc.lr, total_steps=total_steps,
                                                   pct_start=min(0.5, max(0.1, 2.0 / total_steps)))
    heads.train()
    for _ in range(tc.epochs):
        order = rng.permutation(len(ratings))
        for start in range(0, len(order), tc.batch_size):
            batch = order[start:start + tc.batch_size]
            if batch.size < 2:
                continue
            b = torch.from_numpy(batch)
            pm, ps = heads.normalised(x[b])
            loss = loss_terms(cfg, pm, ps, mean[b], std[b], n[batch], None if probs_t is None else probs_t[b],
                              ratings.bins, span)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return heads.eval()


def predict_heads(heads, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        m, s = heads(torch.from_numpy(features))
    return m.numpy().astype(np.float64), s.numpy().astype(np.float64)


def split(ratings: RatingSet, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A random train/test split; images of one content (``info['content']``) stay on one side."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(ratings.info.get("content", ratings.ids))
    unique = rng.permutation(np.unique(groups))
    test_groups = set(unique[: max(1, round(test_fraction * unique.size))])
    test = np.array([g in test_groups for g in groups])
    return np.nonzero(~test)[0], np.nonzero(test)[0]


def validation_split(train_idx: np.ndarray, seed: int, fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation part out of one seed's training indices: (fit, validation), both sorted.

    Drawn with its own generator (seed ``1000 + seed``), so choosing a design on the validation parts never looks at
    the seed's test images.
    """
    rng = np.random.default_rng(1000 + seed)
    order = rng.permutation(len(train_idx))
    count = max(1, round(fraction * len(train_idx)))
    return np.sort(train_idx[order[count:]]), np.sort(train_idx[order[:count]])


def evaluate_split(cfg: AestheticConfig, features, channels, ratings: RatingSet, seed: int,
                   truth: Optional[dict[str, tuple[float, float]]] = None, validation: bool = False) -> dict[str, float]:
    """Train on one seed's 80% and report agreement on its 20% (and with ``truth``, a simulated panel's true
    mean and spread, how well predictions and the panel's own estimates follow them).

    ``validation=True``: train on 80% of that 80% and report on the other 20% of it (``validation_split``); the
    seed's test images are not used at all -- the protocol for choosing designs and settings.
    """
    from gameqa.evaluate.agreement import mean_spread_report
    from gameqa.evaluate.metrics import srocc

    train_idx, test_idx = split(ratings, seed, cfg.train.test_fraction)
    if validation:
        train_idx, test_idx = validation_split(train_idx, seed, cfg.train.test_fraction)
    train_set, test_set = training_labels(cfg, ratings.subset(train_idx), seed), ratings.subset(test_idx)
    heads = train_heads(cfg, features[train_idx], channels, train_set, seed)
    pm, ps = predict_heads(heads, features[test_idx])
    report = mean_spread_report(pm, ps, test_set.mean, test_set.std, test_set.n, train_mean=train_set.mean,
                                train_std=train_set.std, threshold=threshold_of(cfg, ratings),
                                confidence=cfg.loss.confidence)
    if truth is not None:
        true_mean = np.array([truth[i][0] for i in test_set.ids])
        true_spread = np.array([truth[i][1] for i in test_set.ids])
        report.update({"mean_srocc_vs_truth": srocc(pm, true_mean), "std_srocc_vs_truth": srocc(ps, true_spread),
                       "panel_std_srocc_vs_truth": srocc(test_set.std, true_spread)})
    report["seed"] = float(seed)
    return report


def run_protocol(cfg: AestheticConfig, seeds: Optional[int] = None, log: Log = print,
                 validation: bool = False) -> list[dict[str, float]]:
    """Repeated random splits (``train.seeds``); one report per seed. On a simulated set the reports add the
    agreement with the panel's true mean and spread. ``validation=True`` scores each seed's validation part
    (carved from its training part) instead of its test part."""
    ratings = load_ratings(cfg, log)
    truth = read_truth(cfg)
    if cfg.train.finetune:
        if validation:
            raise ConfigError(cfg.source or None, "validation runs are for heads on cached features (finetune = false)")
        return run_finetune_protocol(cfg, ratings, seeds, log)
    features, channels = cached_features(cfg, ratings, log)
    reports = []
    for seed in range(seeds if seeds is not None else cfg.train.seeds):
        start = time.perf_counter()
        report = evaluate_split(cfg, features, channels, ratings, seed, truth, validation)
        report["seconds"] = time.perf_counter() - start
        log(f"seed {seed}{' (validation)' if validation else ''}: mean SROCC {report['mean_srocc']:.3f} PLCC {report['mean_plcc']:.3f} | "
            f"std SROCC {report['std_srocc']:.3f} PLCC {report['std_plcc']:.3f} | ordered pairs "
            f"{report['ordered_pairs']:.3f} ({report['seconds']:.1f} s)")
        reports.append(report)
    return reports


def read_truth(cfg: AestheticConfig) -> Optional[dict[str, tuple[float, float]]]:
    """The simulated set's true per-image mean and spread (None for real data)."""
    if cfg.data.format != "simulated":
        return None
    base = Path(cfg.source).parent if cfg.source else Path.cwd()
    path = _resolve(cfg.data.path, base) / "truth.csv"
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return {r.split(",")[0]: (float(r.split(",")[1]), float(r.split(",")[2])) for r in rows if r}


SUMMARY_KEYS = ("mean_srocc", "mean_plcc", "mean_rmse", "std_srocc", "std_plcc", "std_rmse",
                "std_rmse_average_baseline", "std_srocc_mean_curve_baseline", "std_plcc_mean_curve_baseline",
                "std_rmse_mean_curve_baseline", "binary_accuracy", "ordered_pairs", "sure_pairs",
                "mean_srocc_vs_truth", "std_srocc_vs_truth", "panel_std_srocc_vs_truth")


def summarise(reports: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per measure: (mean, sample sd) over the seeds."""
    out = {}
    for key in SUMMARY_KEYS:
        values = np.array([r[key] for r in reports if key in r], dtype=np.float64)
        if values.size:
            out[key] = (float(np.mean(values)), float(np.std(values, ddof=1)) if values.size > 1 else 0.0)
    return out


# --- fine-tuning (optional) --------------------------------------------------------------------------------

def _load_images(cfg: AestheticConfig, ratings: RatingSet) -> list[np.ndarray]:
    from gameqa.models.aesthetic_onnx import prepare_image

    return [prepare_image(ratings.root / i, cfg.features.max_side) for i in ratings.ids]


def finetune(cfg: AestheticConfig, ratings: RatingSet, images: list[np.ndarray], seed: int, log: Log = print):
    """Backbone and heads trained end to end (heads first warmed up on frozen features); returns the net."""
    import torch

    from gameqa.models.aesthetic import LMLSP, MeanSpreadNet, MultiLevelBackbone
    from gameqa.train.trainer import channels_last

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone = MultiLevelBackbone(cfg.features.backbone, pretrained=True)
    pooling = LMLSP(backbone.level_channels, cfg.features.pooling)
    backbone.eval()
    with torch.no_grad():
        feats = np.stack([pooling(backbone(torch.from_numpy(x))).squeeze(0).numpy() for x in images])
    heads = train_heads(cfg, feats.astype(np.float32), backbone.level_channels, ratings, seed)
    net = channels_last(MeanSpreadNet(backbone, pooling, heads).to(device))  # the trainers' faster layout
    low, high = ratings.scale
    span = high - low
    mean = torch.from_numpy((ratings.mean - low) / span).float().to(device)
    std = torch.from_numpy(ratings.std / span).float().to(device)
    tc = cfg.train
    optimiser = torch.optim.AdamW([{"params": net.backbone.parameters(), "lr": tc.finetune_lr},
                                   {"params": net.heads.parameters(), "lr": tc.finetune_lr * 3}],
                                  weight_decay=tc.weight_decay)
    for epoch in range(tc.finetune_epochs):
        net.train()
        net.freeze_backbone(False)
        for m in net.backbone.modules():   # BatchNorm stays on ImageNet statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        order = rng.permutation(len(ratings))
        for start in range(0, len(order), tc.finetune_batch):
            batch = order[start:start + tc.finetune_batch]
            if batch.size < 2:
                continue
            pm, ps = [], []
            for i in batch:   # images may differ in size: one forward each, one loss for the batch
                x = channels_last(torch.from_numpy(images[i]).to(device))
                if rng.random() < 0.5:
                    x = x.flip(3)
                a, b = net.heads.normalised(net.features(x))
                pm.append(a)
                ps.append(b)
            b_t = torch.from_numpy(batch).to(device)
            loss = loss_terms(cfg, torch.cat(pm), torch.cat(ps), mean[b_t], std[b_t], ratings.n[batch], None,
                              ratings.bins, span)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        log(f"  fine-tune epoch {epoch + 1}/{tc.finetune_epochs}: last batch loss {float(loss.detach()):.4f}")
    return net.cpu().eval()


def predict_images(net, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    import torch

    device = next(net.parameters()).device
    out_m, out_s = [], []
    with torch.no_grad():
        for x in images:
            m, s = net(torch.from_numpy(x).to(device))
            out_m.append(float(m))
            out_s.append(float(s))
    return np.array(out_m), np.array(out_s)


def run_finetune_protocol(cfg, ratings, seeds, log):
    from gameqa.evaluate.agreement import mean_spread_report

    images = _load_images(cfg, ratings)
    reports = []
    for seed in range(seeds if seeds is not None else cfg.train.seeds):
        start = time.perf_counter()
        train_idx, test_idx = split(ratings, seed, cfg.train.test_fraction)
        train_set, test_set = training_labels(cfg, ratings.subset(train_idx), seed), ratings.subset(test_idx)
        net = finetune(cfg, train_set, [images[i] for i in train_idx], seed, log)
        pm, ps = predict_images(net, [images[i] for i in test_idx])
        report = mean_spread_report(pm, ps, test_set.mean, test_set.std, test_set.n, train_mean=train_set.mean,
                                    train_std=train_set.std, threshold=threshold_of(cfg, ratings),
                                    confidence=cfg.loss.confidence)
        report["seed"] = float(seed)
        report["seconds"] = time.perf_counter() - start
        log(f"seed {seed} (fine-tuned): mean SROCC {report['mean_srocc']:.3f} | std SROCC {report['std_srocc']:.3f}")
        reports.append(report)
    return reports


# --- final model and export --------------------------------------------------------------------------------

def train_final(cfg: AestheticConfig, out_dir: str | os.PathLike, log: Log = print, seed: int = 0,
                verify: int = 8, int8: bool = False, calibration: int = 48) -> Path:
    """Train on every image, join backbone + LMLSP + heads, export ``model.onnx`` + ``model.json`` to ``out_dir``.

    The exported model is checked against the torch features on ``verify`` images (largest difference logged).
    ``int8``: also ``out_dir/int8``, static mixed-precision int8 (``quantize_model_folder``) calibrated on
    ``calibration`` images spread over the set, checked against the fp32 folder on as many other images.
    """
    import torch

    from gameqa.models.aesthetic import LMLSP, MeanSpreadNet, MultiLevelBackbone, export_onnx
    from gameqa.models.aesthetic_onnx import SpreadScorer

    if cfg.purpose == "aesthetic" and cfg.data.format == "simulated":
        raise ConfigError(cfg.source or None, "refusing to export an aesthetic model trained on simulated ratings")
    if cfg.data.train_panel:
        raise ConfigError(cfg.source or None, "data.train_panel re-draws the labels for evaluation runs; "
                                              "export from the set's own labels (data.train_panel = 0)")
    ratings = load_ratings(cfg, log)
    if cfg.train.finetune:
        net = finetune(cfg, ratings, _load_images(cfg, ratings), seed, log)
    else:
        features, channels = cached_features(cfg, ratings, log)
        heads = train_heads(cfg, features, channels, ratings, seed)
        backbone = MultiLevelBackbone(cfg.features.backbone, pretrained=True)
        net = MeanSpreadNet(backbone, LMLSP(backbone.level_channels, cfg.features.pooling), heads)
    net.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out / "model.onnx")
    card = {
        "kind": "mean-spread", "name": cfg.name, "version": cfg.version, "purpose": cfg.purpose,
        "description": cfg.description, "scale": list(ratings.scale), "raters": int(np.median(ratings.n)),
        "max_side": cfg.features.max_side, "backbone": cfg.features.backbone, "pooling": cfg.features.pooling,
        "trained_on": ratings.name, "images": len(ratings), "outputs": ["mean", "std"],
        "preprocessing": "RGB; longer side resized to max_side if larger (bicubic); /255; ImageNet mean/std",
    }
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    scorer = SpreadScorer(out)
    worst = 0.0
    from gameqa.models.aesthetic_onnx import prepare_image

    for i in range(min(verify, len(ratings))):
        x = prepare_image(ratings.image_path(i), cfg.features.max_side)
        with torch.no_grad():
            tm, ts = net(torch.from_numpy(x))
        om, os_ = scorer.predict(ratings.image_path(i))
        worst = max(worst, abs(float(tm) - om), abs(float(ts) - os_))
    log(f"exported {out / 'model.onnx'} ({(out / 'model.onnx').stat().st_size / 1e6:.1f} MB); "
        f"ONNX vs torch largest difference {worst:.2e}")
    if int8:
        from gameqa.models.aesthetic_onnx import quantize_model_folder

        order = np.random.default_rng(seed).permutation(len(ratings))
        count = max(1, min(int(calibration), len(ratings) // 2))
        chosen, held = order[:count], order[count:2 * count]
        folder = quantize_model_folder(out, out / "int8", [ratings.image_path(int(i)) for i in chosen])
        quantized = SpreadScorer(folder)
        diffs = np.array([np.subtract(quantized.predict(ratings.image_path(int(i))),
                                      scorer.predict(ratings.image_path(int(i)))) for i in held])
        log(f"int8: {folder / 'model.onnx'} ({(folder / 'model.onnx').stat().st_size / 1e6:.1f} MB); vs fp32 on "
            f"{len(held)} other images: mean max {np.abs(diffs[:, 0]).max():.3g} (average {np.abs(diffs[:, 0]).mean():.3g}), "
            f"std max {np.abs(diffs[:, 1]).max():.3g}")
    return out
