"""Relational KD losses (zoo.losses.relations): hand-computed values, invariants, gradient flow, CRD memory."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from zoo.losses.relations import (
    ContrastMemory,
    CRDHead,
    CRDLoss,
    crd_loss,
    crd_nce_loss,
    irg_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
    spkd_loss,
)

# Three 2-D point sets used by the hand computations.
LINE_013 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])  # distances d01=1, d02=3, d12=2; μ=2
LINE_012 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # evenly spaced points on a line
TRI_345 = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # 3-4-5 right triangle; μ=4
RIGHT_ISO = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # right isosceles triangle


def _close(value: torch.Tensor, expected: float, tol: float = 1e-5) -> None:
    assert value.dim() == 0
    assert value.item() == pytest.approx(expected, abs=tol), (value.item(), expected)


def _assert_teacher_gets_no_grad(loss_fn, student: torch.Tensor, teacher: torch.Tensor) -> None:
    student = student.clone().requires_grad_(True)
    teacher = teacher.clone().requires_grad_(True)
    loss = loss_fn(student, teacher)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- RKD


def test_rkd_distance_by_hand():
    # teacher ψ = (1, 3, 2) / 2 = (0.5, 1.5, 1.0); student ψ = (3, 4, 5) / 4 = (0.75, 1.0, 1.25)
    # differences (0.25, -0.5, 0.25), all |d| <= 1 -> Huber 0.5 d² = (0.03125, 0.125, 0.03125)
    # each unordered pair twice (0.375), averaged over all N² = 9 ordered pairs, the 3 with i = j adding 0
    # (the authors' normalisation): 0.375 / 9 = 1/24
    _close(rkd_distance_loss(TRI_345, LINE_013), 1.0 / 24.0)


def test_rkd_angle_by_hand_covers_both_huber_branches():
    # student on a line: cos at vertex 0 = 1, at the middle vertex 1 = -1, at vertex 2 = 1
    # teacher right isosceles: cos at (0,0) = 0, at (1,0) and (0,1) = √2/2
    # differences: 1 -> 0.5;  -1 - √2/2 (|d| > 1) -> |d| - 0.5 = 0.5 + √2/2;  1 - √2/2 -> 0.5 (1 - √2/2)²
    # sum = 1.75 exactly; each vertex appears in 2 ordered triplets (3.5), averaged over all N³ = 27 ordered
    # triplets, those with a repeated index adding 0 (the authors' normalisation): 3.5 / 27 = 7/54
    _close(rkd_angle_loss(LINE_012, RIGHT_ISO), 7.0 / 54.0)


def test_rkd_combined_by_hand():
    # distance part 1/24 (above); angle: student 3-4-5 cosines (0, 0.6, 0.8) vs teacher line (1, -1, 1)
    # differences (-1, 1.6, -0.2) -> Huber (0.5, 1.1, 0.02), 2 ordered triplets each: 3.24 / 27 = 0.12.
    # 25/24 + 50 * 0.12 = 7.041667
    _close(rkd_loss(TRI_345, LINE_013), 25.0 / 24.0 + 50.0 * 0.12, tol=1e-4)
    _close(rkd_loss(TRI_345, LINE_013, w_distance=1.0, w_angle=0.0), 1.0 / 24.0)
    _close(rkd_loss(TRI_345, LINE_013, w_distance=0.0, w_angle=1.0), 0.12)


@pytest.mark.parametrize("fn", [rkd_distance_loss, rkd_angle_loss, rkd_loss])
def test_rkd_zero_when_equal_and_scale_invariant(fn):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g)
    t = torch.randn(6, 7, generator=g)  # different dims
    assert fn(s, s).item() == pytest.approx(0.0, abs=1e-6)
    base = fn(s, t)
    assert base.item() > 0
    assert fn(3.7 * s, t).item() == pytest.approx(base.item(), rel=1e-5)
    assert fn(s, 0.2 * t).item() == pytest.approx(base.item(), rel=1e-5)


@pytest.mark.parametrize("fn", [rkd_distance_loss, rkd_angle_loss, rkd_loss])
def test_rkd_accepts_feature_maps_and_teacher_gets_no_grad(fn):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 2, 3, 3, generator=g)
    t = torch.randn(4, 8, generator=g)
    assert fn(s, t).item() == pytest.approx(fn(s.flatten(1), t).item(), rel=1e-6)
    _assert_teacher_gets_no_grad(fn, s, t)


def test_rkd_small_batches_and_duplicates_are_finite():
    s = torch.randn(2, 4, requires_grad=True)
    assert rkd_angle_loss(s, torch.randn(2, 4)).item() == 0.0  # no triplet in a batch of 2
    dup = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0], [3.0, 1.0]], requires_grad=True)
    loss = rkd_loss(dup, torch.randn(4, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(dup.grad).all()


def test_rkd_same_under_autocast():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = rkd_loss(s, t)
    assert amp.dtype == torch.float32
    assert amp.item() == pytest.approx(rkd_loss(s, t).item(), rel=1e-6)


# ----------------------------------------------------------------------------- SP


def test_spkd_by_hand():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    s = torch.tensor([e1, e2, e1])  # G̃ = [[1,0,1],[0,1,0],[1,0,1]] -> G = [[a,0,a],[0,1,0],[a,0,a]], a = 1/√2
    t = torch.tensor([e1, e1, e2])  # G̃ = [[1,1,0],[1,1,0],[0,0,1]] -> G = [[a,a,0],[a,a,0],[0,0,1]]
    # G_T - G_S rows: (0, a, -a), (a, a-1, 0), (-a, 0, 1-a); squared sum = 1 + 2 (0.5 + (1-a)²)
    # (1-a)² = 1.5 - √2, so ‖·‖²_F = 5 - 2√2 and the loss is (5 - 2√2) / 3²
    _close(spkd_loss(s, t), (5.0 - 2.0 * math.sqrt(2.0)) / 9.0)


def test_spkd_invariants_and_pairs():
    g = torch.Generator().manual_seed(3)
    s1, t1 = torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 5, 2, 2, generator=g)
    s2, t2 = torch.randn(4, 6, generator=g), torch.randn(4, 3, generator=g)
    assert spkd_loss(s1, s1).item() == pytest.approx(0.0, abs=1e-7)
    base = spkd_loss(s1, t1)
    assert base.item() > 0
    assert spkd_loss(5.0 * s1, t1).item() == pytest.approx(base.item(), rel=1e-5)
    assert spkd_loss(s1, 0.1 * t1).item() == pytest.approx(base.item(), rel=1e-5)
    summed = spkd_loss([s1, s2], [t1, t2])
    assert summed.item() == pytest.approx(base.item() + spkd_loss(s2, t2).item(), rel=1e-6)
    with pytest.raises(ValueError):
        spkd_loss([s1, s2], [t1])


def test_spkd_teacher_gets_no_grad():
    g = torch.Generator().manual_seed(4)
    _assert_teacher_gets_no_grad(spkd_loss, torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 3, 2, 2, generator=g))
    s = torch.randn(4, 6, generator=g, requires_grad=True)
    t = torch.randn(4, 6, generator=g, requires_grad=True)
    spkd_loss([s], [t]).backward()
    assert t.grad is None and s.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- IRG


def test_irg_vertex_by_hand():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = t + torch.tensor([1.0, 0.0])  # every element error is 1 in column 0, 0 in column 1
    # MSE = 3 * 1² / 6 = 0.5
    _close(irg_loss([s], [t], w_vertex=1.0, w_edge=0.0, w_transform=0.0), 0.5)


def test_irg_edge_by_hand():
    # normalised: teacher (1, 3, 2)/2, student (3, 4, 5)/4; differences (0.25, -0.5, 0.25), each twice
    # in the 3x3 matrix: 2 (0.0625 + 0.25 + 0.0625) / 9 = 1/12
    _close(irg_loss([TRI_345], [LINE_013], w_vertex=0.0, w_edge=1.0, w_transform=0.0), 1.0 / 12.0)
    # raw distances: differences (2, 1, 3) -> 2 (4 + 1 + 9) / 9 = 28/9
    raw = irg_loss([TRI_345], [LINE_013], w_vertex=0.0, w_edge=1.0, w_transform=0.0, normalize=False)
    _close(raw, 28.0 / 9.0)


def test_irg_transformation_by_hand():
    # teacher per-instance distances layer1 -> layer2: (1, 2, 3), mean 2 -> (0.5, 1, 1.5)
    t1, t2 = LINE_013, torch.tensor([[0.0, 1.0], [1.0, 2.0], [3.0, 3.0]])
    # student: (2, 2, 2) -> (1, 1, 1); squared differences (0.25, 0, 0.25), mean 1/6
    s1, s2 = torch.zeros(3, 2), torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    _close(irg_loss([s1, s2], [t1, t2], w_vertex=0.0, w_edge=0.0, w_transform=1.0), 1.0 / 6.0)


def test_irg_transformation_pools_when_shapes_differ():
    # teacher layer 1: (3, 4, 2, 2), channels constant at (1, 3, 5, 7) -> pooled (3, 4) -> channel pairs (2, 6)
    t1 = torch.tensor([1.0, 3.0, 5.0, 7.0])[None, :, None, None].expand(3, 4, 2, 2).clone()
    t2 = torch.tensor([2.0, 6.0]) + torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])  # distances (1, 2, 3)
    # student layer 1: (3, 2, 3, 3), channels constant at (2, 6); layer 2 offset by (2, 0): distances (2, 2, 2)
    s1 = torch.tensor([2.0, 6.0])[None, :, None, None].expand(3, 2, 3, 3).clone()
    s2 = torch.tensor([2.0, 6.0]) + torch.tensor([[2.0, 0.0]] * 3)
    _close(irg_loss([s1, s2], [t1, t2], w_vertex=0.0, w_edge=0.0, w_transform=1.0), 1.0 / 6.0)


def _irg_layers(g: torch.Generator, channels: tuple[int, int]) -> list[torch.Tensor]:
    return [torch.randn(4, channels[0], 4, 4, generator=g), torch.randn(4, channels[1], 2, 2, generator=g),
            torch.randn(4, 10, generator=g)]


def test_irg_zero_when_equal_sum_of_terms_and_no_teacher_grad():
    g = torch.Generator().manual_seed(5)
    s, t = _irg_layers(g, (3, 5)), _irg_layers(g, (6, 8))
    assert irg_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)
    parts = [irg_loss(s, t, w_vertex=1.0, w_edge=0.0, w_transform=0.0),
             irg_loss(s, t, w_vertex=0.0, w_edge=1.0, w_transform=0.0),
             irg_loss(s, t, w_vertex=0.0, w_edge=0.0, w_transform=1.0)]
    assert all(p.item() > 0 for p in parts)
    assert irg_loss(s, t, 2.0, 3.0, 4.0).item() == pytest.approx(
        2 * parts[0].item() + 3 * parts[1].item() + 4 * parts[2].item(), rel=1e-5)
    s = [x.requires_grad_(True) for x in s]
    t = [x.requires_grad_(True) for x in t]
    irg_loss(s, t).backward()
    assert all(x.grad is None for x in t)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s)


def test_irg_rejects_mismatched_layers():
    with pytest.raises(ValueError):
        irg_loss([torch.randn(3, 2)], [torch.randn(3, 2), torch.randn(3, 2)])
    with pytest.raises(ValueError):
        irg_loss([torch.randn(3, 2)], [torch.randn(3, 4)])  # vertex term needs equal last layers


# ----------------------------------------------------------------------------- CRD


def test_crd_nce_by_hand():
    # K = 2 negatives, M = 4: noise K/M = 0.5
    # student side x = (1.5, 0.5, 0): h+ = 1.5/2 = 0.75, 1-h = 0.5/1 = 0.5 and 0.5/0.5 = 1
    student = torch.tensor([[1.5, 0.5, 0.0]])
    _close(crd_nce_loss(student, n_data=4), -(math.log(0.75) + math.log(0.5)))
    # teacher side x = (1, 1, 1): h+ = 1/1.5 = 2/3, each 1-h = 0.5/1.5 = 1/3
    teacher = torch.tensor([[1.0, 1.0, 1.0]])
    expected = -(math.log(0.75) + math.log(0.5)) - (math.log(2.0 / 3.0) + 2.0 * math.log(1.0 / 3.0))
    _close(crd_loss(student, teacher, n_data=4), expected)


def _set_rows(memory: torch.Tensor, row: list[float]) -> None:
    memory.copy_(torch.tensor(row).expand_as(memory))


def test_contrast_memory_scores_and_z_by_hand():
    torch.manual_seed(0)
    mem = ContrastMemory(feat_dim=2, n_data=5, n_negatives=2, temperature=0.5)
    _set_rows(mem.memory_teacher, [1.0, 0.0])
    _set_rows(mem.memory_student, [0.0, 1.0])
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    s_scores, t_scores = mem(s, t, torch.tensor([0, 3]), torch.Generator().manual_seed(0))
    # every student score is exp(<e1, e1>/0.5) = e², so Z_s = 5 e² and each score is 1/5
    assert mem.z_student.item() == pytest.approx(5.0 * math.exp(2.0), rel=1e-6)
    assert mem.z_teacher.item() == pytest.approx(5.0 * math.exp(1.6), rel=1e-6)  # <(.6,.8), e2>/0.5 = 1.6
    assert torch.allclose(s_scores, torch.full((2, 3), 0.2)) and torch.allclose(t_scores, torch.full((2, 3), 0.2))
    # Z is fixed once estimated: with Z_s set to 2, a score is exp(<(.6,.8), e1>/0.5) / 2 = exp(1.2) / 2
    _set_rows(mem.memory_teacher, [1.0, 0.0])
    mem.z_student.fill_(2.0)
    s_scores, _ = mem(t, t, torch.tensor([1, 2]))
    assert torch.allclose(s_scores, torch.full((2, 3), math.exp(1.2) / 2.0))
    assert mem.z_student.item() == 2.0


def test_contrast_memory_momentum_update_by_hand():
    torch.manual_seed(0)
    mem = ContrastMemory(feat_dim=2, n_data=5, n_negatives=2, momentum=0.5)
    _set_rows(mem.memory_student, [1.0, 0.0])
    mem(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 2]))
    # normalise(0.5 e1 + 0.5 e2) = (1/√2, 1/√2) for rows 0 and 2; the others keep e1
    a = 1.0 / math.sqrt(2.0)
    expected = torch.tensor([[a, a], [1.0, 0.0], [a, a], [1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(mem.memory_student, expected, atol=1e-6)


def test_contrast_memory_updates_only_batch_rows_and_keeps_unit_norm():
    torch.manual_seed(0)
    mem = ContrastMemory(feat_dim=4, n_data=50, n_negatives=8)
    before_s, before_t = mem.memory_student.clone(), mem.memory_teacher.clone()
    idx = torch.tensor([3, 17, 42])
    s = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    t = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    s_scores, t_scores = mem(s, t, idx)
    assert s_scores.shape == t_scores.shape == (3, 9)
    others = torch.ones(50, dtype=torch.bool)
    others[idx] = False
    for before, after in ((before_s, mem.memory_student), (before_t, mem.memory_teacher)):
        assert not after.requires_grad
        assert torch.equal(before[others], after[others])
        assert (before[idx] - after[idx]).abs().amax(dim=1).min() > 1e-3
        assert torch.allclose(after.norm(dim=1), torch.ones(50), atol=1e-5)
    crd_loss(s_scores, t_scores, 50).backward()
    assert s.grad.abs().sum() > 0 and t.grad.abs().sum() > 0


def test_contrast_memory_negative_sampling():
    mem = ContrastMemory(feat_dim=2, n_data=10, n_negatives=9)
    idx = torch.arange(10)
    rows = mem.sample(idx, torch.Generator().manual_seed(7))
    assert torch.equal(rows[:, 0], idx)
    assert (rows[:, 1:] != idx[:, None]).all() and rows.min() >= 0 and rows.max() < 10
    assert torch.equal(rows, mem.sample(idx, torch.Generator().manual_seed(7)))
    more = ContrastMemory(feat_dim=2, n_data=10, n_negatives=30).sample(idx, torch.Generator().manual_seed(7))
    assert (more[:, 1:] != idx[:, None]).all()  # negatives are drawn with replacement, as RepDistiller does
    with pytest.raises(ValueError):
        ContrastMemory(feat_dim=2, n_data=10, n_negatives=0)


def test_crd_equal_embeddings_beat_random_ones():
    torch.manual_seed(0)
    n_data, dim = 50, 8
    bank = F.normalize(torch.randn(n_data, dim), dim=1)
    mem = ContrastMemory(feat_dim=dim, n_data=n_data, n_negatives=8)
    everything = torch.arange(n_data)
    for _ in range(6):  # fill both banks with the embeddings of the (fixed) dataset
        mem(bank, bank, everything)
    g = torch.Generator().manual_seed(1)
    equal, rand = [], []
    for _ in range(5):
        idx = torch.randperm(n_data, generator=g)[:10]
        noise = F.normalize(torch.randn(10, dim, generator=g), dim=1)
        equal.append(crd_loss(*copy.deepcopy(mem)(bank[idx], bank[idx], idx, torch.Generator().manual_seed(2)), n_data))
        rand.append(crd_loss(*copy.deepcopy(mem)(noise, bank[idx], idx, torch.Generator().manual_seed(2)), n_data))
    equal_mean, rand_mean = torch.stack(equal).mean(), torch.stack(rand).mean()
    assert torch.isfinite(equal_mean) and torch.isfinite(rand_mean)
    assert equal_mean < rand_mean


def test_crd_state_dict_resumes_exactly():
    torch.manual_seed(0)
    a = CRDLoss(student_shape=(2, 3, 3), teacher_shape=6, n_data=50, feat_dim=4, n_negatives=8)
    x_s, x_t = torch.randn(5, 2, 3, 3), torch.randn(5, 6)
    a(x_s, x_t, torch.arange(5), torch.Generator().manual_seed(0))
    state = a.state_dict()
    for key in ("memory.memory_student", "memory.memory_teacher", "memory.z_student", "memory.z_teacher"):
        assert key in state
    assert state["memory.memory_student"].shape == (50, 4) and state["memory.z_student"].item() > 0
    torch.manual_seed(123)
    b = CRDLoss(student_shape=(2, 3, 3), teacher_shape=6, n_data=50, feat_dim=4, n_negatives=8)
    b.load_state_dict(state)
    idx = torch.tensor([10, 20, 30, 40, 49])
    la = a(x_s, x_t, idx, torch.Generator().manual_seed(1))
    lb = b(x_s, x_t, idx, torch.Generator().manual_seed(1))
    assert torch.equal(la, lb)
    assert torch.equal(a.memory.memory_teacher, b.memory.memory_teacher)


def test_crd_loss_module_gradients():
    torch.manual_seed(0)
    crd = CRDLoss(student_shape=(2, 3, 3), teacher_shape=(4, 2, 2), n_data=50, feat_dim=4, n_negatives=8)
    x_s = torch.randn(6, 2, 3, 3, requires_grad=True)
    x_t = torch.randn(6, 4, 2, 2, requires_grad=True)
    loss = crd(x_s, x_t, torch.arange(6))
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert x_t.grad is None
    assert x_s.grad is not None and x_s.grad.abs().sum() > 0
    assert crd.embed_teacher.linear.weight.grad.abs().sum() > 0  # the teacher's head g_T is trained
    assert crd.embed_student.linear.weight.grad.abs().sum() > 0


def test_crd_head_probes_dims_and_normalises():
    head = CRDHead((3, 2, 2), feat_dim=5)
    assert head.linear.in_features == 12 and CRDHead(7).linear.in_features == 7
    out = head(torch.randn(4, 3, 2, 2))
    assert out.shape == (4, 5) and torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-6)
