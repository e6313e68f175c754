"""Loss functions against values worked out by hand, gradients, masks and edge cases."""
from __future__ import annotations

import math

import pytest
import torch

from losses import dpo_loss, macpo_loss, sequence_logps, token_logps, wspo_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------- log-probs
def test_token_logps_by_hand():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = [1/4, 3/4]
    assert token_logps(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    assert token_logps(logits, torch.tensor([[-100]])).shape == (1, 1)  # padding label does not crash


def test_sequence_logps_sum_mean_and_mask():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.randint(0, 5, (2, 4))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    naive = []
    for b in range(2):
        total = 0.0
        for i in range(4):
            if mask[b, i]:
                total += torch.log_softmax(logits[b, i], -1)[labels[b, i]].item()
        naive.append(total)
    assert sequence_logps(logits, labels, mask).tolist() == pytest.approx(naive, abs=1e-5)
    assert sequence_logps(logits, labels, mask, average=True).tolist() == pytest.approx([naive[0] / 2, naive[1] / 4], abs=1e-5)


def test_padding_never_counts():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4)
    labels = torch.tensor([[1, 2, -100]])
    mask = torch.tensor([[1, 1, 0]])
    changed = logits.clone()
    changed[0, 2] = 100.0
    assert torch.equal(sequence_logps(logits, labels, mask), sequence_logps(changed, labels, mask))


def test_all_masked_row_is_zero_not_nan():
    logits = torch.randn(2, 3, 4)
    labels = torch.zeros(2, 3, dtype=torch.long)
    mask = torch.tensor([[0, 0, 0], [1, 1, 1]])
    for average in (False, True):
        out = sequence_logps(logits, labels, mask, average=average)
        assert out[0].item() == 0.0 and torch.isfinite(out).all()


# ---------------------------------------------------------------- DPO family
def test_dpo_sigmoid_by_hand():
    loss, rc, rr = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5)
    logits = (-1.0 + 2.0) - (-3.0 + 2.5)  # 1.5
    assert loss.item() == pytest.approx(-logsig(0.5 * logits))
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.25)


def test_dpo_label_smoothing_by_hand():
    loss, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, label_smoothing=0.2)
    z = 0.5 * 1.5
    assert loss.item() == pytest.approx(-0.8 * logsig(z) - 0.2 * logsig(-z))


def test_ipo_and_hinge_by_hand():
    ipo, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.25, loss_type="ipo")
    assert ipo.item() == pytest.approx((1.5 - 1 / (2 * 0.25)) ** 2)
    hinge, _, _ = dpo_loss(t(-1.0), t(-3.0), t(-2.0), t(-2.5), beta=0.5, loss_type="hinge")
    assert hinge.item() == pytest.approx(max(0.0, 1 - 0.5 * 1.5))
    hinge_far, _, _ = dpo_loss(t(10.0), t(-10.0), t(0.0), t(0.0), beta=0.5, loss_type="hinge")
    assert hinge_far.item() == 0.0


def test_equal_chosen_and_rejected():
    same = (t(-2.0, -1.0), t(-2.0, -1.0), t(-1.0, -1.0), t(-1.0, -1.0))
    assert dpo_loss(*same)[0].tolist() == pytest.approx([math.log(2)] * 2)
    assert dpo_loss(*same, beta=0.2, loss_type="ipo")[0].tolist() == pytest.approx([(1 / 0.4) ** 2] * 2)
    assert dpo_loss(*same, loss_type="hinge")[0].tolist() == pytest.approx([1.0, 1.0])


def test_sigmoid_beta_to_zero_limit_is_log2():
    loss, _, _ = dpo_loss(t(5.0, -7.0), t(-9.0, 3.0), t(0.0, 1.0), t(0.5, -2.0), beta=1e-8)
    assert loss.tolist() == pytest.approx([math.log(2)] * 2, abs=1e-6)


def test_gradients_flow_to_policy_only_through_loss():
    pc = t(-1.0, -2.0).requires_grad_()
    pr = t(-3.0, -1.0).requires_grad_()
    loss, rc, rr = dpo_loss(pc, pr, t(-2.0, -2.0), t(-2.0, -2.0))
    loss.mean().backward()
    assert pc.grad is not None and (pc.grad < 0).all() and (pr.grad > 0).all()
    assert not rc.requires_grad and not rr.requires_grad


@pytest.mark.parametrize("kwargs, message", [
    ({"beta": 0.0}, "beta=0.0"), ({"loss_type": "kto"}, "loss_type='kto'"),
    ({"label_smoothing": 0.7}, "label_smoothing=0.7"), ({"loss_type": "ipo", "label_smoothing": 0.1}, "sigmoid"),
])
def test_dpo_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), **kwargs)


# ---------------------------------------------------------------- MACPO
def test_macpo_is_dpo_plus_gamma_nll():
    args = (t(-1.0, -4.0), t(-3.0, -2.0), t(-2.0, -3.0), t(-2.5, -2.0))
    avg = t(-0.5, -2.0)
    dpo, rc, rr = dpo_loss(*args, beta=0.1)
    macpo, mrc, mrr = macpo_loss(*args, avg, beta=0.1, gamma=0.2)
    assert macpo.tolist() == pytest.approx((dpo + 0.2 * t(0.5, 2.0)).tolist())
    assert torch.equal(rc, mrc) and torch.equal(rr, mrr)
    by_hand = -logsig(0.1 * ((-1.0 + 2.0) - (-3.0 + 2.5))) + 0.2 * 0.5
    assert macpo[0].item() == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="gamma=-1"):
        macpo_loss(*args, avg, gamma=-1)


def test_macpo_honours_label_smoothing_in_its_dpo_term():
    """`label_smoothing` with `macpo` is applied (it used to be ignored silently), through the
    objective the Agent trains with too."""
    from agents.config import TrainConfig
    from agents.objectives import get_objective

    args = (t(-1.0, -4.0), t(-3.0, -2.0), t(-2.0, -3.0), t(-2.5, -2.0))
    avg = t(-0.5, -2.0)
    smoothed_dpo, _, _ = dpo_loss(*args, beta=0.1, label_smoothing=0.2)
    macpo, _, _ = macpo_loss(*args, avg, beta=0.1, gamma=0.2, label_smoothing=0.2)
    assert macpo.tolist() == pytest.approx((smoothed_dpo + 0.2 * t(0.5, 2.0)).tolist())
    cfg = TrainConfig(beta=0.1, nll_weight=0.2, label_smoothing=0.2)
    through_objective, _, _ = get_objective("macpo").preference_loss(*args, avg, cfg)
    assert through_objective.tolist() == pytest.approx(macpo.tolist())
    plain, _, _ = get_objective("macpo").preference_loss(*args, avg, TrainConfig(beta=0.1, nll_weight=0.2))
    assert plain.tolist() != pytest.approx(macpo.tolist())


def test_macpo_nll_term_has_gradient():
    avg = t(-1.0).requires_grad_()
    loss, _, _ = macpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), avg, gamma=0.2)
    loss.sum().backward()
    assert avg.grad.item() == pytest.approx(-0.2)


# ---------------------------------------------------------------- WSPO
def test_wspo_by_hand_with_mask():
    policy = t(-1.0, -2.0, -3.0).repeat(2, 1)
    strong_ref = t(-1.5, -2.0, -2.0).repeat(2, 1)
    weak_aligned = t(-1.0, -1.0, -1.0).repeat(2, 1)
    weak_ref = t(-1.1, -1.2, -1.3).repeat(2, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    loss = wspo_loss(policy, strong_ref, weak_aligned, weak_ref, mask, gamma=0.1)
    d = [0.1 * 0.5 - 0.1, 0.1 * 0.0 - 0.2, 0.1 * -1.0 - 0.3]
    assert loss[0].item() == pytest.approx((d[0] ** 2 + d[1] ** 2) / 2)
    assert loss[1].item() == pytest.approx(sum(x * x for x in d) / 3)


def test_wspo_zero_when_shifts_match_and_masked_rows_zero():
    strong_ref = t(-2.0, -1.0).repeat(2, 1)
    weak_shift = t(0.3, -0.2).repeat(2, 1)
    policy = strong_ref + weak_shift / 0.1
    mask = torch.tensor([[1, 1], [0, 0]])
    loss = wspo_loss(policy, strong_ref, weak_shift + 1.0, torch.ones(2, 2), mask, gamma=0.1)
    assert loss.tolist() == pytest.approx([0.0, 0.0], abs=1e-10)
    assert torch.isfinite(loss).all()


def test_wspo_gradient_and_shape_error():
    policy = torch.zeros(1, 3, requires_grad=True)
    loss = wspo_loss(policy, torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 3), torch.ones(1, 3), gamma=0.5)
    loss.sum().backward()
    # d/dp mean((0.5p - 1)^2) at p=0 = 2*(−1)*0.5/3 per token
    assert policy.grad[0].tolist() == pytest.approx([-1 / 3] * 3)
    with pytest.raises(ValueError, match="shapes differ"):
        wspo_loss(torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3))
