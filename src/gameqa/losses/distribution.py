"""Distribution losses where vote histograms exist: the earth mover's distance (EMD) between score histograms,
and the histogram a predicted (mean, std) implies, so a mean-and-spread model can learn from whole vote
distributions.

For histograms over the same ordered score bins, ``EMD_r(p, q) = (mean_k |CDF_p(k) - CDF_q(k)|^r)^(1/r)``
(Hou et al. 2016; NIMA, Talebi & Milanfar 2018, use r = 2); the loss is its mean over the batch.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["emd_loss", "gaussian_histogram"]


def emd_loss(pred: torch.Tensor, target: torch.Tensor, r: float = 2.0) -> torch.Tensor:
    """Mean EMD_r between rows of two N x K probability tensors (each row is normalised to sum to 1 first)."""
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"need two N x K tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if r <= 0:
        raise ValueError("r must be > 0")
    p = pred / pred.sum(dim=1, keepdim=True).clamp(min=1e-12)
    q = target.to(p.dtype) / target.to(p.dtype).sum(dim=1, keepdim=True).clamp(min=1e-12)
    cdf_gap = (torch.cumsum(p, dim=1) - torch.cumsum(q, dim=1)).abs()
    return cdf_gap.pow(r).mean(dim=1).add(1e-12).pow(1.0 / r).mean()


def gaussian_histogram(mean: torch.Tensor, std: torch.Tensor, bins: Sequence[float]) -> torch.Tensor:
    """N x K probabilities of a normal(mean, std) vote rounded to the nearest of the evenly spaced ``bins``
    (votes beyond the end bins fall into them); differentiable in mean and std."""
    values = torch.as_tensor(list(bins), dtype=mean.dtype, device=mean.device)
    if values.numel() < 2:
        raise ValueError("need at least 2 bins")
    step = values[1] - values[0]
    edges = torch.cat([values - step / 2, values[-1:] + step / 2])
    z = (edges[None, :] - mean.reshape(-1, 1)) / std.reshape(-1, 1).clamp(min=1e-6)
    cdf = torch.special.ndtr(z)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, 1:-1], torch.ones_like(cdf[:, :1])], dim=1)
    return (cdf[:, 1:] - cdf[:, :-1]).clamp(min=0.0)
