"""Losses on intermediate feature maps (Si & Qi 2023, section 2.2; survey eqs. 2 and 3).

Eq. (2), feature fitting: L_KD = DF(f_S, f_T), DF a distance such as the L2 norm (FitNet).
Eq. (3), knowledge extracted from the maps: L_KD = DF(Σ_i α_i f_S^i, Σ_j β_j f_T^j) (AT, FSP, AFD).
Feature maps are ``(N, C, H, W)``. Every loss detaches its teacher inputs and computes in float32.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "fitnet_loss",
    "attention_map",
    "at_loss",
    "fsp_matrix",
    "fsp_loss",
    "FeatureSelection",
    "grouped_mean_weights",
    "afd_loss",
    "channel_standardize",
    "pearson_loss",
    "mgd_mask",
    "MGDGenerator",
    "mgd_loss",
]


def _check_4d(name: str, x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) feature map, got shape {tuple(x.shape)}")


def _check_pairs(student: Sequence, teacher: Sequence, what: str) -> None:
    if len(student) != len(teacher):
        raise ValueError(f"got {len(student)} student {what} but {len(teacher)} teacher {what}")
    if len(student) == 0:
        raise ValueError(f"need at least one pair of {what}")


def _match_spatial(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the larger map(s) down to the common (min H, min W) size."""
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    if tuple(a.shape[-2:]) != size:
        a = F.adaptive_avg_pool2d(a, size)
    if tuple(b.shape[-2:]) != size:
        b = F.adaptive_avg_pool2d(b, size)
    return a, b


def fitnet_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (ICLR); survey eq. (2).

    The hint loss is ½ ‖r(f_S) - f_T‖², r the regressor (a connector the caller applies to the
    student feature beforehand). Implemented as the mean squared error over all elements,
    mean((r(f_S) - f_T)²): the ½ and the size normalisation are constants absorbed by the loss
    weight, and the mean keeps the scale independent of batch and map size.
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"fitnet_loss needs equal shapes (apply a connector first): student "
            f"{tuple(student_feature.shape)} vs teacher {tuple(teacher_feature.shape)}"
        )
    return F.mse_loss(student_feature.float(), teacher_feature.detach().float())


def attention_map(feature: Tensor, p: int = 2) -> Tensor:
    """Zagoruyko & Komodakis 2017, spatial attention map: Q = vec(Σ_c |A_c|^p) / ‖vec(Σ_c |A_c|^p)‖_2.

    ``feature`` is ``(N, C, H, W)``; returns ``(N, H·W)`` with unit L2 norm per sample.
    """
    _check_4d("feature", feature)
    q = feature.float().abs().pow(p).sum(dim=1).flatten(1)
    return F.normalize(q, p=2, dim=1)


def at_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor], p: int = 2,
            squared: bool = False) -> Tensor:
    """Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (ICLR), attention transfer.

    With Q the normalised attention maps of :func:`attention_map`, summed over the pairs j:
      squared=False (the paper's eq.): L = Σ_j mean_batch ‖Q_S^j - Q_T^j‖_2,
      squared=True  (the authors' released form, for which their β = 1000 was tuned):
                    L = Σ_j mean_{batch, positions} (Q_S^j - Q_T^j)².
    The paper's β/2 is left to the recipe's loss weight. Spatial sizes of each pair must match;
    channel counts may differ.
    """
    _check_pairs(student_features, teacher_features, "feature maps")
    total = student_features[0].new_zeros((), dtype=torch.float32)
    for i, (fs, ft) in enumerate(zip(student_features, teacher_features)):
        _check_4d(f"student_features[{i}]", fs)
        _check_4d(f"teacher_features[{i}]", ft)
        if fs.shape[0] != ft.shape[0] or fs.shape[-2:] != ft.shape[-2:]:
            raise ValueError(
                f"at_loss pair {i}: batch and spatial sizes must match, student {tuple(fs.shape)} "
                f"vs teacher {tuple(ft.shape)}"
            )
        diff = attention_map(fs, p) - attention_map(ft.detach(), p)
        total = total + (diff.pow(2).mean() if squared else diff.norm(p=2, dim=1).mean())
    return total


def fsp_matrix(feature_a: Tensor, feature_b: Tensor) -> Tensor:
    """Yim et al. 2017, the FSP ("flow of solution procedure") matrix of two layers' feature maps.

    G_ij = Σ_{s,t} F1[i, s, t] · F2[j, s, t] / (h · w), for F1 ``(N, C1, h, w)`` and F2 ``(N, C2, h, w)``;
    returns ``(N, C1, C2)``. If the two maps differ in spatial size, the larger one is
    adaptive-average-pooled down to the smaller (per dimension, to (min h, min w)).
    """
    _check_4d("feature_a", feature_a)
    _check_4d("feature_b", feature_b)
    if feature_a.shape[0] != feature_b.shape[0]:
        raise ValueError(f"batch sizes differ: {tuple(feature_a.shape)} vs {tuple(feature_b.shape)}")
    a, b = _match_spatial(feature_a.float(), feature_b.float())
    hw = a.shape[-2] * a.shape[-1]
    return torch.bmm(a.flatten(2), b.flatten(2).transpose(1, 2)) / hw


def fsp_loss(student_pairs: Sequence[tuple[Tensor, Tensor]],
             teacher_pairs: Sequence[tuple[Tensor, Tensor]], entry_mean: bool = False) -> Tensor:
    """Yim et al. 2017, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization
    and Transfer Learning" (CVPR).

    L = mean_pairs mean_batch ‖G_S - G_T‖²_2, with G = :func:`fsp_matrix` of each (first, second)
    layer pair and ‖·‖²_2 the sum of squared matrix entries (the paper's 1/N Σ_x Σ_i λ_i ‖·‖²
    with equal λ_i = 1/#pairs). The G matrices of a student pair and its teacher pair must have the
    same shape (same channel counts; use connectors otherwise). With ``entry_mean=True`` the squared
    entries are averaged instead of summed (divided by C1·C2), so one loss weight suits every pair
    whatever its channel counts (the form the CRD benchmark code tunes its β = 50 for).
    """
    _check_pairs(student_pairs, teacher_pairs, "layer pairs")
    losses = []
    for i, ((sa, sb), (ta, tb)) in enumerate(zip(student_pairs, teacher_pairs)):
        g_s = fsp_matrix(sa, sb)
        g_t = fsp_matrix(ta.detach(), tb.detach())
        if g_s.shape != g_t.shape:
            raise ValueError(
                f"fsp_loss pair {i}: student FSP matrix {tuple(g_s.shape)} and teacher FSP matrix "
                f"{tuple(g_t.shape)} differ (channel counts must match)"
            )
        sq = (g_s - g_t).pow(2)
        losses.append((sq.mean(dim=(1, 2)) if entry_mean else sq.sum(dim=(1, 2))).mean())
    return torch.stack(losses).mean()


def grouped_mean_weights(in_channels: int, num_maps: int) -> Tensor:
    """``(K, C)`` weights whose row k averages the k-th of K contiguous, disjoint channel groups.

    Channel c belongs to group floor(c · K / C); every channel is in exactly one group.
    """
    if not 1 <= num_maps <= in_channels:
        raise ValueError(f"need 1 <= num_maps <= in_channels, got num_maps={num_maps}, in_channels={in_channels}")
    group = torch.arange(in_channels) * num_maps // in_channels
    weights = F.one_hot(group, num_maps).T.float()
    return weights / weights.sum(dim=1, keepdim=True)


class FeatureSelection(nn.Module):
    """Channel selection for AFD (Wang et al. 2020a in the survey; section 2.2.2, eq. 3).

    Produces K aggregated maps from C channels: out[:, k] = Σ_c w_kc · x[:, c], with
    w = softmax over channels of a learnable ``(K, C)`` logit matrix (``learnable=True``, logits
    start at zero, i.e. uniform weights), or the fixed disjoint group means of
    :func:`grouped_mean_weights` (``learnable=False``, a buffer; what :func:`afd_loss` requires on
    the teacher side). Input ``(N, C, H, W)``, output ``(N, K, H, W)``.
    """

    def __init__(self, in_channels: int, num_maps: int, learnable: bool = True) -> None:
        super().__init__()
        fixed = grouped_mean_weights(in_channels, num_maps)
        self.in_channels = in_channels
        self.num_maps = num_maps
        self.learnable = learnable
        if learnable:
            self.logits = nn.Parameter(torch.zeros(num_maps, in_channels))
        else:
            self.register_buffer("fixed_weights", fixed)

    def weights(self) -> Tensor:
        """The ``(K, C)`` selection weights; each row is non-negative and sums to 1."""
        return F.softmax(self.logits, dim=1) if self.learnable else self.fixed_weights

    def forward(self, x: Tensor) -> Tensor:
        _check_4d("x", x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"FeatureSelection expects {self.in_channels} channels, got shape {tuple(x.shape)}")
        return torch.einsum("kc,nchw->nkhw", self.weights().to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, num_maps={self.num_maps}, learnable={self.learnable}"


def afd_loss(student_feature: Tensor, teacher_feature: Tensor, student_selector: FeatureSelection,
             teacher_selector: FeatureSelection) -> Tensor:
    """AFD as the survey describes it (Si & Qi 2023, section 2.2.2; Wang et al. 2020a in its
    Table 1): feature-selection modules pick channels of the student and teacher maps and the
    selections are matched, survey eq. (3):
      L = mean((Σ_i α_ki f_S^i - Σ_j β_kj f_T^j)²), over k = 1..K, batch and positions,
    α = ``student_selector.weights()``, β = ``teacher_selector.weights()``; the larger map is
    adaptive-average-pooled to the smaller spatial size.

    Collapse prevention: if α and β were both trained on this loss they could select matching
    uninformative channels (dead or near-constant ones on both sides) and drive L to 0 without
    transferring anything. So β must be fixed (``FeatureSelection(C_T, K, learnable=False)``:
    the K targets are the means of K disjoint teacher channel groups, covering every teacher
    channel and unmovable by the loss) and only α is learned; a learnable teacher selector raises
    ``ValueError``.
    """
    _check_4d("student_feature", student_feature)
    _check_4d("teacher_feature", teacher_feature)
    if teacher_selector.learnable or any(p.requires_grad for p in teacher_selector.parameters()):
        raise ValueError(
            "afd_loss needs a fixed teacher selector (FeatureSelection(..., learnable=False)); a learnable "
            "one could collapse together with the student selector onto uninformative channels"
        )
    if student_selector.num_maps != teacher_selector.num_maps:
        raise ValueError(
            f"selectors must produce the same number of maps: student {student_selector.num_maps}, "
            f"teacher {teacher_selector.num_maps}"
        )
    if student_feature.shape[0] != teacher_feature.shape[0]:
        raise ValueError(
            f"batch sizes differ: student {tuple(student_feature.shape)} vs teacher {tuple(teacher_feature.shape)}"
        )
    s = student_selector(student_feature.float())
    t = teacher_selector(teacher_feature.detach().float())
    s, t = _match_spatial(s, t)
    return F.mse_loss(s, t)


# ---------------------------------------------------------------- dense-prediction feature imitation (MMRazor's)
def channel_standardize(feature: Tensor, eps: float = 1e-6) -> Tensor:
    """Each channel of a (N, C, H, W) map shifted and scaled to zero mean and unit standard deviation over
    all its N x H x W values (the unbiased std, plus ``eps``), as PKD normalises FPN features."""
    _check_4d("feature", feature)
    if feature.shape[0] * feature.shape[2] * feature.shape[3] < 2:
        raise ValueError(f"standardising a channel needs at least 2 values (N x H x W), got a map of shape "
                         f"{tuple(feature.shape)}")
    flat = feature.float().transpose(0, 1).reshape(feature.shape[1], -1)
    flat = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + eps)
    return flat.reshape(feature.shape[1], feature.shape[0], *feature.shape[2:]).transpose(0, 1)


def pearson_loss(student_features: Sequence[Tensor], teacher_features: Sequence[Tensor],
                 resize_student: bool = True) -> Tensor:
    """Cao et al. 2022, "PKD: General Distillation Framework for Object Detectors via Pearson Correlation
    Coefficient" (NeurIPS), the feature-imitation loss of sec. 3.2:

        L_FI = 1 / (2 N) sum_i (s_hat_i - t_hat_i)^2,

    s_hat and t_hat each map standardised per channel (`channel_standardize`) over batch and positions, N
    the number of values: for standardised vectors this is 1 - r, r their Pearson correlation, so the
    student imitates the teacher's relations, not its magnitudes (no connector is needed when the channel
    counts match). Summed over the (student, teacher) pairs of maps (e.g. the FPN levels). A pair whose
    sizes differ is resized bilinearly, the student to the teacher (``resize_student``) or the reverse,
    as MMRazor's PKDLoss (mmrazor/models/losses/pkd_loss.py) does.

    Raises:
        ValueError: unequal numbers of maps, a map that is not (N, C, H, W), or channel counts that differ.
    """
    _check_pairs(student_features, teacher_features, "feature maps")
    if not isinstance(resize_student, bool):
        raise ValueError(f"resize_student must be True or False, got {resize_student!r}")
    total = student_features[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_features, teacher_features):
        _check_4d("student feature", s)
        _check_4d("teacher feature", t)
        if s.shape[:2] != t.shape[:2]:
            raise ValueError(f"pearson_loss needs equal batch and channels (a connector first): student "
                             f"{tuple(s.shape)} vs teacher {tuple(t.shape)}")
        t = t.detach()
        if s.shape[2:] != t.shape[2:]:
            if resize_student:
                s = F.interpolate(s.float(), size=t.shape[2:], mode="bilinear", align_corners=False)
            else:
                t = F.interpolate(t.float(), size=s.shape[2:], mode="bilinear", align_corners=False)
        total = total + F.mse_loss(channel_standardize(s), channel_standardize(t)) / 2
    return total


def mgd_mask(shape: Sequence[int], ratio: float, generator: torch.Generator | None = None,
             device: torch.device | str | None = None) -> Tensor:
    """MGD's random spatial mask (Yang et al. 2022, eq. 1): a (N, 1, H, W) map of 0 (masked) with
    probability ``ratio`` (the paper's lambda) and 1 elsewhere, the same for every channel.

    Raises: ValueError: ``ratio`` outside [0, 1) or a shape that is not (N, C, H, W)."""
    if len(shape) != 4:
        raise ValueError(f"mgd_mask needs a (N, C, H, W) shape, got {tuple(shape)}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"the MGD mask ratio must be in [0, 1), got {ratio}")
    n, _, h, w = shape
    if generator is not None:
        r = torch.rand((n, 1, h, w), generator=generator).to(device)
    else:
        r = torch.rand((n, 1, h, w), device=device)
    return (r >= ratio).float()


class MGDGenerator(nn.Module):
    """MGD's generation block (Yang et al. 2022, eq. 2): the student's map, aligned to the teacher's
    channels by a 1x1 convolution when they differ, is masked (`mgd_mask`) and passed through
    conv3x3 - ReLU - conv3x3, which must regenerate the teacher's full map from it."""

    def __init__(self, student_channels: int, teacher_channels: int, ratio: float = 0.65) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"the MGD mask ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.align = (nn.Conv2d(student_channels, teacher_channels, 1) if student_channels != teacher_channels
                      else nn.Identity())
        self.generation = nn.Sequential(nn.Conv2d(teacher_channels, teacher_channels, 3, padding=1), nn.ReLU(),
                                        nn.Conv2d(teacher_channels, teacher_channels, 3, padding=1))

    def forward(self, feature: Tensor, mask: Tensor | None = None) -> Tensor:
        """(N, C_s, H, W) -> (N, C_t, H, W); ``mask`` (N, 1, H, W) given, or drawn (`mgd_mask`) in training."""
        _check_4d("student feature", feature)
        aligned = self.align(feature)
        if mask is None and self.training and self.ratio > 0:
            mask = mgd_mask(aligned.shape, self.ratio, device=aligned.device)
        return self.generation(aligned if mask is None else aligned * mask)


def mgd_loss(generated: Tensor, teacher_feature: Tensor, alpha: float = 2e-5) -> Tensor:
    """Yang et al. 2022, "Masked Generative Distillation" (ECCV), eqs. 3-4: alpha times the squared error
    between the teacher's map and the one `MGDGenerator` regenerates from the masked student map, summed
    over channels and positions and averaged over the N images, alpha * sum (T - G)^2 / N; alpha = 2e-5
    is the paper's (and MMRazor's MGDLoss) for detection.

    Raises: ValueError: shapes differ."""
    _check_4d("generated feature", generated)
    if generated.shape != teacher_feature.shape:
        raise ValueError(f"mgd_loss needs equal shapes: generated {tuple(generated.shape)} vs teacher "
                         f"{tuple(teacher_feature.shape)}")
    diff = generated.float() - teacher_feature.detach().float()
    return alpha * diff.pow(2).sum() / generated.shape[0]
