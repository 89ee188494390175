"""Regression and hard pairwise ranking losses, checked against values worked out by hand."""
import pytest

torch = pytest.importorskip("torch")

from gameqa.losses import eraque_loss, hard_pair_mask, hard_rank_loss, regression_loss  # noqa: E402


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_regression_l1_l2_by_hand():
    pred, target = t(1.0, 2.0, 4.0), t(2.0, 2.0, 1.0)
    assert regression_loss(pred, target, "l1").item() == pytest.approx((1 + 0 + 3) / 3)
    assert regression_loss(pred, target, "l2").item() == pytest.approx((1 + 0 + 9) / 3)
    # smooth L1 with beta 0.5: |d| < 0.5 -> 0.5 d^2 / 0.5, else |d| - 0.25
    assert regression_loss(t(1.2, 3.0), t(1.0, 1.0), "smooth_l1", beta=0.5).item() == pytest.approx((0.04 + 1.75) / 2)
    assert regression_loss(pred, target, "none").item() == 0.0
    with pytest.raises(ValueError):
        regression_loss(pred, target, "l3")


def test_hard_pairs_are_close_but_not_equal():
    target = t(3.0, 3.2, 3.0, 4.0)
    mask = hard_pair_mask(target, threshold=0.5)
    pairs = {tuple(p) for p in mask.nonzero().tolist()}
    # (0,1) gap 0.2 and (1,2) gap 0.2 are hard; (0,2) equal, the 4.0 pairs too far
    assert pairs == {(0, 1), (1, 2)}


def test_rank_loss_with_gap_margin_by_hand():
    target = t(3.0, 3.4, 5.0)      # only (0, 1) is hard with threshold 0.5: gap 0.4, true order 1 > 0
    pred = t(3.3, 3.1, 1.0)        # predicted in the wrong order by 0.2
    loss, pairs = hard_rank_loss(pred, target, threshold=0.5, margin="gap")
    # sign(t0 - t1) = -1: hinge = max(0, 0.4 - (-1)(3.3 - 3.1)) = 0.6
    assert pairs == 1 and loss.item() == pytest.approx(0.6)
    loss_scaled, _ = hard_rank_loss(pred, target, threshold=0.5, margin="gap", margin_scale=0.5)
    assert loss_scaled.item() == pytest.approx(0.2 + 0.2)
    loss_const, _ = hard_rank_loss(pred, target, threshold=0.5, margin=0.1)
    assert loss_const.item() == pytest.approx(0.3)
    ordered, _ = hard_rank_loss(t(3.0, 3.5, 1.0), target, threshold=0.5, margin="gap")
    assert ordered.item() == pytest.approx(0.0)  # right order, 0.5 apart > margin 0.4


def test_rank_loss_closeness_weights_by_hand():
    target = t(2.0, 2.1, 2.4)   # hard pairs with threshold 0.5: (0,1) gap .1, (0,2) gap .4, (1,2) gap .3
    pred = t(2.0, 2.0, 2.0)     # all tied: hinge = margin = gap
    uniform, pairs = hard_rank_loss(pred, target, threshold=0.5, margin="gap", weighting="uniform")
    assert pairs == 3 and uniform.item() == pytest.approx((0.1 + 0.4 + 0.3) / 3)
    close, _ = hard_rank_loss(pred, target, threshold=0.5, margin="gap", weighting="closeness")
    w = [1 - 0.1 / 0.5, 1 - 0.4 / 0.5, 1 - 0.3 / 0.5]
    expected = (w[0] * 0.1 + w[1] * 0.4 + w[2] * 0.3) / sum(w)
    assert close.item() == pytest.approx(expected, rel=1e-5)


def test_rank_loss_without_hard_pairs_is_zero_and_differentiable():
    pred = t(1.0, 2.0).requires_grad_()
    loss, pairs = hard_rank_loss(pred, t(3.0, 3.0), threshold=0.5)
    assert pairs == 0 and loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and torch.all(pred.grad == 0)


def test_rank_loss_gradient_pushes_pair_apart():
    pred = t(3.3, 3.1).requires_grad_()
    loss, _ = hard_rank_loss(pred, t(3.0, 3.4), threshold=0.5)
    loss.backward()
    assert pred.grad.tolist() == pytest.approx([1.0, -1.0])  # lower the first, raise the second


def test_combined_loss_weights():
    pred, target = t(3.3, 3.1, 1.0), t(3.0, 3.4, 5.0)
    parts = eraque_loss(pred, target, regression="l1", regression_weight=2.0, rank_weight=0.5, rank_threshold=0.5)
    l1 = (0.3 + 0.3 + 4.0) / 3
    assert parts.regression == pytest.approx(l1) and parts.ranking == pytest.approx(0.6) and parts.hard_pairs == 1
    assert parts.total.item() == pytest.approx(2.0 * l1 + 0.5 * 0.6)
    with pytest.raises(ValueError):
        hard_rank_loss(pred, target, weighting="random")
