"""Tests for zoo.losses.logits: values worked out by hand, invariants, teacher isolation, errors."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.logits import (
    adaptive_temperature_kd_loss,
    dkd_loss,
    kd_loss,
    sample_temperatures,
    teacher_gated_kd_loss,
)

S = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
TT = [[3.0, 1.0, 0.0], [0.0, 2.0, -1.0]]
LABELS = [2, 1]  # teacher argmax: [0, 1] -> wrong on sample 0, right on sample 1


def softmax(row: list[float], T: float = 1.0) -> list[float]:
    exps = [math.exp(x / T) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def hand_kd_row(s: list[float], t: list[float], T: float) -> float:
    return T * T * kl(softmax(t, T), softmax(s, T))


def tensors(student=S, teacher=TT, labels=LABELS):
    s = torch.tensor(student, requires_grad=True)
    t = torch.tensor(teacher, requires_grad=True)
    return s, t, torch.tensor(labels)


def assert_teacher_isolated(loss: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


# ---------------------------------------------------------------- kd_loss

@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_loss_matches_hand_value(T):
    s, t, _ = tensors()
    expected = (hand_kd_row(S[0], TT[0], T) + hand_kd_row(S[1], TT[1], T)) / 2
    assert kd_loss(s, t, T=T).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_reduction_none_is_per_sample():
    s, t, _ = tensors()
    per = kd_loss(s, t, T=2.0, reduction="none")
    assert per.shape == (2,)
    assert per[0].item() == pytest.approx(hand_kd_row(S[0], TT[0], 2.0), rel=1e-5)
    assert per[1].item() == pytest.approx(hand_kd_row(S[1], TT[1], 2.0), rel=1e-5)
    assert per.mean().item() == pytest.approx(kd_loss(s, t, T=2.0).item(), rel=1e-6)


def test_kd_loss_zero_iff_equal():
    s, t, _ = tensors()
    assert kd_loss(t.detach().clone(), t).item() == pytest.approx(0.0, abs=1e-7)
    assert kd_loss(t + 5.0, t).item() == pytest.approx(0.0, abs=1e-6)  # softmax is shift invariant
    assert kd_loss(s, t).item() > 0


def test_kd_loss_t_squared_keeps_gradient_scale():
    torch.manual_seed(0)
    t = torch.randn(4, 10) * 0.5
    s0 = t + 0.05 * torch.randn(4, 10)
    norms = []
    for T in (5.0, 10.0):
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t, T=T).backward()
        norms.append(s.grad.norm().item())
    assert norms[1] / norms[0] == pytest.approx(1.0, abs=0.1)
    # without the T^2 factor the gradient would shrink by (5/10)^2 = 4x


def test_kd_loss_no_grad_to_teacher():
    s, t, _ = tensors()
    assert_teacher_isolated(kd_loss(s, t), s, t)


def test_kd_loss_errors():
    s, t, _ = tensors()
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_loss(s, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        kd_loss(s, t, reduction="sum")
    with pytest.raises(ValueError, match="positive"):
        kd_loss(s, t, T=0.0)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        kd_loss(torch.zeros(3), torch.zeros(3))


# ---------------------------------------------------------------- dkd_loss

def hand_dkd_row(s: list[float], t: list[float], y: int, alpha: float, beta: float, T: float) -> float:
    ps, pt = softmax(s, T), softmax(t, T)
    b_s, b_t = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
    tckd = kl(b_t, b_s)
    s_nt = [v for j, v in enumerate(s) if j != y]
    t_nt = [v for j, v in enumerate(t) if j != y]
    nckd = kl(softmax(t_nt, T), softmax(s_nt, T))
    return T * T * (alpha * tckd + beta * nckd)


@pytest.mark.parametrize("alpha,beta,T", [(1.0, 8.0, 4.0), (0.5, 2.0, 2.0), (1.0, 0.0, 1.0)])
def test_dkd_loss_matches_hand_value(alpha, beta, T):
    s, t, y = tensors()
    expected = sum(hand_dkd_row(S[i], TT[i], LABELS[i], alpha, beta, T) for i in range(2)) / 2
    assert dkd_loss(s, t, y, alpha=alpha, beta=beta, T=T).item() == pytest.approx(expected, rel=1e-5)


def test_dkd_reduces_to_kd_with_paper_weights():
    # Zhao et al. eq. (5): KD = TCKD + (1 - p_t^T) NCKD, for one sample with alpha=1, beta=1-p_t^T
    s, t, y = tensors([S[0]], [TT[0]], [LABELS[0]])
    T = 3.0
    beta = 1 - softmax(TT[0], T)[LABELS[0]]
    assert dkd_loss(s, t, y, alpha=1.0, beta=beta, T=T).item() == pytest.approx(kd_loss(s, t, T=T).item(), rel=1e-5)


def test_dkd_zero_when_equal_positive_otherwise():
    s, t, y = tensors()
    assert dkd_loss(t.detach().clone(), t, y).item() == pytest.approx(0.0, abs=1e-6)
    assert dkd_loss(s, t, y).item() > 0


def test_dkd_no_grad_to_teacher():
    s, t, y = tensors()
    assert_teacher_isolated(dkd_loss(s, t, y), s, t)


def test_dkd_errors():
    s, t, _ = tensors()
    with pytest.raises(ValueError, match="labels"):
        dkd_loss(s, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="same shape"):
        dkd_loss(s, torch.zeros(3, 3), torch.tensor([0, 1]))


# ---------------------------------------------------------------- teacher_gated_kd_loss

def test_gated_matches_hand_value():
    s, t, y = tensors()
    T = 2.0
    ce_0 = -math.log(softmax(S[0])[LABELS[0]])  # teacher wrong on sample 0 -> CE on the true label
    kd_1 = hand_kd_row(S[1], TT[1], T)  # teacher right on sample 1 -> KD
    assert teacher_gated_kd_loss(s, t, y, T=T).item() == pytest.approx((ce_0 + kd_1) / 2, rel=1e-5)


def test_gated_all_correct_is_kd_all_wrong_is_ce():
    s, t, _ = tensors()
    right = torch.tensor([0, 1])
    wrong = torch.tensor([1, 0])
    assert teacher_gated_kd_loss(s, t, right, T=3.0).item() == pytest.approx(kd_loss(s, t, T=3.0).item(), rel=1e-6)
    expected_ce = (-math.log(softmax(S[0])[1]) - math.log(softmax(S[1])[0])) / 2
    assert teacher_gated_kd_loss(s, t, wrong).item() == pytest.approx(expected_ce, rel=1e-5)


def test_gated_zero_when_teacher_right_and_student_equal():
    _, t, _ = tensors()
    right = torch.tensor([0, 1])
    assert teacher_gated_kd_loss(t.detach().clone(), t, right).item() == pytest.approx(0.0, abs=1e-6)
    s, t, y = tensors()
    assert teacher_gated_kd_loss(s, t, y).item() > 0


def test_gated_no_grad_to_teacher():
    s, t, y = tensors()
    assert_teacher_isolated(teacher_gated_kd_loss(s, t, y), s, t)


def test_gated_errors():
    s, t, _ = tensors()
    with pytest.raises(ValueError, match="labels"):
        teacher_gated_kd_loss(s, t, torch.tensor([[0], [1]]))


# ---------------------------------------------------------------- adaptive_temperature_kd_loss

def hand_temps(teacher, labels, T, beta, gamma, t_min, t_max):
    w = [(1 - softmax(row)[y]) ** gamma for row, y in zip(teacher, labels)]
    mean_w = sum(w) / len(w)
    return [min(max(T + beta * (mean_w - wi), t_min), t_max) for wi in w]


def test_adaptive_matches_hand_value():
    s, t, y = tensors()
    T, beta, gamma = 4.0, 2.0, 2.0
    temps = hand_temps(TT, LABELS, T, beta, gamma, 1.0, 10.0)
    expected = sum(hand_kd_row(S[i], TT[i], temps[i]) for i in range(2)) / 2
    loss = adaptive_temperature_kd_loss(s, t, y, T=T, beta=beta, gamma=gamma)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_adaptive_temperatures_follow_confidence():
    _, t, y = tensors()
    temps = sample_temperatures(t, y, T=4.0, beta=2.0)
    # sample 1: teacher right and confident -> softened with a higher temperature than sample 0
    assert temps[1] > 4.0 > temps[0]
    assert temps.tolist() == pytest.approx(hand_temps(TT, LABELS, 4.0, 2.0, 2.0, 1.0, 10.0), rel=1e-6)
    clipped = sample_temperatures(t, y, T=4.0, beta=100.0, t_min=2.0, t_max=6.0)
    assert clipped.tolist() == pytest.approx([2.0, 6.0])


def test_adaptive_norm_confidence_hand_value():
    _, t, y = tensors()
    w = [1 - math.sqrt(sum(p * p for p in softmax(row))) for row in TT]
    expected = [4.0 + 1.5 * (sum(w) / 2 - wi) for wi in w]
    temps = sample_temperatures(t, y, T=4.0, beta=1.5, confidence="norm")
    assert temps.tolist() == pytest.approx(expected, rel=1e-6)


def test_adaptive_beta_zero_is_kd_and_zero_when_equal():
    s, t, y = tensors()
    assert adaptive_temperature_kd_loss(s, t, y, T=3.0, beta=0.0).item() == pytest.approx(
        kd_loss(s, t, T=3.0).item(), rel=1e-6)
    assert adaptive_temperature_kd_loss(t.detach().clone(), t, y).item() == pytest.approx(0.0, abs=1e-6)
    assert adaptive_temperature_kd_loss(s, t, y).item() > 0


def test_adaptive_no_grad_to_teacher():
    s, t, y = tensors()
    assert_teacher_isolated(adaptive_temperature_kd_loss(s, t, y), s, t)


def test_adaptive_errors():
    s, t, y = tensors()
    with pytest.raises(ValueError, match="confidence"):
        adaptive_temperature_kd_loss(s, t, y, confidence="entropy")
    with pytest.raises(ValueError, match="t_min"):
        adaptive_temperature_kd_loss(s, t, y, t_min=5.0, t_max=2.0)
    with pytest.raises(ValueError, match="same shape"):
        adaptive_temperature_kd_loss(s, torch.zeros(2, 5), y)
