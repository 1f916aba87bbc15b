"""Relational (structural) knowledge (Si & Qi 2023, section 2.3; survey eq. 4).

Survey eq. (4): L_KD = DF(M(f_S^1, f_S^2, ...), M(f_T^1, f_T^2, ...)), where M maps the outputs or
features of several samples to their relations and DF compares the student's relations with the
teacher's. Implemented here:

- RKD (Park et al., 2019): distance-wise and angle-wise relations, Huber loss.
- SP (Tung & Mori, 2019): row-normalised batch similarity (Gram) matrices, squared Frobenius loss.
- IRG (Liu et al., 2019a): instance relationship graphs (vertices, edges) and their transformation
  across layers.
- CRD (Tian, Krishnan & Isola, ICLR 2020; "Tian et al., 2022" in the survey): NCE contrastive
  objective with memory banks of embeddings indexed by training-set index.

Inputs are embeddings ``(N, D)`` or feature maps ``(N, C, H, W)`` (flattened to ``(N, C*H*W)``); the
student's and the teacher's dimensions may differ wherever only relations are compared. Every loss
detaches its teacher inputs and does its maths in float32 with autocast disabled (relations are
differences of distances and cosines, which half precision would swamp).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "rkd_distance_loss",
    "rkd_angle_loss",
    "rkd_loss",
    "spkd_loss",
    "irg_loss",
    "crd_nce_loss",
    "crd_loss",
    "CRDHead",
    "ContrastMemory",
    "CRDLoss",
]

_EPS = 1e-12
_NCE_EPS = 1e-7


# ----------------------------------------------------------------------------- shared helpers


def _no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def _as_matrix(x: Tensor) -> Tensor:
    """``(N, ...)`` -> ``(N, D)`` float32."""
    if x.dim() < 2:
        raise ValueError(f"expected a batch of embeddings (N, D) or feature maps (N, ...), got shape {tuple(x.shape)}")
    return x.flatten(1).float()


def _check_batch(student: Tensor, teacher: Tensor) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student batch {student.shape[0]} != teacher batch {teacher.shape[0]}")


def _zero(student: Tensor) -> Tensor:
    """A zero loss still attached to the student's graph (relations need more samples than given)."""
    return student.sum() * 0.0


def _pairwise_distances(x: Tensor) -> Tensor:
    """Exact Euclidean distance matrix ``(N, N)`` (no Gram-matrix shortcut: no cancellation error)."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")


def _mean_normalised(values: Tensor) -> Tensor:
    """Divide by the mean of the non-zero entries (RKD's μ): scale-free relations."""
    nonzero = values > 0
    mu = (values * nonzero).sum() / nonzero.sum().clamp_min(1)
    return values / mu.clamp_min(_EPS)


def _off_diagonal(n: int, device: torch.device) -> Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def _masked_huber_mean(a: Tensor, b: Tensor, mask: Tensor, count: int) -> Tensor:
    """Huber (δ = 1) loss between ``a`` and ``b`` averaged over the ``count`` entries where ``mask`` holds.

    Equal to ``smooth_l1_loss(a[mask], b[mask])`` but without boolean indexing, whose output size the
    host must read back (a GPU sync every step)."""
    per_entry = F.smooth_l1_loss(a, b, beta=1.0, reduction="none")
    return torch.where(mask, per_entry, 0.0).sum() / count


# ----------------------------------------------------------------------------- RKD


def _angle_cosines(x: Tensor) -> Tensor:
    """``cos[i, j, k]`` = cos of the angle at vertex t_j between t_i and t_k, shape ``(N, N, N)``.

    Law of cosines on exact distances, cos = (d_ij² + d_kj² - d_ik²) / (2 d_ij d_kj): the same value as
    <e_ij, e_kj> but with O(N³) memory instead of O(N² D). Where an edge has zero length (i == j,
    k == j or duplicate points) the cosine is 0, the value <e_ij, e_kj> takes with e = 0.
    """
    d = _pairwise_distances(x)
    d2 = d.square()
    num = d2[:, :, None] + d2.t()[None, :, :] - d2[:, None, :]
    den = 2.0 * d[:, :, None] * d.t()[None, :, :]
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _distinct_triplets(n: int, device: torch.device) -> Tensor:
    idx = torch.arange(n, device=device)
    i, j, k = idx[:, None, None], idx[None, :, None], idx[None, None, :]
    return (i != j) & (j != k) & (i != k)


def rkd_distance_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD distance-wise loss (Park et al., 2019, "Relational Knowledge Distillation", CVPR, eqs. 4-5).

    ψ_D(t_i, t_j) = ‖t_i - t_j‖₂ / μ, with μ the mean of the non-zero pairwise distances of the batch;
    L_RKD-D = mean over all N² ordered pairs (i, j) of l_δ(ψ_D(t_i, t_j), ψ_D(s_i, s_j)), l_δ the Huber
    loss with δ = 1 (smooth L1). The N pairs i = j add 0 but count in the mean, as in the authors' code
    (lenscloth/RKD) and RepDistiller's ``RKDLoss`` (``F.smooth_l1_loss`` over the whole N x N matrix), for
    which the paper's λ_D = 25 was tuned. Invariant to scaling either embedding; dimensions may differ.
    """
    with _no_autocast(student_emb):
        s, t = _as_matrix(student_emb), _as_matrix(teacher_emb.detach())
        _check_batch(s, t)
        n = s.shape[0]
        if n < 2:
            return _zero(s)
        off = _off_diagonal(n, s.device)
        psi_s = _mean_normalised(_pairwise_distances(s))
        psi_t = _mean_normalised(_pairwise_distances(t))
        return _masked_huber_mean(psi_s, psi_t, off, n * n)


def rkd_angle_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD angle-wise loss (Park et al., 2019, "Relational Knowledge Distillation", CVPR, eqs. 6-7).

    ψ_A(t_i, t_j, t_k) = cos∠t_i t_j t_k = <e_ij, e_kj>, e_ij = (t_i - t_j) / ‖t_i - t_j‖₂;
    L_RKD-A = mean over all N³ ordered triplets (i, j, k) of l_δ(ψ_A(t), ψ_A(s)), Huber with δ = 1. A
    triplet with a repeated index adds 0 (its cosine is 0, or 1, on both sides) but counts in the mean, as
    in the authors' code and RepDistiller's ``RKDLoss`` (smooth L1 over the N x N x N cosines), for which
    the paper's λ_A = 50 was tuned. Scale-free; dimensions may differ.
    """
    with _no_autocast(student_emb):
        s, t = _as_matrix(student_emb), _as_matrix(teacher_emb.detach())
        _check_batch(s, t)
        n = s.shape[0]
        if n < 3:
            return _zero(s)
        mask = _distinct_triplets(n, s.device)
        return _masked_huber_mean(_angle_cosines(s), _angle_cosines(t), mask, n ** 3)


def rkd_loss(student_emb: Tensor, teacher_emb: Tensor, w_distance: float = 25.0, w_angle: float = 50.0) -> Tensor:
    """RKD-DA (Park et al., 2019): L = w_distance · L_RKD-D + w_angle · L_RKD-A.

    Defaults λ_D = 25, λ_A = 50 are the paper's weights for classification.
    """
    loss = student_emb.new_zeros((), dtype=torch.float32)
    if w_distance:
        loss = loss + w_distance * rkd_distance_loss(student_emb, teacher_emb)
    if w_angle:
        loss = loss + w_angle * rkd_angle_loss(student_emb, teacher_emb)
    return loss


# ----------------------------------------------------------------------------- SP


def _pairs(student: Tensor | Sequence[Tensor], teacher: Tensor | Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
    if isinstance(student, Tensor) and isinstance(teacher, Tensor):
        return [(student, teacher)]
    if isinstance(student, Tensor) or isinstance(teacher, Tensor):
        raise TypeError("pass two tensors or two sequences of tensors")
    if len(student) != len(teacher) or len(student) == 0:
        raise ValueError(f"need as many student as teacher features (>= 1), got {len(student)} and {len(teacher)}")
    return list(zip(student, teacher))


def _similarity(f: Tensor) -> Tensor:
    """G = row-wise L2-normalised Q·Qᵀ, Q = reshape(f, (N, -1))."""
    q = _as_matrix(f)
    return F.normalize(q @ q.t(), p=2, dim=1)


def spkd_loss(student_feature: Tensor | Sequence[Tensor], teacher_feature: Tensor | Sequence[Tensor]) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019, ICCV, eqs. 1-4).

    Q = reshape(f, (N, -1)); G̃ = Q·Qᵀ; G[i, :] = G̃[i, :] / ‖G̃[i, :]‖₂;
    L_SP = Σ_{(l, l') ∈ I} ‖G_T^(l) - G_S^(l')‖²_F / N².
    Takes one (student, teacher) pair of tensors, or two equal-length sequences of tensors paired in
    order, whose terms are summed as in the paper. Invariant to scaling a feature map. The paper
    weights it by γ = 3000 on CIFAR-10; the weight is the recipe's.
    """
    pairs = _pairs(student_feature, teacher_feature)
    with _no_autocast(pairs[0][0]):
        total = pairs[0][0].new_zeros((), dtype=torch.float32)
        for s, t in pairs:
            _check_batch(s, t)
            n = s.shape[0]
            total = total + (_similarity(t.detach()) - _similarity(s)).square().sum() / (n * n)
        return total


# ----------------------------------------------------------------------------- IRG


def _vector(x: Tensor) -> Tensor:
    """Global average pooling over every dimension after the channel one: ``(N, C, ...)`` -> ``(N, C)``."""
    x = x.float()
    return x.flatten(2).mean(dim=2) if x.dim() > 2 else x


def _comparable(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Bring two layers' features of one network to a common ``(N, D)``.

    Equal per-sample shapes: flatten both. Otherwise pool spatially to ``(N, C)`` and, if the channel
    counts differ, average adjacent channels of the wider one down to the narrower count
    (adaptive average pooling over channels).
    """
    if a.shape[1:] == b.shape[1:]:
        return a.flatten(1).float(), b.flatten(1).float()
    a, b = _vector(a), _vector(b)
    c = min(a.shape[1], b.shape[1])
    a = F.adaptive_avg_pool1d(a[:, None, :], c)[:, 0]
    b = F.adaptive_avg_pool1d(b[:, None, :], c)[:, 0]
    return a, b


def _irg_edges(f: Tensor, normalize: bool) -> Tensor:
    d = _pairwise_distances(_as_matrix(f))
    return _mean_normalised(d) if normalize else d


def _irg_transformation(low: Tensor, high: Tensor, normalize: bool) -> Tensor:
    """Vertex transformation Λ_i = ‖v_i^{l1} - v_i^{l2}‖₂ for every instance, shape ``(N,)``."""
    a, b = _comparable(low, high)
    lam = torch.linalg.vector_norm(a - b, dim=1)
    return _mean_normalised(lam) if normalize else lam


def irg_loss(
    student_features: Sequence[Tensor],
    teacher_features: Sequence[Tensor],
    w_vertex: float = 1.0,
    w_edge: float = 1.0,
    w_transform: float = 1.0,
    normalize: bool = True,
) -> Tensor:
    """Instance relationship graph loss (Liu et al., 2019a, "Knowledge Distillation via Instance
    Relationship Graph", CVPR).

    ``*_features`` are the tapped layers in depth order, the same number for both networks, the last
    one being the final layer (logits or embedding, equal shapes). With IRG^l = (V^l, E^l),
    V^l = {f^l(x_i)} and E^l = A^l, A^l_ij = ‖f^l(x_i) - f^l(x_j)‖₂:

      L_IRG = w_vertex · MSE(f_S^L, f_T^L)                                 (vertex loss, last layer)
            + w_edge · Σ_l ‖A_S^l - A_T^l‖²_F / N²                          (edge loss, every layer)
            + w_transform · Σ_l mean_i (Λ_S^{l,l+1}(i) - Λ_T^{l,l+1}(i))²   (IRG transformation)

    with Λ^{l1,l2}(i) = ‖v_i^{l1} - v_i^{l2}‖₂ for consecutive tapped layers (features pooled to
    vectors, channels averaged to the narrower width, when the two layers' shapes differ).
    ``normalize=True`` divides each A^l and each Λ by the mean of its non-zero entries, so that
    networks of different feature scales are comparable (student and teacher dims may differ
    everywhere but the last layer); ``False`` keeps raw distances. The weights default to 1 (ours;
    the paper tunes λ per experiment).
    """
    if len(student_features) != len(teacher_features) or len(student_features) == 0:
        raise ValueError(
            f"need as many student as teacher layers (>= 1), got {len(student_features)} and {len(teacher_features)}"
        )
    students = list(student_features)
    teachers = [t.detach() for t in teacher_features]
    with _no_autocast(students[-1]):
        for s, t in zip(students, teachers):
            _check_batch(s, t)
        loss = students[-1].new_zeros((), dtype=torch.float32)
        if w_vertex:
            s_last, t_last = students[-1].flatten(1).float(), teachers[-1].flatten(1).float()
            if s_last.shape != t_last.shape:
                raise ValueError(f"IRG vertex loss needs equal last-layer shapes, got {tuple(s_last.shape)} "
                                 f"and {tuple(t_last.shape)}")
            loss = loss + w_vertex * F.mse_loss(s_last, t_last)
        if w_edge:
            for s, t in zip(students, teachers):
                loss = loss + w_edge * (_irg_edges(s, normalize) - _irg_edges(t, normalize)).square().mean()
        if w_transform:
            for i in range(len(students) - 1):
                lam_s = _irg_transformation(students[i], students[i + 1], normalize)
                lam_t = _irg_transformation(teachers[i], teachers[i + 1], normalize)
                loss = loss + w_transform * (lam_s - lam_t).square().mean()
        return loss


# ----------------------------------------------------------------------------- CRD


def crd_nce_loss(scores: Tensor, n_data: int) -> Tensor:
    """NCE loss of CRD for one anchor side (Tian, Krishnan & Isola, ICLR 2020, section 3).

    ``scores`` ``(N, K+1)``: x = exp(<g_T(t), g_S(s)>/τ) / Z for the positive pair (column 0) and K
    negatives drawn uniformly from M = ``n_data`` training samples (noise probability 1/M). The critic
    h = x / (x + K/M), and
      L = -mean_batch[ log h(positive) + Σ_{k=1..K} log(1 - h(negative_k)) ],
    i.e. -L_critic = -(E_{C=1}[log h(T,S)] + N·E_{C=0}[log(1 - h(T,S))]) with the paper's N = K.
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (N, K+1) with K >= 1, got shape {tuple(scores.shape)}")
    x = scores.float()
    noise = (x.shape[1] - 1) / n_data
    log_pos = torch.log(x[:, 0] / (x[:, 0] + noise + _NCE_EPS))
    log_neg = torch.log(noise / (x[:, 1:] + noise + _NCE_EPS))
    return -(log_pos + log_neg.sum(dim=1)).mean()


def crd_loss(student_scores: Tensor, teacher_scores: Tensor, n_data: int) -> Tensor:
    """CRD objective over both directions (Tian, Krishnan & Isola, ICLR 2020).

    h(T, S) = exp(g_T(t)ᵀ g_S(s)/τ) / (exp(g_T(t)ᵀ g_S(s)/τ) + N/M), the exponential divided by the
    constant Z (``ContrastMemory``); L_CRD = L_NCE(student anchor vs teacher memory)
    + L_NCE(teacher anchor vs student memory), each as in ``crd_nce_loss``. The paper weights it by
    β = 0.8 next to the task loss; the weight is the recipe's.
    """
    return crd_nce_loss(student_scores, n_data) + crd_nce_loss(teacher_scores, n_data)


class CRDHead(nn.Module):
    """CRD embedding g(·): flatten, linear to ``feat_dim``, L2-normalise.

    ``in_shape`` is the per-sample shape of the feature it embeds (``C`` or ``(C, H, W)``, no batch
    dimension) or the flattened size; the linear layer's input width is its product.
    """

    def __init__(self, in_shape: int | Sequence[int], feat_dim: int = 128) -> None:
        super().__init__()
        in_features = in_shape if isinstance(in_shape, int) else math.prod(in_shape)
        self.linear = nn.Linear(int(in_features), feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), p=2, dim=1)


def _random_unit_rows(n: int, dim: int) -> Tensor:
    return F.normalize(torch.randn(n, dim), p=2, dim=1)


def _all_gather(x: Tensor) -> Tensor:
    """``x`` from every process, concatenated in rank order (``x`` itself outside distributed runs)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class ContrastMemory(nn.Module):
    """CRD memory banks and contrastive scores (Tian, Krishnan & Isola, ICLR 2020).

    Buffers (saved in ``state_dict``, so a resume is exact): ``memory_student`` and ``memory_teacher``
    ``(n_data, feat_dim)``, one row per training-set index, initialised with random unit vectors from
    the global RNG; ``z_student`` and ``z_teacher``, the NCE normalisers (0 until estimated).

    ``forward(student_emb, teacher_emb, indices, generator=None)`` -> ``(student_scores,
    teacher_scores)``, each ``(N, K+1)``: the student anchor s_i scored against teacher-memory rows
    [indices[i], K negatives] and the teacher anchor t_i against the student memory, as
    exp(<anchor, row>/τ) / Z. With ``labels`` (the class of every training index) the K negatives are
    drawn uniformly, with replacement, from the samples of the *other* classes, as the authors' code
    samples them (RepDistiller's ``CIFAR100InstanceSample``, ``cls_negative``); without, uniformly from
    the other n_data - 1 indices (never the positive). Draws use ``generator`` if given (on its device),
    else the global RNG. Z = M · mean of
    the exponentials of the first batch, estimated once per side and then fixed. After scoring, the
    rows of the batch are updated without gradient:
    row <- normalise(m · row + (1 - m) · embedding). Embeddings are expected L2-normalised.
    """

    memory_student: Tensor
    memory_teacher: Tensor
    z_student: Tensor
    z_teacher: Tensor

    def __init__(self, feat_dim: int, n_data: int, n_negatives: int = 4096, temperature: float = 0.07,
                 momentum: float = 0.5, labels: Tensor | None = None) -> None:
        super().__init__()
        if n_negatives < 1 or n_data < 2:
            raise ValueError(f"need n_negatives >= 1 (drawn with replacement) and n_data >= 2, got {n_negatives} and {n_data}")
        self.feat_dim, self.n_data, self.n_negatives = feat_dim, n_data, n_negatives
        self.temperature, self.momentum = temperature, momentum
        self.register_buffer("memory_student", _random_unit_rows(n_data, feat_dim))
        self.register_buffer("memory_teacher", _random_unit_rows(n_data, feat_dim))
        self.register_buffer("z_student", torch.zeros(()))
        self.register_buffer("z_teacher", torch.zeros(()))
        self.by_class = labels is not None
        if labels is not None:  # derived from the data on every build: not part of the checkpoint
            labels = torch.as_tensor(labels).long().flatten()
            if labels.shape[0] != n_data:
                raise ValueError(f"labels must give the class of each of the {n_data} training samples, got {labels.shape[0]}")
            counts = torch.bincount(labels)
            if int(counts.max()) == n_data:
                raise ValueError("CRD's other-class negatives need at least two classes in the training data")
            self.register_buffer("labels", labels, persistent=False)
            self.register_buffer("class_order", torch.argsort(labels, stable=True), persistent=False)
            self.register_buffer("class_count", counts, persistent=False)
            self.register_buffer("class_start", torch.cumsum(counts, 0) - counts, persistent=False)

    def sample(self, indices: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(N, K+1)`` memory rows: the positive ``indices`` then K negatives (other-class samples when the
        memory knows the labels, else any index but the positive)."""
        device = generator.device if generator is not None else indices.device
        shape = (indices.shape[0], self.n_negatives)
        positives = indices[:, None]
        if self.by_class:
            c = self.labels[indices]
            count, start = self.class_count[c][:, None], self.class_start[c][:, None]
            u = torch.rand(shape, generator=generator, device=device).to(indices.device)
            r = (u * (self.n_data - count)).long().clamp_max(self.n_data - count - 1)  # uniform over the other classes
            negatives = self.class_order[r + (r >= start).long() * count]
        else:
            draw = torch.randint(0, self.n_data - 1, shape, generator=generator, device=device).to(indices.device)
            negatives = draw + (draw >= positives).long()
        return torch.cat([positives, negatives], dim=1)

    def _scores(self, anchor: Tensor, memory: Tensor, rows: Tensor, z: Tensor) -> Tensor:
        weights = memory[rows]  # (N, K+1, d), a copy: the later in-place update does not touch it
        out = torch.exp(torch.bmm(weights, anchor[:, :, None]).squeeze(2) / self.temperature)
        with torch.no_grad():
            z_value = torch.where(z > 0, z, out.mean() * self.n_data)
            z.copy_(z_value)
        return out / z_value

    @torch.no_grad()
    def _update(self, memory: Tensor, indices: Tensor, emb: Tensor) -> None:
        # Under DDP every rank applies every rank's rows, so the banks stay complete and identical.
        indices, emb = _all_gather(indices), _all_gather(emb)
        rows = memory[indices] * self.momentum + emb * (1.0 - self.momentum)
        memory.index_copy_(0, indices, F.normalize(rows, p=2, dim=1))

    def forward(self, student_emb: Tensor, teacher_emb: Tensor, indices: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        with _no_autocast(student_emb):
            s, t = student_emb.float(), teacher_emb.float()
            indices = indices.to(device=self.memory_student.device, dtype=torch.long)
            rows = self.sample(indices, generator)
            student_scores = self._scores(s, self.memory_teacher, rows, self.z_student)
            teacher_scores = self._scores(t, self.memory_student, rows, self.z_teacher)
            self._update(self.memory_student, indices, s.detach())
            self._update(self.memory_teacher, indices, t.detach())
            return student_scores, teacher_scores


class CRDLoss(nn.Module):
    """CRD as one module: heads g_S, g_T + ``ContrastMemory`` + ``crd_loss`` (Tian et al., ICLR 2020).

    ``forward(student_feature, teacher_feature, indices, generator=None)`` -> scalar L_CRD.
    ``indices`` are the batch's training-set indices (``(N,)``, in [0, n_data)). The teacher feature
    is detached before g_T: the teacher network gets no gradient, its head g_T does (as in the paper,
    both heads are trained). Defaults: feat_dim 128, K = 4096 negatives (the paper uses 16384),
    τ = 0.07, momentum 0.5. ``labels`` (the class of every training index): negatives from the other
    classes, as the authors' code draws them (see `ContrastMemory`).
    """

    def __init__(self, student_shape: int | Sequence[int], teacher_shape: int | Sequence[int], n_data: int,
                 feat_dim: int = 128, n_negatives: int = 4096, temperature: float = 0.07,
                 momentum: float = 0.5, labels: Tensor | None = None) -> None:
        super().__init__()
        self.n_data = n_data
        self.embed_student = CRDHead(student_shape, feat_dim)
        self.embed_teacher = CRDHead(teacher_shape, feat_dim)
        self.memory = ContrastMemory(feat_dim, n_data, n_negatives, temperature, momentum, labels)

    def forward(self, student_feature: Tensor, teacher_feature: Tensor, indices: Tensor,
                generator: torch.Generator | None = None) -> Tensor:
        with _no_autocast(student_feature):
            s = self.embed_student(student_feature.float())
            t = self.embed_teacher(teacher_feature.detach().float())
            student_scores, teacher_scores = self.memory(s, t, indices, generator)
            return crd_loss(student_scores, teacher_scores, self.n_data)
