"""The hard pairwise ranking loss of ERAQUE.

Within a batch, every pair (i, j) whose ground-truth scores differ, but by no more than ``threshold``, is a
*hard* pair: easy pairs (far apart) are already ordered by a regressor, equal pairs (two crops of one clip)
carry no order. For each hard pair a hinge asks the predictions to keep the true order with a margin::

    loss_ij = max(0, margin_ij - sign(t_i - t_j) * (p_i - p_j))

where ``margin_ij`` is ``margin_scale * |t_i - t_j|`` (``margin="gap"``: pairs further apart must be
predicted further apart) or a constant. Pairs are averaged with weights: ``uniform``, or ``closeness``
(``1 - |t_i - t_j| / threshold``: the closer the pair, the more it weighs). A batch without hard pairs
gives 0, still connected to the graph.
"""
from __future__ import annotations

from typing import Union

import torch

PAIR_WEIGHTINGS = ("uniform", "closeness")


def hard_pair_mask(target: torch.Tensor, threshold: float, min_gap: float = 1e-6) -> torch.Tensor:
    """N x N bool: pairs i < j with ``min_gap < |t_i - t_j| <= threshold``."""
    t = target.reshape(-1)
    gap = (t[:, None] - t[None, :]).abs()
    upper = torch.ones_like(gap, dtype=torch.bool).triu(diagonal=1)
    return upper & (gap > min_gap) & (gap <= threshold)


def hard_rank_loss(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5,
                   margin: Union[str, float] = "gap", margin_scale: float = 1.0,
                   weighting: str = "uniform") -> tuple[torch.Tensor, int]:
    """Weighted mean hinge over the hard pairs of a batch; returns (loss, number of hard pairs)."""
    p = pred.reshape(-1)
    t = target.reshape(-1).to(p.dtype)
    if p.shape != t.shape:
        raise ValueError(f"pred has {p.numel()} values, target {t.numel()}")
    if weighting not in PAIR_WEIGHTINGS:
        raise ValueError(f"unknown pair weighting {weighting!r} (choose from {', '.join(PAIR_WEIGHTINGS)})")
    mask = hard_pair_mask(t, threshold)
    count = int(mask.sum())
    if count == 0:
        return p.sum() * 0.0, 0
    i, j = mask.nonzero(as_tuple=True)
    true_diff = t[i] - t[j]
    gap = true_diff.abs()
    if margin == "gap":
        margins = margin_scale * gap
    elif isinstance(margin, (int, float)) and not isinstance(margin, bool):
        margins = torch.full_like(gap, float(margin))
    else:
        raise ValueError(f"margin must be 'gap' or a number, not {margin!r}")
    hinge = torch.clamp(margins - torch.sign(true_diff) * (p[i] - p[j]), min=0.0)
    if weighting == "uniform":
        weights = torch.ones_like(gap)
    else:
        weights = (1.0 - gap / threshold).clamp(min=0.0)
        if float(weights.sum()) <= 0.0:  # every hard pair sits exactly at the threshold
            weights = torch.ones_like(gap)
    return (weights * hinge).sum() / weights.sum(), count
