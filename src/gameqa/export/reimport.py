"""An exported ERAQUE model back to a torch training checkpoint (``gameqa checkpoint-from-onnx``).

An exported model folder (``model.json`` + ``model.onnx``, fp32 or static int8 QDQ) holds every weight of the
network, with each BatchNorm folded into the convolution before it. A training checkpoint is what
``model.init`` and ``distill.init_from_teacher`` start a network from; the bundled models ship as ONNX only, so
this module rebuilds one: int8 weights are dequantized (``(q - zero_point) * scale``), each folded convolution
is put back as the convolution's weight plus its BatchNorm as a plain bias (scale 1, mean 0, variance
``1 - eps``), and the head's two linear layers are copied. The ONNX convolutions are matched to the torch
network's in forward order, shape by shape; any mismatch is a ModelError naming the file. The network is told by
the shapes themselves (EfficientNet-Lite0 or MobileNetV2 of some width), not by the model's description.

What the checkpoint cannot hold: int8 activation rounding (the rebuilt network is the fp32 network the int8
file approximates), and the context strip (``context_rows``) models. ``check_against_onnx`` measures the first
on real frames.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from gameqa.errors import ModelError

CANDIDATE_BACKBONES = ("efficientnet-lite0", "mobilenetv2-1.0", "mobilenetv2-0.75", "mobilenetv2-0.5",
                       "mobilenetv2-0.35", "tiny")


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """The initialisers of an ONNX graph, with DequantizeLinear nodes folded into plain float arrays."""

    def __init__(self, path: Path):
        from gameqa.export.graph import load_graph

        self.model = load_graph(path)
        from onnx import numpy_helper  # importable: load_graph imported onnx

        self.path = path
        self.arrays = {i.name: numpy_helper.to_array(i) for i in self.model.graph.initializer}
        self.producer = {o: n for n in self.model.graph.node for o in n.output}

    def value(self, name: str) -> np.ndarray:
        """The float array behind ``name``: an initialiser, or a DequantizeLinear of initialisers."""
        if name in self.arrays:
            return self.arrays[name].astype(np.float32)
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            raise ModelError(self.path, f"weight {name!r} is neither stored nor dequantized from stored values")
        q = self.arrays[node.input[0]].astype(np.float32)
        scale = self.arrays[node.input[1]].astype(np.float32)
        zero = self.arrays[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else np.zeros_like(scale)
        if scale.ndim == 1 and scale.size > 1:  # per channel along ``axis``
            shape = [1] * q.ndim
            shape[_attr(node, "axis", 1)] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((q - zero) * scale).astype(np.float32)

    def layers(self, op: str) -> list:
        return [n for n in self.model.graph.node if n.op_type == op]


def _conv_bn_pairs(backbone) -> list:
    """(conv, batchnorm) of a torch backbone in forward (registration) order; every conv is followed by its BN."""
    from torch import nn

    mods = [m for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    pairs = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) else None
            pairs.append((m, bn))
    return pairs


def _fits(pairs, weights: list[np.ndarray], groups: list[int]) -> bool:
    return len(pairs) == len(weights) and all(
        tuple(conv.weight.shape) == w.shape and conv.groups == g for (conv, _), w, g in zip(pairs, weights, groups))


def network_from_onnx(path: str | Path, reference: str = "none"):
    """(EraqueNet with the exported weights, backbone name, head width) of an exported crop model's ONNX file."""
    import torch

    from gameqa.models.eraque import EraqueNet

    path = Path(path)
    graph = _Graph(path)
    convs, gemms = graph.layers("Conv"), graph.layers("Gemm")
    if graph.layers("BatchNormalization"):
        raise ModelError(path, "its BatchNorm layers are not folded into the convolutions (not a gameqa export)")
    if len(gemms) != 2:
        raise ModelError(path, f"not an ERAQUE crop model: {len(gemms)} linear layers, not the head's 2 "
                               "(context-strip models are not supported)")
    weights = [graph.value(node.input[1]) for node in convs]  # dequantized once, tried against each backbone
    groups = [_attr(node, "group", 1) for node in convs]
    w1, w2 = (graph.value(g.input[1]) for g in gemms)
    if not all(_attr(g, "transB", 0) == 1 for g in gemms):
        raise ModelError(path, "the head's linear layers are not stored as torch writes them (transB = 1)")
    hidden = w1.shape[0]
    for name in CANDIDATE_BACKBONES:
        net = EraqueNet(name, reference, pretrained=False, head_hidden=hidden, dropout=0.0)
        pairs = _conv_bn_pairs(net.backbone)
        if w1.shape[1] == net.feature_channels and _fits(pairs, weights, groups):
            break
    else:
        raise ModelError(path, f"its convolutions fit none of the known backbones ({', '.join(CANDIDATE_BACKBONES)})")
    with torch.no_grad():
        for (conv, bn), node, weight in zip(pairs, convs, weights):
            conv.weight.copy_(torch.from_numpy(weight))
            bias = graph.value(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(conv.out_channels, np.float32)
            if bn is None or conv.bias is not None:
                raise ModelError(path, "a convolution without its BatchNorm: cannot place its folded bias")
            bn.weight.fill_(1.0)
            bn.bias.copy_(torch.from_numpy(bias))
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        first, last = net.head[2], net.head[4]
        first.weight.copy_(torch.from_numpy(w1))
        first.bias.copy_(torch.from_numpy(graph.value(gemms[0].input[2])))
        last.weight.copy_(torch.from_numpy(w2))
        last.bias.copy_(torch.from_numpy(graph.value(gemms[1].input[2])))
    return net.eval(), name, hidden


def checkpoint_from_onnx(model: str, out: str | Path, *, name: Optional[str] = None) -> dict:
    """Write a trainer checkpoint (``out``) holding the weights of the exported ERAQUE crop model ``model`` (a
    registered name or a model folder); returns a summary. Refuses to overwrite an existing file."""
    from gameqa.models.registry import get_card
    from gameqa.train.config import build_config
    from gameqa.train.trainer import CHECKPOINT_FORMAT, _save_atomic

    out = Path(out)
    if out.exists():
        raise ModelError(out, "exists already: choose another path for the checkpoint")
    if out.suffix != ".pt":
        raise ModelError(out, "a checkpoint's name ends in .pt")
    card = get_card(model)
    if card.engine != "onnx" or card.weights is None:
        raise ModelError(None, f"{card.name} is no exported network (engine {card.engine}): nothing to rebuild")
    spec = card.preprocess
    crops = spec.get("crops")
    if not crops:
        raise ModelError(card.weights, "not a crop model (no input.crops in its model.json): nothing to rebuild")
    reference = "full" if card.full_reference else "none"
    net, backbone, hidden = network_from_onnx(card.weights, reference)
    cfg = build_config({
        "name": name or card.name,
        "model": {"backbone": backbone, "reference": reference, "pretrained": False, "head_hidden": hidden},
        "input": {"crop_size": int(crops["size"]), "crops_per_frame": int(crops["count"]),
                  "crop_mode": crops.get("mode", "grid")},
        "export": {"pooling": card.pooling or "mean"},
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_atomic({"format": CHECKPOINT_FORMAT, "config": cfg.model_dump(mode="json"), "model": net.state_dict(),
                  "step": 0, "source_model": str(card.weights),
                  "display_height": int(spec["display_height"]) if spec.get("display_height") else None}, out)
    return {"checkpoint": str(out), "source": str(card.weights), "backbone": backbone, "head_hidden": hidden,
            "crop_size": int(crops["size"]), "crops": int(crops["count"]), "crop_mode": crops.get("mode", "grid")}


def check_against_onnx(checkpoint: str | Path, model: str, frames: list) -> dict:
    """Frame scores of the rebuilt checkpoint (torch, fp32) against the exported model's own engine on ``frames``
    (H x W x 3 uint8), each read with the model's own crops: max and mean absolute difference (1-5 scale)."""
    from gameqa.models.registry import create_model
    from gameqa.train.trainer import load_checkpoint, model_from_checkpoint, torch_frame_scores

    net, cfg = model_from_checkpoint(load_checkpoint(checkpoint))
    theirs = create_model(model).score_frames(frames)
    mine = torch_frame_scores(net, frames, None, cfg.input.crop_size, cfg.input.crops_per_frame,
                              mode=cfg.input.crop_mode)
    diff = np.abs(np.asarray(mine, np.float64) - np.asarray(theirs, np.float64))
    return {"frames": len(frames), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
