"""Multi-teacher losses: averaged teachers (You et al. 2017) and attention-weighted teachers (Liu et al. 2020d)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.multi_teacher import TeacherAttention, attention_weighted_kd_loss, averaged_teacher_kd_loss

LN3 = math.log(3.0)


def _t(*rows: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def _softmax(z: list[float], T: float) -> list[float]:
    e = [math.exp(v / T) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_averaged_teachers_average_probabilities_not_logits():
    # teachers [ln3, 0] -> [3/4, 1/4] and [0, 0] -> [1/2, 1/2]: mean probs [5/8, 3/8]; student [0, 0]; T = 1
    s, t1, t2 = _t([0.0, 0.0]), _t([LN3, 0.0]), _t([0.0, 0.0])
    expected = 0.625 * math.log(0.625 / 0.5) + 0.375 * math.log(0.375 / 0.5)
    assert averaged_teacher_kd_loss(s, [t1, t2], T=1.0).item() == pytest.approx(expected, abs=1e-12)
    # averaging logits instead would give softmax([ln3 / 2, 0]) = [sqrt3 / (1 + sqrt3), ...], a different value
    r = math.sqrt(3) / (1 + math.sqrt(3))
    assert expected != pytest.approx(r * math.log(r / 0.5) + (1 - r) * math.log((1 - r) / 0.5), abs=1e-4)


def test_identical_teachers_equal_single_teacher_kd():
    s, t = [0.3, -1.2, 2.0], [1.5, 0.2, -0.7]
    T = 4.0
    expected = T * T * _kl(_softmax(t, T), _softmax(s, T))
    got = averaged_teacher_kd_loss(_t(s), [_t(t), _t(t), _t(t)], T=T)
    assert got.item() == pytest.approx(expected, abs=1e-12)


def test_averaged_teachers_gradient_only_to_student():
    s, t1, t2 = _t([0.0, 0.0], grad=True), _t([LN3, 0.0], grad=True), _t([0.0, 0.0], grad=True)
    averaged_teacher_kd_loss(s, [t1, t2], T=1.0).backward()
    assert t1.grad is None and t2.grad is None
    assert s.grad.tolist()[0] == pytest.approx([0.5 - 0.625, 0.5 - 0.375], abs=1e-12)


def test_teacher_attention_rows_sum_to_one_and_detach_teachers():
    torch.manual_seed(0)
    att = TeacherAttention(6, [4, 8, 5], embed_dim=3)
    s = torch.randn(2, 6, requires_grad=True)
    teachers = [torch.randn(2, d, requires_grad=True) for d in (4, 8, 5)]
    w = att(s, teachers)
    assert w.shape == (2, 3)
    assert torch.allclose(w.sum(dim=1), torch.ones(2))
    w[:, 0].sum().backward()
    assert all(t.grad is None for t in teachers)
    assert s.grad is not None and att.student_proj.weight.grad is not None


def test_teacher_attention_hand_value_and_uniform_at_zero():
    att = TeacherAttention(2, [2, 2], embed_dim=2)
    with torch.no_grad():
        for lin in (att.student_proj, *att.teacher_projs):
            lin.weight.copy_(torch.eye(2))
    s = torch.tensor([[1.0, 0.0]])
    w = att(s, [torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 5.0]])])  # inner products 2 and 0
    e2 = math.exp(2)
    assert w[0].tolist() == pytest.approx([e2 / (e2 + 1), 1 / (e2 + 1)], abs=1e-6)
    torch.nn.init.zeros_(att.student_proj.weight)
    assert att(s, [torch.ones(1, 2), torch.ones(1, 2)])[0].tolist() == pytest.approx([0.5, 0.5])


def test_attention_weighted_kd_per_sample_weights():
    # sample 0 follows teacher 1 only, sample 1 teacher 2 only; student [0, 0] twice; T = 1
    s = _t([0.0, 0.0], [0.0, 0.0])
    t1, t2 = _t([LN3, 0.0], [LN3, 0.0]), _t([0.0, LN3], [0.0, 0.0])
    w = _t([1.0, 0.0], [0.0, 1.0])
    kl0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL([3/4, 1/4] || uniform)
    kl1 = 0.0  # teacher 2 on sample 1 is uniform
    assert attention_weighted_kd_loss(s, [t1, t2], w, T=1.0).item() == pytest.approx((kl0 + kl1) / 2, abs=1e-12)


def test_attention_weighted_kd_uniform_weights_equal_averaged_teachers():
    torch.manual_seed(0)
    s = torch.randn(3, 5, dtype=torch.float64)
    ts = [torch.randn(3, 5, dtype=torch.float64) for _ in range(4)]
    w = torch.full((3, 4), 0.25, dtype=torch.float64)
    assert attention_weighted_kd_loss(s, ts, w, T=2.0).item() == \
        pytest.approx(averaged_teacher_kd_loss(s, ts, T=2.0).item(), abs=1e-12)


def test_attention_weighted_kd_gradients():
    s = _t([0.0, 0.0], grad=True)
    t1, t2 = _t([LN3, 0.0], grad=True), _t([0.0, 0.0], grad=True)
    w = _t([0.5, 0.5], grad=True)
    attention_weighted_kd_loss(s, [t1, t2], w, T=1.0).backward()
    assert t1.grad is None and t2.grad is None
    assert s.grad is not None and w.grad is not None
    # d/dw_m of sum_c E_c (log E_c - log q_c) = sum_c p_mc (log E_c + 1 - log q_c), E = [5/8, 3/8], q = uniform
    g = [sum(p * (math.log(e) + 1 - math.log(0.5)) for p, e in zip(pm, (0.625, 0.375))) for pm in ((0.75, 0.25), (0.5, 0.5))]
    assert w.grad.tolist()[0] == pytest.approx(g, abs=1e-12)


def test_attention_weighted_kd_zero_weight_gives_finite_gradient():
    s = torch.zeros(1, 3, requires_grad=True)
    t1 = torch.tensor([[200.0, 0.0, 0.0]])  # softmax underflows to exact zeros in float32
    w = torch.tensor([[1.0, 0.0]], requires_grad=True)
    loss = attention_weighted_kd_loss(s, [t1, t1.clone()], w, T=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(w.grad).all() and torch.isfinite(s.grad).all()


def test_attention_weighted_kd_rejects_bad_weight_shape():
    with pytest.raises(ValueError):
        attention_weighted_kd_loss(torch.zeros(2, 3), [torch.zeros(2, 3)] * 2, torch.ones(2, 3) / 3)
