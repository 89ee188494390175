"""The confidence-interval ranking loss: pairwise ranking that knows how sure each true order is.

Each image's mean opinion score comes from ``n`` raters whose scores spread by ``std``; its 95% confidence
interval is ``mean +- h`` with ``h = t(n-1) * std / sqrt(n)`` (Student t; ``z`` = 1.96 for large panels). For a
pair (i, j) with ``mean_i != mean_j`` the *interval gap* is::

    gap_ij = |mean_i - mean_j| - (h_i + h_j)

``gap_ij > 0``: the intervals do not overlap and the order is sure; ``gap_ij <= 0``: they overlap and the order is
uncertain. The loss is a hinge that asks the predictions to keep the true order::

    loss_ij = max(0, margin_ij - sign(mean_i - mean_j) * (p_i - p_j)),   margin_ij = margin_scale * max(gap_ij, 0)

so the margin grows with how clearly the intervals are apart (overlapping pairs only need the right order), and
the pairs are averaged with weight ``overlap_weight`` for overlapping (uncertain) pairs and 1 for the others: the
uncertain pairs are the hard ones a regressor gets wrong, so they get the larger weight. A batch without pairs
gives 0, still connected to the graph.

With ``margin_scale`` 1 a model that reproduces its training means has zero loss here (``gap_ij < |mean gap|``),
so once the heads fit their training part the term goes quiet. A larger scale keeps the sure pairs pulling, but
on CLIVE it also stretched the predicted means far past their scale (mean RMSE 38 at 4 against 11.7 at 1), so
the shipped config keeps 1 (docs/models/clive-quality-spread.md).
(Weights that grow smoothly with the overlap instead of the step did no better on CLIVE's validation parts.)
``ci_fidelity_loss`` reads the same intervals as probabilities of the true order; on CLIVE's test splits it did
not beat plain ranking either (docs/models/clive-quality-spread.md).
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ci_fidelity_loss", "ci_half_width", "ci_pair_terms", "ci_rank_loss", "plain_rank_loss"]


def ci_half_width(std: torch.Tensor, n, confidence: float = 0.95) -> torch.Tensor:
    """Half-width of each mean's Student-t interval: ``t(n-1) * std / sqrt(n)`` (``n`` a number or per item)."""
    from scipy import stats

    n_arr = np.broadcast_to(np.asarray(n.detach().cpu() if torch.is_tensor(n) else n, dtype=np.float64),
                            tuple(std.shape))
    if np.any(n_arr < 2):
        raise ValueError("every item needs at least 2 raters for a confidence interval")
    t = torch.as_tensor(stats.t.ppf(0.5 + confidence / 2.0, n_arr - 1) / np.sqrt(n_arr), dtype=std.dtype,
                        device=std.device)
    return t * std


def ci_pair_terms(mean: torch.Tensor, std: torch.Tensor, n, confidence: float = 0.95, min_gap: float = 1e-9):
    """Pairs i < j with distinct means: (i, j, sign of the true order, interval gap)."""
    m = mean.reshape(-1)
    h = ci_half_width(std.reshape(-1).to(m.dtype), n if not torch.is_tensor(n) else n.reshape(-1), confidence)
    diff = m[:, None] - m[None, :]
    upper = torch.ones_like(diff, dtype=torch.bool).triu(diagonal=1) & (diff.abs() > min_gap)
    i, j = upper.nonzero(as_tuple=True)
    true_diff = diff[i, j]
    gap = true_diff.abs() - (h[i] + h[j])
    return i, j, torch.sign(true_diff), gap


def ci_rank_loss(pred: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, n, *, confidence: float = 0.95,
                 overlap_weight: float = 2.0, margin_scale: float = 1.0) -> tuple[torch.Tensor, int, int]:
    """Weighted mean hinge over all pairs of a batch; returns (loss, pairs, overlapping pairs)."""
    p = pred.reshape(-1)
    m = mean.reshape(-1).to(p.dtype)
    if p.shape != m.shape or std.numel() != m.numel():
        raise ValueError(f"pred has {p.numel()} values, mean {m.numel()}, std {std.numel()}")
    if overlap_weight <= 0 or margin_scale < 0:
        raise ValueError("overlap_weight must be > 0 and margin_scale >= 0")
    i, j, sign, gap = ci_pair_terms(m, std.to(p.dtype), n, confidence)
    if i.numel() == 0:
        return p.sum() * 0.0, 0, 0
    overlap = gap <= 0
    margins = margin_scale * gap.clamp(min=0.0)
    hinge = torch.clamp(margins - sign * (p[i] - p[j]), min=0.0)
    weights = torch.where(overlap, torch.full_like(gap, float(overlap_weight)), torch.ones_like(gap))
    return (weights * hinge).sum() / weights.sum(), int(i.numel()), int(overlap.sum())


def ci_fidelity_loss(pred: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, n) -> tuple[torch.Tensor, int]:
    """The interval-aware ranking loss in probability form (``loss.rank = "ci-fidelity"``); returns (loss, pairs).

    Each mean is known to its standard error ``se = std / sqrt(n)``; for a pair the probability that ``i`` truly
    beats ``j`` is ``t_ij = Phi((mean_i - mean_j) / s_ij)`` with ``s_ij = sqrt(se_i^2 + se_j^2)`` (Thurstone,
    case V): 1 or 0 for pairs whose intervals lie far apart, near 1/2 for overlapping, uncertain pairs. The
    predictions give ``p_ij = Phi((pred_i - pred_j) / s_ij)`` on the same scale, and the fidelity loss
    ``1 - sqrt(t p) - sqrt((1 - t)(1 - p))`` (Tsai et al. 2007) compares the two. It is smallest at
    ``pred_i - pred_j = mean_i - mean_j``, so unlike a hinge with a margin it never pulls sure pairs apart past
    their true gap (the scale stays); its gradient lives on the pairs predicted within a few ``s_ij`` of each other
    or in the wrong order, and an uncertain pair only asks for an uncertain order.
    """
    p = pred.reshape(-1)
    m = mean.reshape(-1).to(p.dtype)
    sd = std.reshape(-1).to(p.dtype)
    if p.shape != m.shape or sd.shape != m.shape:
        raise ValueError(f"pred has {p.numel()} values, mean {m.numel()}, std {sd.numel()}")
    n_t = torch.as_tensor(n, dtype=p.dtype, device=p.device)
    if torch.any(n_t < 1):
        raise ValueError("every item needs at least 1 rater")
    se = sd / n_t.sqrt()
    upper = torch.ones(p.numel(), p.numel(), dtype=torch.bool, device=p.device).triu(diagonal=1)
    i, j = upper.nonzero(as_tuple=True)
    if i.numel() == 0:
        return p.sum() * 0.0, 0
    s = (se[i].pow(2) + se[j].pow(2)).sqrt().clamp_min(1e-6)
    target = torch.special.ndtr((m[i] - m[j]) / s)
    prob = torch.special.ndtr((p[i] - p[j]) / s)
    eps = 1e-8
    fidelity = 1.0 - (target * prob + eps).sqrt() - ((1.0 - target) * (1.0 - prob) + eps).sqrt()
    return fidelity.mean(), int(i.numel())


def plain_rank_loss(pred: torch.Tensor, mean: torch.Tensor, margin_scale: float = 1.0) -> tuple[torch.Tensor, int]:
    """The baseline without intervals: every pair, equal weights, margin ``margin_scale * |mean_i - mean_j|``
    (the hard-rank loss of ``gameqa.losses.ranking`` with no threshold)."""
    from gameqa.losses.ranking import hard_rank_loss

    return hard_rank_loss(pred, mean, threshold=math.inf, margin="gap", margin_scale=margin_scale)
