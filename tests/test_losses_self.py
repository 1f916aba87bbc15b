"""Self-distillation: BYOT loss and section heads (zoo.losses.self_distill)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.self_distill import SectionHead, byot_loss

LN3 = math.log(3.0)


def _t(*rows: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


def test_byot_hand_value_two_sections():
    # shallow q1 = [ln3, 0] -> [3/4, 1/4]; deepest q2 = [0, 0] -> [1/2, 1/2]; label 0; T = 1
    q1, q2 = _t([LN3, 0.0]), _t([0.0, 0.0])
    f1 = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64)  # (1, 2, 1, 1)
    f2 = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    alpha, lam = 0.3, 0.03
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(q2 || q1)
    expected = math.log(2) + (1 - alpha) * math.log(4 / 3) + alpha * kl + lam * (1 + 4) / 2
    loss = byot_loss([q1, q2], [f1, f2], torch.tensor([0]), alpha=alpha, lam=lam, T=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_byot_temperature_three_sections():
    # T = 2: q1/2 = q2/2 = [ln3, 0] -> KL 0 for section 1; q3 (deepest) = [0, 0]
    q1, q2, q3 = _t([2 * LN3, 0.0]), _t([2 * LN3, 0.0]), _t([0.0, 0.0])
    f = [torch.zeros(1, 3, 2, 2, dtype=torch.float64) for _ in range(3)]
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(softmax(q3/2) || softmax(q_i/2))
    ce_i = math.log(1 + 1 / 9)
    expected = math.log(2) + 2 * (0.7 * ce_i + 0.3 * 4 * kl)
    assert byot_loss([q1, q2, q3], f, torch.tensor([0]), T=2.0).item() == pytest.approx(expected, abs=1e-12)


def test_byot_deepest_is_detached_teacher():
    q1, q2 = _t([LN3, 0.0], grad=True), _t([0.0, 0.0], grad=True)
    f1 = torch.tensor([[[[1.0]], [[2.0]]]], dtype=torch.float64, requires_grad=True)
    f2 = torch.zeros(1, 2, 1, 1, dtype=torch.float64, requires_grad=True)
    byot_loss([q1, q2], [f1, f2], torch.tensor([0]), alpha=0.3, lam=0.03, T=1.0).backward()
    assert q2.grad.tolist()[0] == pytest.approx([-0.5, 0.5], abs=1e-12)  # its own CE only
    assert f2.grad is None
    # shallow: 0.7 (p1 - y) + 0.3 (p1 - p2); feature: lam * 2 (f1 - f2) / numel
    assert q1.grad.tolist()[0] == pytest.approx([0.7 * -0.25 + 0.3 * 0.25, 0.7 * 0.25 - 0.3 * 0.25], abs=1e-12)
    assert f1.grad.flatten().tolist() == pytest.approx([0.03 * 2 * 1 / 2, 0.03 * 2 * 2 / 2], abs=1e-12)


def test_byot_agreeing_sections_reduce_to_weighted_ce():
    torch.manual_seed(0)
    q = torch.randn(3, 4, dtype=torch.float64)
    f = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 3])
    ce = torch.nn.functional.cross_entropy(q, y).item()
    loss = byot_loss([q, q.clone(), q.clone()], [f, f.clone(), f.clone()], y, alpha=0.4)
    assert loss.item() == pytest.approx(ce + 2 * 0.6 * ce, abs=1e-12)


def test_byot_rejects_mismatched_features():
    q = torch.zeros(1, 2)
    with pytest.raises(ValueError):
        byot_loss([q, q], [torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)], torch.tensor([0]))
    with pytest.raises(ValueError):
        byot_loss([q], [torch.zeros(1, 2, 1, 1)], torch.tensor([0]))


@pytest.mark.parametrize("c_in,s_in,c_out,s_out,n_convs", [(16, 32, 64, 8, 2), (8, 28, 32, 7, 2), (8, 14, 32, 7, 1),
                                                           (32, 8, 32, 8, 1)])
def test_section_head_shapes(c_in, s_in, c_out, s_out, n_convs):
    torch.manual_seed(0)
    x, deepest = torch.randn(2, c_in, s_in, s_in), torch.randn(2, c_out, s_out, s_out)
    head = SectionHead.from_example(x, deepest, num_classes=10)
    logits, feat = head(x)
    assert logits.shape == (2, 10) and feat.shape == deepest.shape
    convs = [m for m in head.bottleneck if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == n_convs and convs[0].in_channels == c_in and convs[-1].out_channels == c_out


def test_section_head_channels_grow_geometrically_and_train():
    head = SectionHead(16, 64, 32, 8, num_classes=5)
    widths = [m.out_channels for m in head.bottleneck if isinstance(m, torch.nn.Conv2d)]
    assert widths == [32, 64]
    x = torch.randn(2, 16, 32, 32)
    logits, feat = head(x)
    loss = byot_loss([logits, torch.randn(2, 5)], [feat, torch.randn_like(feat)], torch.tensor([0, 4]))
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_section_head_rejects_non_power_of_two_ratio():
    with pytest.raises(ValueError):
        SectionHead(8, 16, 12, 8, num_classes=10)
    with pytest.raises(ValueError):
        SectionHead(8, 16, 24, 8, num_classes=10)
