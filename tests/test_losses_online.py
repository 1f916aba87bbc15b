"""Online distillation losses: DML, ONE, OKDDip (zoo.losses.online)."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.online import ONEGate, PeerAttention, dml_loss, okddip_loss, one_loss

LN3 = math.log(3.0)


def _t(*rows: list[float], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


# ------------------------------------------------------------------------------------------------ DML
def test_dml_hand_value_two_students():
    # p1 = [1/2, 1/2], p2 = [3/4, 1/4], label 0, T = 1, K = 2 (1/(K-1) = 1)
    l1, l2 = _t([0.0, 0.0]), _t([LN3, 0.0])
    ce = math.log(2) + math.log(4 / 3)
    kl_2_to_1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL(p2 || p1), student 1's term
    kl_1_to_2 = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)  # KL(p1 || p2), student 2's term
    loss = dml_loss([l1, l2], torch.tensor([0]))
    assert loss.item() == pytest.approx(ce + kl_2_to_1 + kl_1_to_2, abs=1e-12)


def test_dml_three_students_temperature():
    # T = 2, K = 3: l1 = [2 ln3, 0] -> softmax(l1/2) = [3/4, 1/4]; l2 = l3 = [0, 0] -> [1/2, 1/2]
    l1, l2, l3 = _t([2 * LN3, 0.0]), _t([0.0, 0.0]), _t([0.0, 0.0])
    ce = -math.log(9 / 10) + 2 * math.log(2)
    kl_u_a = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(uniform || [3/4, 1/4])
    kl_a_u = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    # student 1: (KL(u||a) + KL(u||a)) / 2; students 2, 3: (KL(a||u) + 0) / 2 each; all scaled by T^2 = 4
    expected = ce + 4 * (kl_u_a + kl_a_u)
    assert dml_loss([l1, l2, l3], torch.tensor([0]), T=2.0).item() == pytest.approx(expected, abs=1e-12)


def test_dml_agreeing_students_reduce_to_sum_of_ce():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 4])
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    assert dml_loss([logits.clone() for _ in range(3)], labels, T=3.0).item() == pytest.approx(3 * ce, abs=1e-12)


def test_dml_peers_are_detached_in_each_students_kl():
    # grad wrt l1 = (p1 - y) + (p1 - p2) only; without the detach KL(p1||p2) would add to it
    l1, l2 = _t([0.0, 0.0], grad=True), _t([LN3, 0.0], grad=True)
    dml_loss([l1, l2], torch.tensor([0])).backward()
    assert l1.grad.tolist()[0] == pytest.approx([-0.5 - 0.25, 0.5 + 0.25], abs=1e-12)
    # grad wrt l2 = (p2 - y) + (p2 - p1) = [-1/4 + 1/4, 1/4 - 1/4]
    assert l2.grad.tolist()[0] == pytest.approx([0.0, 0.0], abs=1e-12)


def test_dml_rejects_single_student():
    with pytest.raises(ValueError):
        dml_loss([torch.zeros(1, 2)], torch.tensor([0]))


# ------------------------------------------------------------------------------------------------ ONE
def test_one_gate_shapes_and_simplex():
    torch.manual_seed(0)
    gate = ONEGate(8, 3)
    g4 = gate(torch.randn(4, 8, 5, 5))
    g2 = gate(torch.randn(4, 8))
    for g in (g4, g2):
        assert g.shape == (4, 3)
        assert torch.all(g > 0)
        assert torch.allclose(g.sum(dim=1), torch.ones(4))
    layers = [type(m).__name__ for m in gate.children()]
    assert layers == ["Linear", "BatchNorm1d"]


def test_one_loss_hand_value():
    # z1 = [ln3, 0] -> [3/4, 1/4]; z2 = [-ln3, 0] -> [1/4, 3/4]; g = [1/2, 1/2] -> z_e = [0, 0]; label 0; T = 1
    z1, z2 = _t([LN3, 0.0]), _t([-LN3, 0.0])
    g = _t([0.5, 0.5])
    ce = math.log(4 / 3) + math.log(4) + math.log(2)
    kl = 2 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert one_loss([z1, z2], g, torch.tensor([0]), T=1.0).item() == pytest.approx(ce + kl, abs=1e-12)


def test_one_loss_temperature_scaling():
    # T = 2: z1 / 2 = [ln3, 0], z2 / 2 = [-ln3, 0], z_e = 0; KL terms as above times T^2 = 4
    z1, z2 = _t([2 * LN3, 0.0]), _t([-2 * LN3, 0.0])
    g = _t([0.5, 0.5])
    ce = math.log(1 + 1 / 9) + math.log(10) + math.log(2)
    kl = 2 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25))
    assert one_loss([z1, z2], g, torch.tensor([0]), T=2.0).item() == pytest.approx(ce + 4 * kl, abs=1e-12)


def test_one_ensemble_is_detached_in_kl():
    z1, z2 = _t([LN3, 0.0], grad=True), _t([-LN3, 0.0], grad=True)
    g = _t([0.5, 0.5], grad=True)
    one_loss([z1, z2], g, torch.tensor([0]), T=1.0).backward()
    # the gate only sees CE(z_e): d/dg_b = (p_e - y) . z_b with p_e - y = [-1/2, 1/2]
    assert g.grad.tolist()[0] == pytest.approx([-0.5 * LN3, 0.5 * LN3], abs=1e-12)
    # branch 1: CE -> p1 - y; CE(z_e) -> g1 (p_e - y); KL(p_e || p1) -> p1 - p_e
    expected = [(0.75 - 1) + 0.5 * -0.5 + (0.75 - 0.5), 0.25 + 0.5 * 0.5 + (0.25 - 0.5)]
    assert z1.grad.tolist()[0] == pytest.approx(expected, abs=1e-12)


def test_one_loss_trains_gate_end_to_end():
    torch.manual_seed(0)
    gate = ONEGate(6, 2)
    trunk = torch.randn(4, 6, 3, 3)
    branches = [torch.randn(4, 5, requires_grad=True) for _ in range(2)]
    one_loss(branches, gate(trunk), torch.tensor([0, 1, 2, 3])).backward()
    assert gate.fc.weight.grad is not None and torch.isfinite(gate.fc.weight.grad).all()
    assert all(b.grad is not None for b in branches)


# ------------------------------------------------------------------------------------------------ OKDDip
def test_peer_attention_rows_sum_to_one_and_zero_init_is_uniform():
    torch.manual_seed(0)
    att = PeerAttention(6, 4)
    feats = [torch.randn(3, 6) for _ in range(4)]
    alpha = att(feats)
    assert alpha.shape == (3, 4, 4)
    assert torch.allclose(alpha.sum(dim=-1), torch.ones(3, 4))
    assert torch.allclose(att(torch.stack(feats, 1)), alpha)
    torch.nn.init.zeros_(att.query.weight)
    assert torch.allclose(att(feats), torch.full((3, 4, 4), 0.25))


def test_peer_attention_hand_value_and_asymmetry():
    att = PeerAttention(2, 2)
    with torch.no_grad():
        att.query.weight.copy_(torch.eye(2))
        att.key.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))  # E(h) = [h_2, 0]
    h1, h2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    alpha = att([h1, h2])[0]
    # scores: row 1 = [L(h1).E(h1), L(h1).E(h2)] = [0, 1]; row 2 = [0, 0]
    e = math.e
    assert alpha[0].tolist() == pytest.approx([1 / (1 + e), e / (1 + e)], abs=1e-6)
    assert alpha[1].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


def test_okddip_hand_value_identity_and_swap():
    z1, z2, zl = _t([LN3, 0.0]), _t([-LN3, 0.0]), _t([0.0, 0.0])
    y = torch.tensor([0])
    ce = math.log(4 / 3) + math.log(4) + math.log(2)
    # identity attention: each peer's target is itself -> level 1 = 0; peer mean = [0, 0] = leader -> level 2 = 0
    eye = torch.eye(2, dtype=torch.float64).unsqueeze(0)
    assert okddip_loss([z1, z2], zl, eye, y, T=1.0).item() == pytest.approx(ce, abs=1e-12)
    # swapped attention: KL(p2 || p1) + KL(p1 || p2) = 2 * (1/2) ln 3
    swap = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64)
    assert okddip_loss([z1, z2], zl, swap, y, T=1.0).item() == pytest.approx(ce + LN3, abs=1e-12)
    # beta / gamma weights, 2-D attention broadcast over the batch
    assert okddip_loss([z1, z2], zl, swap[0], y, T=1.0, beta=0.5).item() == pytest.approx(ce + 0.5 * LN3, abs=1e-12)


def test_okddip_leader_distils_from_peer_mean():
    # peers [ln3, 0] and [ln3, 0] -> mean [ln3, 0]; leader [0, 0]; identity attention; T = 1
    z1, z2, zl = _t([LN3, 0.0]), _t([LN3, 0.0]), _t([0.0, 0.0])
    eye = torch.eye(2, dtype=torch.float64)
    ce = 2 * math.log(4 / 3) + math.log(2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert okddip_loss([z1, z2], zl, eye, torch.tensor([0]), T=1.0, gamma=2.0).item() == \
        pytest.approx(ce + 2 * kl, abs=1e-12)


def test_okddip_targets_detached_attention_not():
    z1, z2, zl = _t([LN3, 0.0], grad=True), _t([-LN3, 0.0], grad=True), _t([0.0, 0.0], grad=True)
    swap = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    okddip_loss([z1, z2], zl, swap, torch.tensor([0]), T=1.0).backward()
    # peer 1: CE -> p1 - y = [-1/4, 1/4]; own KL -> p1 - p2 = [1/2, -1/2]; nothing from peer 2's KL or the leader's
    assert z1.grad.tolist()[0] == pytest.approx([0.25, -0.25], abs=1e-12)
    # peer 2: p2 - y = [-3/4, 3/4]; p2 - p1 = [-1/2, 1/2]
    assert z2.grad.tolist()[0] == pytest.approx([-1.25, 1.25], abs=1e-12)
    assert zl.grad.tolist()[0] == pytest.approx([-0.5, 0.5], abs=1e-12)
    assert swap.grad is not None and swap.grad.abs().sum() > 0


def test_okddip_trains_attention_end_to_end():
    torch.manual_seed(0)
    att = PeerAttention(4, 3)
    feats = [torch.randn(5, 4) for _ in range(3)]
    peers = [torch.randn(5, 6, requires_grad=True) for _ in range(3)]
    leader = torch.randn(5, 6, requires_grad=True)
    okddip_loss(peers, leader, att(feats), torch.arange(5)).backward()
    assert att.query.weight.grad is not None and att.key.weight.grad.abs().sum() > 0
