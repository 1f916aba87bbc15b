"""Progressive distillation: snapshot schedule and joint teacher-student loss (zoo.losses.progressive)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.progressive import joint_progressive_loss, snapshot_index

LN3 = math.log(3.0)


@pytest.mark.parametrize("epoch,expected", [(0, 0), (19.999, 0), (20, 1), (39.5, 1), (40, 2), (59.9, 2), (60, 2)])
def test_snapshot_index_equal_stages(epoch, expected):
    assert snapshot_index(epoch, 60, 3) == expected


def test_snapshot_index_fractional_and_single_snapshot():
    assert [snapshot_index(e / 4, 1.0, 4) for e in range(5)] == [0, 1, 2, 3, 3]
    assert snapshot_index(7.3, 10, 1) == 0
    # every stage gets used, in order
    seen = [snapshot_index(e, 200, 7) for e in range(201)]
    assert seen == sorted(seen) and set(seen) == set(range(7))


@pytest.mark.parametrize("args", [(-1, 10, 2), (10.5, 10, 2), (0, 0, 2), (0, 10, 0)])
def test_snapshot_index_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        snapshot_index(*args)


def test_joint_progressive_hand_value():
    # student [0, 0] -> [1/2, 1/2]; teacher [ln3, 0] -> [3/4, 1/4]; label 0; T = 1
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[LN3, 0.0]], dtype=torch.float64)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = math.log(2) + math.log(4 / 3) + kl
    assert joint_progressive_loss(s, t, torch.tensor([0]), T=1.0).item() == pytest.approx(expected, abs=1e-12)
    # T = 2 with teacher [2 ln3, 0]: softened teacher is again [3/4, 1/4], KL scaled by 4
    t2 = torch.tensor([[2 * LN3, 0.0]], dtype=torch.float64)
    expected2 = math.log(2) + math.log(10 / 9) + 4 * kl
    assert joint_progressive_loss(s, t2, torch.tensor([0]), T=2.0).item() == pytest.approx(expected2, abs=1e-12)


def test_joint_progressive_teacher_gets_only_its_own_ce_gradient():
    s = torch.tensor([[0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[LN3, 0.0]], dtype=torch.float64, requires_grad=True)
    joint_progressive_loss(s, t, torch.tensor([0]), T=1.0).backward()
    # teacher: CE_T only -> p_T - y = [-1/4, 1/4] (a KL gradient would add p_T - p_S = [1/4, -1/4])
    assert t.grad.tolist()[0] == pytest.approx([-0.25, 0.25], abs=1e-12)
    # student: (p_S - y) + (p_S - p_T) = [-1/2 - 1/4, 1/2 + 1/4]
    assert s.grad.tolist()[0] == pytest.approx([-0.75, 0.75], abs=1e-12)
