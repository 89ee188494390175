"""The confidence-interval ranking loss and the EMD loss on hand-computed cases."""
import math

import pytest
import torch

from gameqa.losses.ci_rank import (
    ci_fidelity_loss,
    ci_half_width,
    ci_pair_terms,
    ci_rank_loss,
    plain_rank_loss,
)
from gameqa.losses.distribution import emd_loss, gaussian_histogram

T_975_24 = 2.0638985616  # Student t, 97.5% quantile, 24 degrees of freedom (tables: 2.064)

# Three images rated by 25 raters each with std 5: every 95% interval is mean +- 2.0639 * 5 / 5 = +- 2.0639.
MEANS = torch.tensor([10.0, 20.0, 12.0])
STDS = torch.full((3,), 5.0)
H = T_975_24  # half-width
# pairs: (0,1) gap 10 - 2H = 5.8722 (apart); (0,2) gap 2 - 2H < 0 (overlap); (1,2) gap 8 - 2H = 3.8722 (apart)


def test_half_width_and_gaps():
    h = ci_half_width(STDS, 25)
    assert torch.allclose(h, torch.full((3,), H), atol=1e-6)
    i, j, sign, gap = ci_pair_terms(MEANS, STDS, 25)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2), (1, 2)]
    assert sign.tolist() == [-1.0, -1.0, 1.0]
    assert gap.tolist() == pytest.approx([10 - 2 * H, 2 - 2 * H, 8 - 2 * H], abs=1e-5)


def test_loss_right_order():
    # p = [11, 15, 13]: (0,1) hinge 5.8722 - 4 = 1.8722 (w 1); (0,2) ordered, margin 0 -> 0 (w 2);
    # (1,2) hinge 3.8722 - 2 = 1.8722 (w 1); loss = 3.7444 / 4
    loss, pairs, overlapping = ci_rank_loss(torch.tensor([11.0, 15.0, 13.0]), MEANS, STDS, 25)
    assert (pairs, overlapping) == (3, 1)
    assert float(loss) == pytest.approx(2 * (10 - 2 * H - 4) / 4, abs=1e-5)


def test_loss_uncertain_pair_wrong_way_weighs_double():
    # p = [14, 15, 13]: (0,1) 5.8722 - 1 = 4.8722; (0,2) wrong order by 1, margin 0 -> 1 at weight 2;
    # (1,2) 3.8722 - 2 = 1.8722; loss = (4.8722 + 2 + 1.8722) / 4 = 2.1861
    loss, _, _ = ci_rank_loss(torch.tensor([14.0, 15.0, 13.0]), MEANS, STDS, 25)
    assert float(loss) == pytest.approx((10 - 2 * H - 1 + 2 * 1 + 8 - 2 * H - 2) / 4, abs=1e-5)
    assert float(loss) == pytest.approx(2.1861, abs=1e-3)


def test_loss_zero_when_ordered_beyond_margins_and_per_item_n():
    p = MEANS.clone()  # predictions equal to the truth meet every margin (gap < |diff|)
    assert float(ci_rank_loss(p, MEANS, STDS, 25)[0]) == 0.0
    # more raters shrink the intervals: with n = 10000 the (0,2) pair no longer overlaps
    loss, _, overlapping = ci_rank_loss(p, MEANS, STDS, torch.tensor([10000, 10000, 10000]))
    assert overlapping == 0 and float(loss) == 0.0


def test_margin_scale_keeps_sure_pairs_active_at_a_perfect_fit():
    # With margin_scale 1 a model that reproduces the means has zero CI loss (the test above): once the heads fit
    # their training part the term goes quiet. With margin_scale 4 the sure pairs ask for 4 * gap > |diff|:
    # (0,1) 4 * 5.8722 - 10 = 13.4888, (0,2) overlapping: margin 0, ordered -> 0, (1,2) 4 * 3.8722 - 8 = 7.4888;
    # loss = (13.4888 + 7.4888) / (1 + 2 + 1) = 5.2444
    loss, _, _ = ci_rank_loss(MEANS.clone(), MEANS, STDS, 25, margin_scale=4.0)
    assert float(loss) == pytest.approx((4 * (10 - 2 * H) - 10 + 4 * (8 - 2 * H) - 8) / 4, abs=1e-5)
    assert float(loss) == pytest.approx(5.2444, abs=1e-3)


def test_gradient_and_empty_batch():
    p = torch.tensor([14.0, 15.0, 13.0], requires_grad=True)
    ci_rank_loss(p, MEANS, STDS, 25)[0].backward()
    # d/dp: (0,1) hinge active: +1/4 on p0, -1/4 on p1; (0,2): weight 2 -> +2/4 p0, -2/4 p2; (1,2): -1/4 p1, +1/4 p2
    assert p.grad.tolist() == pytest.approx([0.75, -0.5, -0.25])
    same = ci_rank_loss(torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([3.0, 3.0]), torch.ones(2), 10)
    assert same[1] == 0 and float(same[0].detach()) == 0.0 and same[0].requires_grad


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_ci_fidelity_hand_computed():
    # Two images, 4 raters, std 0.2: se = 0.1 each, s = sqrt(0.02). True gap 0.4, predicted gap 0.2.
    s = math.sqrt(0.02)
    t, p = _phi(0.4 / s), _phi(0.2 / s)   # 0.99766, 0.92135
    loss, pairs = ci_fidelity_loss(torch.tensor([0.6, 0.4]), torch.tensor([0.7, 0.3]), torch.tensor([0.2, 0.2]), 4)
    assert pairs == 1
    assert float(loss) == pytest.approx(1 - math.sqrt(t * p) - math.sqrt((1 - t) * (1 - p)), abs=1e-6)


def test_ci_fidelity_keeps_the_true_gap_and_leaves_uncertain_pairs_uncertain():
    mean, std = torch.tensor([0.7, 0.3]), torch.tensor([0.2, 0.2])

    def loss_at(gap: float) -> float:
        return float(ci_fidelity_loss(torch.tensor([gap, 0.0]), mean, std, 4)[0])

    assert loss_at(0.4) < loss_at(0.2) and loss_at(0.4) < loss_at(0.8)   # no push past the true gap (a hinge's margin)
    pred = torch.tensor([0.7, 0.3], requires_grad=True)
    ci_fidelity_loss(pred, mean, std, 4)[0].backward()
    assert pred.grad.abs().max() < 1e-3                                  # the true gap is the minimum
    tie = torch.tensor([0.5, 0.5])                                       # equal means: the order is a coin toss
    assert float(ci_fidelity_loss(torch.tensor([0.5, 0.5]), tie, std, 4)[0]) < \
        float(ci_fidelity_loss(torch.tensor([0.6, 0.4]), tie, std, 4)[0])
    # many raters make the same gap a sure order, few raters an uncertain one: a wrong order costs more with many
    wrong = torch.tensor([0.45, 0.55])
    near = torch.tensor([0.55, 0.45])
    assert float(ci_fidelity_loss(wrong, near, std, 400)[0]) > float(ci_fidelity_loss(wrong, near, std, 4)[0])
    with pytest.raises(ValueError, match="std"):
        ci_fidelity_loss(torch.tensor([0.5, 0.5]), tie, torch.tensor([0.2]), 4)
    assert ci_fidelity_loss(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.2]), 4)[1] == 0


def test_plain_rank_loss_uses_every_pair_equally():
    # margins = |diff| = 10, 2, 8; p = [11, 15, 13]: hinges 10-4=6, 2-2=0, 8-2=6 -> mean 4
    loss, pairs = plain_rank_loss(torch.tensor([11.0, 15.0, 13.0]), MEANS)
    assert pairs == 3 and float(loss) == pytest.approx(4.0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ci_rank_loss(torch.zeros(3), MEANS, STDS, 25, overlap_weight=0)
    with pytest.raises(ValueError):
        ci_rank_loss(torch.zeros(2), MEANS, STDS, 25)
    with pytest.raises(ValueError):
        ci_half_width(STDS, 1)


def test_emd_hand_computed():
    # CDFs [1,1,1] vs [0,0,1]: |diff| = [1,1,0] -> r=2: sqrt(2/3); r=1: 2/3
    p, q = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    assert float(emd_loss(p, q)) == pytest.approx(math.sqrt(2 / 3), abs=1e-5)
    assert float(emd_loss(p, q, r=1.0)) == pytest.approx(2 / 3, abs=1e-5)
    assert float(emd_loss(q, q)) == pytest.approx(0.0, abs=1e-5)
    # unnormalised counts are normalised: [2,2,0] vs [0,1,1] -> CDF [.5,1,1] vs [0,.5,1] -> sqrt((.25+.25)/3)
    assert float(emd_loss(torch.tensor([[2.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 1.0]]))) == pytest.approx(
        math.sqrt(0.5 / 3), abs=1e-5)
    with pytest.raises(ValueError):
        emd_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_gaussian_histogram():
    bins = list(range(1, 11))
    h = gaussian_histogram(torch.tensor([5.0, 9.8]), torch.tensor([1.5, 0.5]), bins)
    assert torch.allclose(h.sum(dim=1), torch.ones(2), atol=1e-6)
    values = torch.arange(1.0, 11.0)
    assert float((h[0] * values).sum()) == pytest.approx(5.0, abs=0.01)
    # a N(5, 1.5) vote lands on 5 with probability Phi(1/3) - Phi(-1/3) = 0.2611
    assert float(h[0, 4]) == pytest.approx(0.26112, abs=1e-4)
    assert float(h[1, 9]) > 0.6  # mass beyond 10 falls into the top bin
    mean = torch.tensor([5.0], requires_grad=True)
    emd_loss(gaussian_histogram(mean, torch.tensor([1.0]), bins), torch.eye(10)[[6]]).backward()
    assert float(mean.grad) < 0  # moving the mean towards 7 lowers the loss
