"""Training losses (torch): L1/L2 regression and ERAQUE's hard pairwise ranking loss, and their weighted sum."""
from __future__ import annotations

from dataclasses import dataclass

from gameqa.losses.ranking import PAIR_WEIGHTINGS, hard_pair_mask, hard_rank_loss
from gameqa.losses.regression import REGRESSION_KINDS, regression_loss

__all__ = ["PAIR_WEIGHTINGS", "REGRESSION_KINDS", "LossParts", "eraque_loss", "hard_pair_mask", "hard_rank_loss",
           "regression_loss"]


@dataclass
class LossParts:
    """The total loss (a tensor) and its parts as floats, for logging."""

    total: "object"
    regression: float
    ranking: float
    hard_pairs: int


def eraque_loss(pred, target, *, regression: str = "l1", regression_weight: float = 1.0, rank_weight: float = 1.0,
                rank_threshold: float = 0.5, rank_margin="gap", margin_scale: float = 1.0,
                pair_weighting: str = "uniform") -> LossParts:
    """``regression_weight * regression + rank_weight * hard_rank``; a zero weight skips that part."""
    reg = regression_loss(pred, target, regression)
    rank, pairs = hard_rank_loss(pred, target, rank_threshold, rank_margin, margin_scale, pair_weighting)
    total = regression_weight * reg + rank_weight * rank
    return LossParts(total, float(reg.detach()), float(rank.detach()), pairs)
