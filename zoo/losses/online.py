"""Online distillation: a cohort of students teach each other, no pre-trained teacher (survey section 2.3.1).

Survey eq. (5) (Si & Qi 2023):  L_DML = Σ_k L_t(l_k, t) + Σ_{i<j} L_KD(l_i, l_j).

Three methods:

- ``dml_loss``: Deep Mutual Learning (Zhang et al. 2018).
- ``ONEGate`` + ``one_loss``: On-the-fly Native Ensemble (Lan, Zhu & Gong 2018).
- ``PeerAttention`` + ``okddip_loss``: Online KD with Diverse Peers (Chen et al. 2020a).

Every function returns a scalar: cross-entropies are batch means, KL terms are batch means of the
per-sample KL summed over classes (class dimension 1). A KL term's target is detached, so the term only
pulls the distribution being trained toward the target and never pushes the target.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .logits import kd_loss, kl_per_sample


def _kl_attached(student_logits: Tensor, target_logits: Tensor, T: float) -> Tensor:
    """T²·KL(softmax(target/T) ‖ softmax(student/T)), batch mean, detaching nothing (OKDDip's α learns through it)."""
    return (T * T) * kl_per_sample(student_logits, target_logits, T).mean()


def _check_cohort(logits: Sequence[Tensor], minimum: int, what: str) -> None:
    if len(logits) < minimum:
        raise ValueError(f"{what} needs at least {minimum} members, got {len(logits)}")
    shape = logits[0].shape
    if any(z.shape != shape for z in logits):
        raise ValueError(f"{what}: all logits must have the same shape, got {[tuple(z.shape) for z in logits]}")


# --------------------------------------------------------------------------------------------- DML
def dml_loss(logits: Sequence[Tensor], labels: Tensor, T: float = 1.0) -> Tensor:
    """Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu 2018, "Deep Mutual Learning", CVPR); survey eq. (5).

    For a cohort of K ≥ 2 students with logits l_k and p_k = softmax(l_k / T)::

        L = Σ_k [ CE(l_k, t) + 1/(K−1) · Σ_{j≠k} T²·KL(p_j ‖ p_k) ]

    with p_j detached inside student k's term: student k is pulled toward its peers, never the reverse
    through that term. Summing the K per-student losses and calling backward once therefore gives every
    student exactly the gradient of its own loss L_k from the paper; the paper instead updates the
    students in turn, each seeing its peers' predictions after their update, so this is the paper's
    alternating scheme up to simultaneity (all updates use the predictions of the same forward pass).
    Unlike the symmetric Σ_{i<j} of eq. (5), each pair contributes both KL directions, one to each student.
    The paper uses no temperature (T = 1); for T ≠ 1 the KL is scaled by T² as in Hinton's KD.
    """
    _check_cohort(logits, 2, "dml_loss")
    K = len(logits)
    total = logits[0].new_zeros(())
    for k, l_k in enumerate(logits):
        mimicry = sum(kd_loss(l_k, l_j, T=T) for j, l_j in enumerate(logits) if j != k)
        total = total + F.cross_entropy(l_k, labels) + mimicry / (K - 1)
    return total


# --------------------------------------------------------------------------------------------- ONE
class ONEGate(nn.Module):
    """ONE's gate (Lan, Zhu & Gong 2018, NeurIPS, section 3): branch importance scores g ∈ Δ^{B−1}.

    Built as the paper describes: from the shared trunk's output (the features every branch receives),
    global average pooling → FC(C → B) → BatchNorm → ReLU → softmax over the B branches.
    Input (N, C, H, W) or already pooled (N, C); output (N, B), rows summing to 1 (in training mode the
    BatchNorm needs batches of at least 2).
    """

    def __init__(self, in_channels: int, num_branches: int) -> None:
        super().__init__()
        if num_branches < 2:
            raise ValueError(f"ONE needs at least 2 branches, got {num_branches}")
        self.fc = nn.Linear(in_channels, num_branches)
        self.bn = nn.BatchNorm1d(num_branches)

    def forward(self, features: Tensor) -> Tensor:
        x = features.flatten(2).mean(dim=2) if features.dim() > 2 else features
        return F.softmax(F.relu(self.bn(self.fc(x))), dim=1)


def one_loss(branch_logits: Sequence[Tensor], gate_weights: Tensor, labels: Tensor, T: float = 3.0) -> Tensor:
    """On-the-fly Native Ensemble loss (Lan, Zhu & Gong 2018, "Knowledge Distillation by On-the-Fly Native
    Ensemble", NeurIPS, eqs. (1)-(6)); an instance of survey eq. (5) with a gated ensemble as the teacher.

    With branch logits z_b and gate scores g (N, B) from ``ONEGate``, the teacher logits are
    z_e = Σ_b g_b · z_b and::

        L = Σ_b CE(z_b, t) + CE(z_e, t) + T² · Σ_b KL(softmax(z_e/T) ‖ softmax(z_b/T))

    The gate and the branches learn the ensemble through CE(z_e, t) only: z_e is detached in the KL
    terms, treating the on-the-fly ensemble as the teacher it is in the paper (knowledge flows from the
    teacher back to the branches). The paper's loss does not write the stop-gradient out; without it
    the KL would also pull the ensemble (and, through the gate, its weighting) toward each branch.
    """
    _check_cohort(branch_logits, 2, "one_loss")
    B = len(branch_logits)
    if gate_weights.shape != (branch_logits[0].shape[0], B):
        raise ValueError(f"gate_weights must be (N, {B}), got {tuple(gate_weights.shape)}")
    stacked = torch.stack(list(branch_logits), dim=1)  # (N, B, C)
    z_e = (gate_weights.unsqueeze(-1) * stacked).sum(dim=1)
    ce = sum(F.cross_entropy(z_b, labels) for z_b in branch_logits) + F.cross_entropy(z_e, labels)
    kl = sum(kd_loss(z_b, z_e, T=T) for z_b in branch_logits)
    return ce + kl


# --------------------------------------------------------------------------------------------- OKDDip
class PeerAttention(nn.Module):
    """OKDDip's asymmetric self-attention over peers (Chen, Mei, Wang, Feng & Chen 2020, AAAI, section 3).

    Two linear maps, query L(h) = W_q h and key E(h) = W_k h, applied to each peer's feature vector
    h_a (e.g. its pooled penultimate features); the aggregation weights of peer a are::

        α_ab = exp(L(h_a)ᵀ E(h_b)) / Σ_f exp(L(h_a)ᵀ E(h_f))

    over all M peers, itself included. W_q ≠ W_k makes α asymmetric (α_ab ≠ α_ba), which is what gives
    each peer its own target. Input: M tensors (N, D) or one (N, M, D); output α (N, M, M), rows sum to 1.
    """

    def __init__(self, feat_dim: int, proj_dim: int | None = None) -> None:
        super().__init__()
        proj_dim = proj_dim or feat_dim
        self.query = nn.Linear(feat_dim, proj_dim, bias=False)
        self.key = nn.Linear(feat_dim, proj_dim, bias=False)

    def forward(self, features: Sequence[Tensor] | Tensor) -> Tensor:
        h = features if isinstance(features, Tensor) else torch.stack(list(features), dim=1)
        if h.dim() != 3:
            raise ValueError(f"peer features must be (N, M, D) or M tensors (N, D), got {tuple(h.shape)}")
        scores = torch.einsum("nad,nbd->nab", self.query(h), self.key(h))
        return F.softmax(scores, dim=-1)


def okddip_loss(peer_logits: Sequence[Tensor], leader_logits: Tensor, attention_weights: Tensor, labels: Tensor,
                T: float = 3.0, *, beta: float = 1.0, gamma: float = 1.0) -> Tensor:
    """Online KD with Diverse Peers (Chen et al. 2020, "Online Knowledge Distillation with Diverse Peers",
    AAAI); two-level distillation with M auxiliary peers and one group leader (the deployed model).

    With peer logits z_a, leader logits z_l and α (N, M, M) from ``PeerAttention``:

    - level 1, each peer distils from its own attention-weighted target t_a = Σ_b α_ab z_b;
    - level 2, the leader distils from the plain average of the peers z̄ = (1/M) Σ_a z_a::

        L = Σ_a CE(z_a, t) + CE(z_l, t)
            + β · T² · Σ_a KL(softmax(t_a/T) ‖ softmax(z_a/T))
            + γ · T² · KL(softmax(z̄/T) ‖ softmax(z_l/T))

    Detached: the peer logits z_b inside both targets t_a and z̄, so no KL term pushes the peers that
    make a target. Not detached: α, so the level-1 KL trains the attention (W_q, W_k, and through them the
    features it is given); detaching α too would leave ``PeerAttention`` without any gradient. A 2-D α
    (M, M) is broadcast over the batch.
    """
    _check_cohort(peer_logits, 2, "okddip_loss")
    M = len(peer_logits)
    alpha = attention_weights.unsqueeze(0) if attention_weights.dim() == 2 else attention_weights
    if alpha.shape[-2:] != (M, M):
        raise ValueError(f"attention_weights must be (N, {M}, {M}) or ({M}, {M}), got {tuple(attention_weights.shape)}")
    z = torch.stack([p.detach() for p in peer_logits], dim=1)  # (N, M, C), targets only
    targets = torch.einsum("nab,nbc->nac", alpha.expand(z.shape[0], M, M), z)
    ce = sum(F.cross_entropy(z_a, labels) for z_a in peer_logits) + F.cross_entropy(leader_logits, labels)
    level1 = sum(_kl_attached(z_a, targets[:, a], T) for a, z_a in enumerate(peer_logits))
    level2 = _kl_attached(leader_logits, z.mean(dim=1), T)
    return ce + beta * level1 + gamma * level2
