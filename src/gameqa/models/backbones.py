"""Backbone names the ERAQUE networks accept (torch-free, so configs validate without importing torch)."""
from __future__ import annotations

from typing import Optional

FIXED = ("efficientnet-lite0", "tiny")
# e.g. mobilenetv2-0.5: a narrow student; mobilenetv2-1.0-s2d: the same network on a crop twice as wide, folded
# into 12 channels at half the size first (space to depth: every pixel kept, about the cost of the half-size
# crop; -s2d3 / -s2d4: three / four times as wide, 27 / 48 channels at a third / a quarter of the size);
# efficientnet-lite0-b8: Lite0's stem and first 8 blocks only; efficientnet-lite0-p0.125: the whole Lite0 with
# an eighth of the channels inside its blocks and of its last conv (gameqa.models.pruning)
# efficientnet-lite0-s2d3: the whole Lite0 on 3 x 3 blocks of pixels (its stem folded as MobileNetV2's is);
# efficientnet-lite0-pool3: Lite0's stem on every pixel, its activations averaged over 3 x 3 blocks, the blocks after
# it at a third of the size (detail reaches them as the stem's rectified response, not averaged away first);
# plain-16: a purpose-built small CNN (five dense 3 x 3 stride-2 convs, 16-32-64-128-256 channels, random start)
BACKBONES = FIXED + ("mobilenetv2-<width>[-s2d|-s2d3|-s2d4]", "efficientnet-lite0-b<blocks>",
                     "efficientnet-lite0-p<keep>", "efficientnet-lite0-s2d[3|4]", "efficientnet-lite0-pool<2|3|4>",
                     "plain-<width>")
LITE0_PRUNED = "efficientnet-lite0-p"
SPACE_TO_DEPTH = {"-s2d": 2, "-s2d3": 3, "-s2d4": 4}  # name suffix -> pixels folded into channels along each side
STEM_POOLS = {"-pool2": 2, "-pool3": 3, "-pool4": 4}   # name suffix -> stem activations averaged over r x r blocks
LITE0_BLOCKS = 16
# Output channels of EfficientNet-Lite0 after each of its 16 MBConv blocks.
LITE0_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
# Input pixels per output pixel after the stem (stride 2) and each of Lite0's 16 blocks.
LITE0_BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)
TINY_STRIDE = 8          # three stride-2 convolutions
PLAIN = "plain-"
PLAIN_LAYERS = 5         # plain-<w>: five stride-2 convolutions, w, 2w, 4w, 8w, 16w channels
MOBILENET_STRIDE = 32    # MobileNetV2 at any width


def plain_width(backbone: str) -> Optional[int]:
    """w of a ``plain-<w>`` name (4-64: the first conv's channels), else None."""
    text = backbone[len(PLAIN):] if backbone.startswith(PLAIN) else ""
    return int(text) if text.isdigit() and 4 <= int(text) <= 64 else None


def _mobilenet_name(backbone: str) -> Optional[tuple[float, int]]:
    """(width, space-to-depth factor) of a ``mobilenetv2-<width>[-s2d|-s2d3|-s2d4]`` name: the factor is 1 without
    a suffix; None for any other name or a width out of 0.1-1.5."""
    if not backbone.startswith("mobilenetv2-"):
        return None
    text = backbone.split("-", 1)[1]
    suffix, factor = next(((s, r) for s, r in SPACE_TO_DEPTH.items() if text.endswith(s)), ("", 1))
    try:
        width = float(text[:len(text) - len(suffix)])
    except ValueError:
        return None
    return (width, factor) if 0.1 <= width <= 1.5 else None


def mobilenet_width(backbone: str) -> Optional[float]:
    """The width multiplier of a ``mobilenetv2-<width>[-s2d|-s2d3|-s2d4]`` name (0.1-1.5), else None."""
    parsed = _mobilenet_name(backbone)
    return None if parsed is None else parsed[0]


def _lite0_variant(backbone: str, suffixes: dict[str, int]) -> Optional[int]:
    """The factor of ``efficientnet-lite0<suffix>`` for a suffix of ``suffixes``, else None."""
    return next((r for s, r in suffixes.items() if backbone == "efficientnet-lite0" + s), None)


def _lite0_folded(backbone: str) -> Optional[int]:
    """The space-to-depth factor of ``efficientnet-lite0-s2d|-s2d3|-s2d4``, else None."""
    return _lite0_variant(backbone, SPACE_TO_DEPTH)


def stem_pool(backbone: str) -> int:
    """r for ``efficientnet-lite0-pool<r>`` (r = 2, 3, 4: the stem's activations averaged over r x r blocks before
    the first block), else 1."""
    return _lite0_variant(backbone, STEM_POOLS) or 1


def space_to_depth(backbone: str) -> int:
    """2 for a ``mobilenetv2-<width>-s2d`` or ``efficientnet-lite0-s2d`` name (each 2 x 2 block of pixels becomes 4
    channels), 3 for ``-s2d3`` and 4 for ``-s2d4`` (3 x 3 and 4 x 4 blocks), else 1."""
    parsed = _mobilenet_name(backbone)
    return parsed[1] if parsed is not None else _lite0_folded(backbone) or 1


def _lite0_name(backbone: str) -> Optional[tuple[int, float]]:
    """(blocks, keep) of an EfficientNet-Lite0 name: plain (16, 1.0), ``-b<K>`` (K, 1.0), ``-p<keep>`` (16, keep);
    None for any other name or a count or fraction out of range."""
    if backbone == "efficientnet-lite0" or _lite0_folded(backbone) or _lite0_variant(backbone, STEM_POOLS):
        return LITE0_BLOCKS, 1.0
    prefix = "efficientnet-lite0-b"
    if backbone.startswith(prefix) and backbone[len(prefix):].isdigit():
        k = int(backbone[len(prefix):])
        return (k, 1.0) if 1 <= k <= LITE0_BLOCKS else None
    if not backbone.startswith(LITE0_PRUNED):
        return None
    try:
        keep = float(backbone[len(LITE0_PRUNED):])
    except ValueError:
        return None
    return (LITE0_BLOCKS, keep) if 0.05 <= keep <= 1.0 else None


def lite0_blocks(backbone: str) -> Optional[int]:
    """The block count of an EfficientNet-Lite0 name: K for ``efficientnet-lite0-b<K>`` (1-16: the stem and the
    first K blocks, no 1280-channel head conv), 16 blocks plus the head conv for plain ``efficientnet-lite0`` and
    a pruned ``efficientnet-lite0-p<keep>``, else None."""
    parsed = _lite0_name(backbone)
    return None if parsed is None else parsed[0]


def lite0_keep(backbone: str) -> Optional[float]:
    """The fraction of channels an ``efficientnet-lite0-p<keep>`` name keeps (0.05-1), 1.0 for plain
    ``efficientnet-lite0`` and its truncations, else None."""
    parsed = _lite0_name(backbone)
    return None if parsed is None else parsed[1]


def check_backbone(backbone: str) -> str:
    """The name itself if known; ValueError otherwise."""
    if (backbone not in FIXED and mobilenet_width(backbone) is None and _lite0_name(backbone) is None
            and plain_width(backbone) is None):
        raise ValueError(f"unknown backbone {backbone!r} (choose from {', '.join(BACKBONES)}, width 0.1-1.5 "
                         f"(plain: 4-64), blocks 1-{LITE0_BLOCKS}, keep 0.05-1)")
    return backbone


def backbone_stride(backbone: str) -> int:
    """How many input pixels one row of the backbone's last feature map spans (ValueError for unknown names)."""
    check_backbone(backbone)
    if backbone == "tiny":
        return TINY_STRIDE
    if plain_width(backbone) is not None:
        return 2 ** PLAIN_LAYERS
    if mobilenet_width(backbone) is not None:
        return MOBILENET_STRIDE * space_to_depth(backbone)
    return LITE0_BLOCK_STRIDES[lite0_blocks(backbone) - 1] * space_to_depth(backbone) * stem_pool(backbone)


def context_feature_rows(backbone: str, rows: int) -> int:
    """Feature-map rows of a context strip ``rows`` pixels high (ValueError unless whole rows of the backbone)."""
    if rows < 0:
        raise ValueError("context_rows must be 0 or more")
    stride = backbone_stride(backbone)
    if rows % stride:
        raise ValueError(f"context_rows must be a multiple of the backbone's stride ({stride} for {backbone})")
    return rows // stride
