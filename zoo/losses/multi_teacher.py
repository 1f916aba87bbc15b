"""Multi-teacher distillation: several teachers, one student (survey section 2.3.3).

Survey eq. (7) (Si & Qi 2023):  L_MTD = L_t(l_S, t) + L_KD(l_S, E(l_T1, l_T2, …)),
E = the function integrating the teachers' outputs. The functions here are the L_KD term; the
recipe adds the task loss L_t.

- ``averaged_teacher_kd_loss``: You et al. 2017, E = the mean of the teachers' softened outputs.
  The paper's second term, the relative-dissimilarity loss on intermediate features (a triplet
  ranking loss whose triplet ordering the teachers vote on), is not implemented: how the triplets
  are formed and how the votes are combined is not pinned down precisely enough to reproduce it.
- ``TeacherAttention`` + ``attention_weighted_kd_loss``: the attention-weighted ensemble of Liu et al.
  2020d, E = per-sample weighted mean of the teachers' softened outputs. That method also adds a hint
  loss and an RKD-style angle loss on features; those are separate losses (FitNet in ``features``,
  RKD-angle in ``relations``) which its recipe adds next to this one.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _kl_from_probs(target_probs: Tensor, q_logits: Tensor, T: float) -> Tensor:
    """T²·KL(target ‖ softmax(q/T)) for a target given as probabilities (detached), batch mean."""
    return _kl_target(target_probs.detach(), q_logits, T)


def _kl_target(target: Tensor, q_logits: Tensor, T: float) -> Tensor:
    """T²·KL(target ‖ softmax(q/T)), batch mean, no detach. Zero target entries contribute 0 (value and
    a finite gradient, thanks to the clamp inside the log)."""
    log_q = F.log_softmax(q_logits / T, dim=1)
    return (T * T) * (target * (target.clamp_min(torch.finfo(target.dtype).tiny).log() - log_q)).sum(dim=1).mean()


def _teacher_probs(teacher_logits: Sequence[Tensor], T: float) -> Tensor:
    """Softened teacher outputs stacked to (N, M, C), detached."""
    if len(teacher_logits) < 1:
        raise ValueError("at least one teacher is needed")
    return torch.stack([F.softmax(t.detach() / T, dim=1) for t in teacher_logits], dim=1)


def averaged_teacher_kd_loss(student_logits: Tensor, teacher_logits: Sequence[Tensor], T: float = 4.0) -> Tensor:
    """Averaged multi-teacher KD (You, Xu, Xu & Tao 2017, "Learning from Multiple Teacher Networks", KDD,
    section 3.1); survey eq. (7) with E = mean of softened outputs.

    The teachers' probabilities are averaged (not their logits), then the student matches the average::

        p̄ = (1/M) Σ_m softmax(l_Tm / T),    L = T² · KL(p̄ ‖ softmax(l_S / T))

    With one teacher, or M identical teachers, this is Hinton's KD loss. Teacher logits are detached.
    """
    return _kl_from_probs(_teacher_probs(teacher_logits, T).mean(dim=1), student_logits, T)


class TeacherAttention(nn.Module):
    """Per-sample teacher weights from feature affinity (Liu, Zhang & Wang 2020d, "Adaptive multi-teacher
    multi-level knowledge distillation", Neurocomputing; survey section 2.3.3).

    The student's feature vector s (N, D_s) and each teacher's feature vector t_m (N, D_m) are projected
    to a common dimension d (no bias), and the weights are a softmax over teachers of the inner products::

        w_m = exp(⟨P_s s, P_m t_m⟩) / Σ_k exp(⟨P_s s, P_k t_k⟩)

    Teacher features are detached (the teachers are fixed); the projections and the student features get
    gradients through whatever loss uses ``w``. Output (N, M), rows summing to 1.
    """

    def __init__(self, student_dim: int, teacher_dims: Sequence[int], embed_dim: int = 128) -> None:
        super().__init__()
        if len(teacher_dims) < 1:
            raise ValueError("at least one teacher is needed")
        self.student_proj = nn.Linear(student_dim, embed_dim, bias=False)
        self.teacher_projs = nn.ModuleList(nn.Linear(d, embed_dim, bias=False) for d in teacher_dims)

    def forward(self, student_feat: Tensor, teacher_feats: Sequence[Tensor]) -> Tensor:
        if len(teacher_feats) != len(self.teacher_projs):
            raise ValueError(f"expected {len(self.teacher_projs)} teacher features, got {len(teacher_feats)}")
        query = self.student_proj(student_feat.flatten(1))  # (N, d)
        keys = torch.stack([proj(t.detach().flatten(1)) for proj, t in zip(self.teacher_projs, teacher_feats)], 1)
        return F.softmax(torch.einsum("nd,nmd->nm", query, keys), dim=1)


def attention_weighted_kd_loss(student_logits: Tensor, teacher_logits: Sequence[Tensor], weights: Tensor,
                               T: float = 4.0) -> Tensor:
    """KD against a per-sample weighted teacher ensemble (Liu et al. 2020d, Neurocomputing); survey eq. (7)::

        E_n = Σ_m w_nm · softmax(l_Tm,n / T),    L = T² · mean_n KL(E_n ‖ softmax(l_S,n / T))

    ``weights`` (N, M) are typically ``TeacherAttention``'s output (rows summing to 1). Teacher logits are
    detached; ``weights`` are not, so this loss is what trains the attention module.
    """
    probs = _teacher_probs(teacher_logits, T)  # (N, M, C)
    if weights.shape != probs.shape[:2]:
        raise ValueError(f"weights must be (N, M) = {tuple(probs.shape[:2])}, got {tuple(weights.shape)}")
    return _kl_target((weights.unsqueeze(-1) * probs).sum(dim=1), student_logits, T)
