"""Tests for zoo.losses.features: values worked out by hand, invariants, teacher isolation, errors."""
from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.features import (
    FeatureSelection,
    afd_loss,
    at_loss,
    attention_map,
    fitnet_loss,
    fsp_loss,
    fsp_matrix,
    grouped_mean_weights,
)

CH0 = [[1.0, 2.0], [3.0, 4.0]]
CH1 = [[0.0, 1.0], [-1.0, 2.0]]


def student_map(requires_grad: bool = True) -> torch.Tensor:
    """1x2x2x2 feature map with channels CH0 and CH1."""
    return torch.tensor([[CH0, CH1]], requires_grad=requires_grad)


def assert_teacher_isolated(loss: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


# ---------------------------------------------------------------- fitnet_loss

def test_fitnet_matches_hand_value():
    s = torch.arange(8.0).view(1, 2, 2, 2)
    t = torch.ones(1, 2, 2, 2)
    expected = sum((v - 1.0) ** 2 for v in range(8)) / 8  # mean over all 8 elements = 11.5
    assert fitnet_loss(s, t).item() == pytest.approx(expected)
    assert expected == 11.5


def test_fitnet_zero_when_equal_positive_otherwise():
    s = student_map()
    assert fitnet_loss(s.detach().clone(), s).item() == 0.0
    assert fitnet_loss(s, s.detach() + 0.1).item() > 0


def test_fitnet_no_grad_to_teacher():
    s, t = student_map(), torch.ones(1, 2, 2, 2, requires_grad=True)
    assert_teacher_isolated(fitnet_loss(s, t), s, t)


def test_fitnet_shape_error_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 2\).*\(1, 3, 2, 2\)"):
        fitnet_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))


# ---------------------------------------------------------------- attention transfer

def hand_attention(channels: list[list[list[float]]], p: int) -> list[float]:
    flat = [[v for row in ch for v in row] for ch in channels]
    q = [sum(abs(ch[k]) ** p for ch in flat) for k in range(len(flat[0]))]
    norm = math.sqrt(sum(v * v for v in q))
    return [v / norm for v in q]


def test_attention_map_hand_values():
    q2 = attention_map(student_map(False), p=2)
    # sum_c A_c^2 = [1+0, 4+1, 9+1, 16+4] = [1, 5, 10, 20]
    expected = [v / math.sqrt(1 + 25 + 100 + 400) for v in (1, 5, 10, 20)]
    assert q2.shape == (1, 4)
    assert q2[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert q2[0].tolist() == pytest.approx(hand_attention([CH0, CH1], 2), rel=1e-6)
    q1 = attention_map(student_map(False), p=1)  # |A| summed: [1, 3, 4, 6]
    assert q1[0].tolist() == pytest.approx([v / math.sqrt(1 + 9 + 16 + 36) for v in (1, 3, 4, 6)], rel=1e-6)


def test_at_loss_hand_values_batch_and_pairs():
    ones = [[1.0, 1.0], [1.0, 1.0]]
    s = torch.tensor([[CH0, CH1], [ones, ones]], requires_grad=True)  # 2 samples, 2 channels
    t = torch.tensor([[ones], [ones]])  # 1 channel: channel counts may differ
    q_s = hand_attention([CH0, CH1], 2)
    d0 = [a - 0.5 for a in q_s]  # Q_T = [1,1,1,1]/2; sample 1 matches exactly
    norm_loss = (math.sqrt(sum(d * d for d in d0)) + 0.0) / 2
    sq_loss = sum(d * d for d in d0) / 8  # mean over 2 samples x 4 positions
    assert at_loss([s], [t]).item() == pytest.approx(norm_loss, rel=1e-5)
    assert at_loss([s], [t], squared=True).item() == pytest.approx(sq_loss, rel=1e-5)
    assert at_loss([s, s], [t, t]).item() == pytest.approx(2 * norm_loss, rel=1e-5)  # sum over pairs


def test_at_loss_zero_for_same_attention_and_finite_grad():
    s = student_map()
    t = (3.0 * s.detach()).requires_grad_(True)  # attention maps are scale invariant
    loss = at_loss([s], [t])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert t.grad is None
    assert at_loss([student_map()], [torch.ones(1, 1, 2, 2)]).item() > 0


def test_at_loss_no_grad_to_teacher():
    s, t = student_map(), torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert_teacher_isolated(at_loss([s], [t]), s, t)


def test_at_loss_errors():
    s = student_map(False)
    with pytest.raises(ValueError, match=r"spatial.*\(1, 2, 2, 2\).*\(1, 2, 4, 4\)"):
        at_loss([s], [torch.zeros(1, 2, 4, 4)])
    with pytest.raises(ValueError, match="2 student"):
        at_loss([s, s], [s])
    with pytest.raises(ValueError, match="at least one"):
        at_loss([], [])


# ---------------------------------------------------------------- FSP

DIAG = [[1.0, 0.0], [0.0, 1.0]]


def test_fsp_matrix_hand_values():
    f1 = student_map(False)
    f2 = torch.tensor([[DIAG]])
    g = fsp_matrix(f1, f2)
    assert g.shape == (1, 2, 1)
    # G_00 = (1*1 + 2*0 + 3*0 + 4*1) / 4 ; G_10 = (0*1 + 1*0 + (-1)*0 + 2*1) / 4
    assert g[0, :, 0].tolist() == pytest.approx([5 / 4, 2 / 4])
    assert fsp_matrix(f2, f1)[0, 0].tolist() == pytest.approx([5 / 4, 2 / 4])


def test_fsp_matrix_pools_larger_map():
    f1 = student_map(False)
    block = torch.kron(torch.tensor(DIAG), torch.ones(2, 2))  # 4x4, 2x2 block means = DIAG
    zero_mean = torch.kron(torch.ones(2, 2), torch.tensor([[0.3, -0.3], [-0.3, 0.3]]))
    big = (block + zero_mean).view(1, 1, 4, 4)
    assert fsp_matrix(f1, big)[0, :, 0].tolist() == pytest.approx([5 / 4, 2 / 4], rel=1e-6)


def test_fsp_loss_hand_value():
    f1 = student_map()
    f2 = torch.tensor([[DIAG]])
    t1 = torch.ones(1, 2, 2, 2, requires_grad=True)
    # G_S = [5/4, 1/2], G_T = [(1+1)/4, (1+1)/4] = [1/2, 1/2]; pair 2 identical -> 0
    pair1 = (5 / 4 - 1 / 2) ** 2 + (1 / 2 - 1 / 2) ** 2
    loss = fsp_loss([(f1, f2), (f1, f1)], [(t1, f2), (f1.detach(), f1.detach())])
    assert loss.item() == pytest.approx((pair1 + 0.0) / 2)
    assert_teacher_isolated(loss, f1, t1)


def test_fsp_loss_zero_when_equal():
    f1 = student_map()
    assert fsp_loss([(f1, f1)], [(f1.detach(), f1.detach())]).item() == 0.0


def test_fsp_errors():
    f1 = student_map(False)
    with pytest.raises(ValueError, match=r"\(1, 2, 2\).*\(1, 3, 2\)"):
        fsp_loss([(f1, f1)], [(torch.zeros(1, 3, 2, 2), f1)])
    with pytest.raises(ValueError, match="batch"):
        fsp_matrix(f1, torch.zeros(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fsp_matrix(torch.zeros(2, 2, 2), f1)


# ---------------------------------------------------------------- AFD

def test_grouped_mean_weights():
    assert grouped_mean_weights(4, 2).tolist() == [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    w = grouped_mean_weights(5, 2)  # groups {0,1,2} and {3,4}
    assert torch.allclose(w, torch.tensor([[1 / 3] * 3 + [0.0, 0.0], [0.0, 0.0, 0.0, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="num_maps"):
        grouped_mean_weights(2, 3)


def test_feature_selection_shapes_and_weights():
    sel = FeatureSelection(4, 3)
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    assert sel(x).shape == (2, 3, 5, 5)
    w = sel.weights()
    assert w.shape == (3, 4)
    assert w.sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert torch.allclose(sel(x), x.mean(dim=1, keepdim=True).expand(2, 3, 5, 5), atol=1e-6)  # uniform at init
    fixed = FeatureSelection(4, 2, learnable=False)
    assert list(fixed.parameters()) == []
    assert torch.allclose(fixed(x)[:, 0], x[:, :2].mean(dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="4 channels"):
        sel(torch.zeros(1, 3, 2, 2))


def test_afd_loss_hand_value():
    s = student_map()
    # teacher 1x4x4x4: channel c = arange(16) * (c+1) / 10
    base = torch.arange(16.0).view(4, 4)
    t = torch.stack([base * (c + 1) / 10 for c in range(4)]).unsqueeze(0).requires_grad_(True)
    s_sel, t_sel = FeatureSelection(2, 1), FeatureSelection(4, 1, learnable=False)
    # student: uniform softmax over 2 channels -> (CH0 + CH1) / 2 = [0.5, 1.5, 1.0, 3.0]
    s_map = [(a + b) / 2 for a, b in zip([1, 2, 3, 4], [0, 1, -1, 2])]
    # teacher: channel mean = base * (1+2+3+4)/40 = base/4, then 2x2 block means of base / 4
    blocks = [(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4]
    t_map = [b / 4 for b in blocks]
    expected = sum((a - b) ** 2 for a, b in zip(s_map, t_map)) / 4
    loss = afd_loss(s, t, s_sel, t_sel)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert_teacher_isolated(loss, s, t)
    assert s_sel.logits.grad is not None


def test_afd_zero_when_same_selection_positive_otherwise():
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    fixed = FeatureSelection(4, 2, learnable=False)
    assert afd_loss(x, x, fixed, fixed).item() == 0.0
    assert afd_loss(x, x, FeatureSelection(4, 2), fixed).item() > 0


def test_afd_student_selector_learns_informative_channel():
    g = torch.Generator().manual_seed(2)
    target = torch.randn(4, 1, 3, 3, generator=g)
    s = torch.cat([torch.randn(4, 1, 3, 3, generator=g), target], dim=1)  # channel 1 carries the target
    s_sel, t_sel = FeatureSelection(2, 1), FeatureSelection(1, 1, learnable=False)
    first = afd_loss(s, target, s_sel, t_sel).item()
    for _ in range(30):  # plain gradient descent (torch.optim's first import alone takes ~1 s)
        s_sel.logits.grad = None
        afd_loss(s, target, s_sel, t_sel).backward()
        with torch.no_grad():
            s_sel.logits -= 5.0 * s_sel.logits.grad
    assert afd_loss(s, target, s_sel, t_sel).item() < 0.5 * first
    assert s_sel.weights()[0, 1] > 0.8


def test_afd_errors():
    s, t = torch.zeros(1, 2, 2, 2), torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError, match="fixed teacher selector"):
        afd_loss(s, t, FeatureSelection(2, 1), FeatureSelection(4, 1))
    with pytest.raises(ValueError, match="number of maps"):
        afd_loss(s, t, FeatureSelection(2, 1), FeatureSelection(4, 2, learnable=False))
    with pytest.raises(ValueError, match="batch"):
        afd_loss(s, torch.zeros(2, 4, 2, 2), FeatureSelection(2, 1), FeatureSelection(4, 1, learnable=False))


def test_pearson_loss_matches_mmrazor_and_ignores_scale_and_shift():
    from zoo.losses.features import channel_standardize, pearson_loss

    g = torch.Generator().manual_seed(0)
    s1, t1 = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    s2, t2 = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    t1 = t1 + 0.5 * s1 * 3.0 + 2.0
    # golden value: MMRazor's PKDLoss (open-mmlab/mmrazor mmrazor/models/losses/pkd_loss.py at 0f3117bd94d7),
    # loss_weight 1, run once on these inputs; the second pair's student is resized to the teacher's 8 x 8
    assert pearson_loss([s1, s2], [t1, t2]).item() == pytest.approx(1.0462138652801514, rel=1e-5)
    x = torch.randn(4, 5, 6, 6, generator=g)
    z = channel_standardize(x)
    assert z.transpose(0, 1).reshape(5, -1).mean(1).abs().max() < 1e-5
    # 1 - r: an affine map of each channel (positive scale) costs nothing, the negated map the most (r = -1)
    scale, shift = torch.rand(1, 5, 1, 1, generator=g) + 0.5, torch.randn(1, 5, 1, 1, generator=g)
    assert pearson_loss([x * scale + shift], [x]).item() < 1e-6
    n = x.numel() / 5
    assert pearson_loss([-x], [x]).item() == pytest.approx(2 * (n - 1) / n, rel=1e-4)  # mean (2 z)^2 / 2, unbiased std
    with pytest.raises(ValueError, match="equal batch and channels"):
        pearson_loss([x[:, :4]], [x])
    with pytest.raises(ValueError, match="at least 2 values"):
        pearson_loss([x[:1, :, :1, :1]], [x[:1, :, :1, :1]])
    with pytest.raises(ValueError, match="True or False"):
        pearson_loss([x], [x], resize_student="maybe")


def test_mgd_loss_mask_and_generator():
    from zoo.losses.features import MGDGenerator, mgd_loss, mgd_mask

    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 4, 4)] * 3 + [(2, 3, 8, 8)]:
        torch.randn(*shape, generator=g)  # the draws of the pearson test's inputs, to reach the same a, b
    a, b = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    # golden value: MMRazor's MGDLoss (mmrazor/models/losses/mgd_loss.py at 5c549143166d), alpha_mgd 2e-5
    assert mgd_loss(a, b).item() == pytest.approx(0.002093547722324729, rel=1e-5)
    m = mgd_mask((8, 16, 32, 32), 0.65, torch.Generator().manual_seed(1))
    assert m.shape == (8, 1, 32, 32) and set(m.unique().tolist()) == {0.0, 1.0}
    assert abs((m == 0).float().mean().item() - 0.65) < 0.02
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mgd_mask((1, 1, 2, 2), 1.0)
    gen = MGDGenerator(4, 6)
    x = torch.randn(2, 4, 5, 5, generator=g)
    assert gen(x).shape == (2, 6, 5, 5)
    # a fully masked student map leaves only the generator's biases: the same vector at every position
    out = gen(x, mask=torch.zeros(2, 1, 5, 5))
    assert torch.allclose(out[:, :, 1:-1, 1:-1], out[:1, :, 2:3, 2:3].expand(2, 6, 3, 3), atol=1e-6)
    gen.eval()
    assert torch.equal(gen(x), gen(x))  # no mask outside training
    gen.train()
    torch.manual_seed(0)
    first = gen(x)
    assert not torch.equal(first, gen(x))  # a fresh mask per call in training
