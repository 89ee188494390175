"""Regression losses between predicted and subjective scores (per crop or per frame)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

REGRESSION_KINDS = ("l1", "l2", "smooth_l1", "none")


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1", beta: float = 0.5) -> torch.Tensor:
    """Mean L1 (``l1``), squared (``l2``) or Huber-like (``smooth_l1`` with ``beta``) error; ``none`` gives 0."""
    pred = pred.reshape(-1)
    target = target.reshape(-1).to(pred.dtype)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.numel()} values, target {target.numel()}")
    if kind == "l1":
        return (pred - target).abs().mean()
    if kind == "l2":
        return ((pred - target) ** 2).mean()
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta)
    if kind == "none":
        return pred.sum() * 0.0  # keeps the graph connected for DDP
    raise ValueError(f"unknown regression loss {kind!r} (choose from {', '.join(REGRESSION_KINDS)})")
