"""Channel pruning of EfficientNet-Lite0: a student that reads the teacher's very pixels at a fraction of its work.

``efficientnet-lite0-p<keep>`` keeps ``keep`` of the expanded channels inside each MBConv block that has an
expansion (blocks 2-16: the wide hidden layers where most of the work is) and of the 1280-channel last conv, in
multiples of 8. Every block's input and output channels stay as they are, so a pruned copy of a trained teacher
carries the teacher's residual stream block for block, and each of its blocks can be taught to give what the
teacher's block gives (``distill.block_weight``).

Which channels stay: given calibration crops, the channels whose output varies most on them (times the weight that
reads them), with what each dropped channel gives on average folded into the next layer, so that a nearly constant
channel costs nothing to drop; without crops (a network built from its name, or ImageNet weights), a hidden
channel's importance is the product of the norms of its expand filter, its depthwise filter and its column of the
project conv, each BatchNorm's scale included, and a last-conv channel's its filter, its BatchNorm scale and, when
given, its column of the head's first linear layer. On a trained teacher the weights alone pick badly (pruned to
half, its scores no longer follow the teacher's; docs/models/eraque-student.md)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def kept_channels(channels: int, keep: float) -> int:
    """How many of ``channels`` a pruning to ``keep`` leaves: a multiple of 8, at least 8, at most all."""
    return min(channels, max(8, int(round(channels * keep / 8)) * 8))


def _bn_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    return bn.weight.detach().abs() / (bn.running_var + bn.eps).sqrt()


def _norms(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """L2 norm of each slice along ``dim`` of a conv or linear weight (dim 0: per output, 1: per input)."""
    w = weight.detach()
    return w.flatten(1).norm(dim=1) if dim == 0 else w.transpose(0, 1).flatten(1).norm(dim=1)


def _top(importance: torch.Tensor, n: int) -> torch.Tensor:
    return importance.argsort(descending=True)[:n].sort().values


def _slice_conv(conv: nn.Conv2d, out_idx: Optional[torch.Tensor] = None, in_idx: Optional[torch.Tensor] = None,
                depthwise: bool = False) -> None:
    w = conv.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None and not depthwise:
        w = w[:, in_idx]
    conv.weight = nn.Parameter(w.clone())
    conv.out_channels = w.shape[0]
    if depthwise:
        conv.in_channels = conv.groups = w.shape[0]
    else:
        conv.in_channels = w.shape[1]


def _slice_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    bn.weight = nn.Parameter(bn.weight.detach()[idx].clone())
    bn.bias = nn.Parameter(bn.bias.detach()[idx].clone())
    bn.running_mean = bn.running_mean[idx].clone()
    bn.running_var = bn.running_var[idx].clone()
    bn.num_features = len(idx)


def _activity(net: nn.Module, model: Optional[nn.Module], calibration: torch.Tensor
              ) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], Optional[torch.Tensor]]:
    """Mean and spread of each hidden channel (the input of every block's project conv, over crops and pixels)
    and the pooled last-conv channels (crops x channels) that ``calibration`` gives."""
    hidden: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for k, block in enumerate(net._blocks):
        if hasattr(block, "_expand_conv"):
            def keep(_m, args, k=k):
                a = args[0].detach().transpose(0, 1).flatten(1)
                hidden[k] = (a.mean(dim=1), a.std(dim=1))
            handles.append(block._project_conv.register_forward_pre_hook(keep))
    pooled = None
    try:
        with torch.no_grad():
            fmap = net.extract_features(calibration) if model is None else model.backbone(calibration)
            pooled = fmap.mean(dim=(2, 3))
    finally:
        for h in handles:
            h.remove()
    return hidden, pooled


def prune_lite0(net: nn.Module, keep: float, head: Optional[nn.Linear] = None,
                calibration: Optional[torch.Tensor] = None, model: Optional[nn.Module] = None) -> torch.Tensor:
    """Prune an ``efficientnet_lite_pytorch`` EfficientNet-Lite0 in place to ``keep`` (0 < keep <= 1) of its
    expanded and last-conv channels; returns the indices of the last conv's channels kept (to slice the
    columns of whatever reads them). ``head``: the first linear layer reading the pooled last conv (its columns
    weigh the last conv's channels).

    With ``calibration`` (a batch of normalised crops; ``model`` the network that holds ``net``, if any), a
    channel's importance is how much it varies on those crops times the weight that reads it, and what a dropped
    channel gives on average is folded into what comes next (the project conv's BatchNorm, the head's bias): a
    channel that is nearly constant costs little to drop."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], not {keep}")
    hidden, pooled = _activity(net, model, calibration) if calibration is not None else ({}, None)
    for k, block in enumerate(net._blocks):
        if not hasattr(block, "_expand_conv"):
            continue  # the first block has no expansion: its channels are the stem's
        project = block._project_conv.weight.detach()[:, :, 0, 0]
        if k in hidden:
            importance = hidden[k][1] * project.norm(dim=0)
        else:
            importance = (_norms(block._expand_conv.weight, 0) * _bn_scale(block._bn0)
                          * _norms(block._depthwise_conv.weight, 0) * _bn_scale(block._bn1)
                          * _norms(block._project_conv.weight, 1))
        idx = _top(importance, kept_channels(project.shape[1], keep))
        if k in hidden:
            dropped = torch.ones(project.shape[1], dtype=torch.bool)
            dropped[idx] = False
            block._bn2.running_mean -= project[:, dropped] @ hidden[k][0][dropped]
        _slice_conv(block._expand_conv, out_idx=idx)
        _slice_bn(block._bn0, idx)
        _slice_conv(block._depthwise_conv, out_idx=idx, depthwise=True)
        _slice_bn(block._bn1, idx)
        _slice_conv(block._project_conv, in_idx=idx)
    channels = net._conv_head.weight.shape[0]
    if pooled is not None:
        importance = pooled.std(dim=0) * (_norms(head.weight, 1) if head is not None else 1.0)
    else:
        importance = _norms(net._conv_head.weight, 0) * _bn_scale(net._bn1)
        if head is not None:
            importance = importance * _norms(head.weight, 1)
    idx = _top(importance, kept_channels(channels, keep))
    if pooled is not None and head is not None:
        dropped = torch.ones(channels, dtype=torch.bool)
        dropped[idx] = False
        with torch.no_grad():
            head.bias += head.weight[:, dropped] @ pooled.mean(dim=0)[dropped]
    _slice_conv(net._conv_head, out_idx=idx)
    _slice_bn(net._bn1, idx)
    return idx


def pruned_copy(model: nn.Module, keep: float, calibration: Optional[torch.Tensor] = None) -> nn.Module:
    """A copy of a full EfficientNet-Lite0 ``EraqueNet`` pruned to ``keep``: its backbone as ``prune_lite0``
    leaves it (``calibration``: crops that say which channels vary) and the head's (and context map's) columns
    of the dropped last-conv channels removed, so that it loads into an ``efficientnet-lite0-p<keep>`` network of
    the same config."""
    import copy

    twin = copy.deepcopy(model).eval()
    twin.backbone_name = f"efficientnet-lite0-p{keep:g}"
    idx = prune_lite0(twin.backbone.net, keep, head=twin.head[2], calibration=calibration, model=twin)
    twin.head[2] = _kept_columns(twin.head[2], idx)
    if twin.context is not None:
        twin.context = _kept_columns(twin.context, idx)
    return twin


def _kept_columns(layer: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A copy of ``layer`` that reads only the input features ``idx``."""
    new = nn.Linear(len(idx), layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, idx])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new
