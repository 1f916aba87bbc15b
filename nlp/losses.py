"""Transformer distillation losses over token sequences, with padding excluded (``mask``: (N, L), 1 = token).

TinyBERT (Jiao et al. 2020, "TinyBERT: Distilling BERT for Natural Language Understanding", sec. 3.1):

- attention (eq. 7): L_attn = 1/h sum_i MSE(A_i^S, A_i^T), A_i the *unnormalised* attention scores of
  head i (Q K^T / sqrt(d_k), before the softmax), averaged over the (query, key) pairs of real tokens;
- hidden states (eq. 8): L_hidn = MSE(H^S W_h, H^T), the student's states projected by a learned W_h;
- embeddings (eq. 9): L_embd = MSE(E^S W_e, E^T).

The projections are modules of the term (`zoo.nlp.terms`); these functions take projected states.
The paper's implementation averages over padding too; here padded positions are left out, so the
loss does not depend on how a batch is padded.

Patient KD (Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression", eq. 5):
L_PT = sum_j || h_S,j / ||h_S,j|| - h_T,g(j) / ||h_T,g(j)|| ||^2 over the [CLS] (first-token) states.

DistilBERT (Sanh et al. 2019, sec. 3): a cosine embedding loss aligning the directions of the
student's and the teacher's hidden states, L_cos = mean over tokens of 1 - cos(h_S W, h_T).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_mask(x: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != x.shape[:2]:
        raise ValueError(f"mask must be (N, L) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    return mask.to(torch.float32)


def attention_score_mse(student_scores: Tensor, teacher_scores: Tensor, mask: Tensor) -> Tensor:
    """TinyBERT eq. 7 on (N, heads, L, L) scores; mean over heads and real (query, key) pairs."""
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 4:
        raise ValueError(f"scores must be (N, heads, L, L) of one shape, got {tuple(student_scores.shape)} "
                         f"and {tuple(teacher_scores.shape)}")
    m = mask.to(torch.float32)
    if m.shape != (student_scores.shape[0], student_scores.shape[-1]):
        raise ValueError(f"mask must be (N, L), got {tuple(mask.shape)}")
    pairs = (m[:, :, None] * m[:, None, :]).unsqueeze(1)  # (N, 1, L, L)
    sq = (student_scores.float() - teacher_scores.detach().float()).pow(2) * pairs
    return sq.sum() / (pairs.sum() * student_scores.shape[1]).clamp(min=1.0)


def hidden_mse(student_projected: Tensor, teacher_hidden: Tensor, mask: Tensor) -> Tensor:
    """TinyBERT eqs. 8-9: mean squared error over the features of real tokens (student already projected)."""
    if student_projected.shape != teacher_hidden.shape:
        raise ValueError(f"projected student {tuple(student_projected.shape)} and teacher {tuple(teacher_hidden.shape)} "
                         "states must have one shape")
    m = _check_mask(student_projected, mask).unsqueeze(-1)
    sq = (student_projected.float() - teacher_hidden.detach().float()).pow(2) * m
    return sq.sum() / (m.sum() * student_projected.shape[-1]).clamp(min=1.0)


def patient_loss(student_cls: list[Tensor], teacher_cls: list[Tensor]) -> Tensor:
    """Sun et al. 2019, Patient Knowledge Distillation for BERT Model Compression, eq. 5: the squared
    distance between the L2-normalised first-token ([CLS]) states of paired student and teacher layers.

    Normalised as the authors' code does (intersun/PKD-for-BERT-Model-Compression, ``patience_loss`` with
    ``normalized_patience``: ``F.mse_loss`` of the normalised states): the mean over layer pairs, examples
    *and* hidden units, mean_{j,i,h} (s_ij/|s_ij| - t_ij/|t_ij|)_h^2, for which their beta = 100..500 was
    tuned. The paper's eq. 5 sums over the hidden units instead (a factor of d larger; d = 768 for BERT-base).
    Each list entry is (N, d) (student states projected to the teacher's width).
    """
    if len(student_cls) != len(teacher_cls) or not student_cls:
        raise ValueError(f"need matching non-empty layer lists, got {len(student_cls)} and {len(teacher_cls)}")
    total = student_cls[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_cls, teacher_cls):
        if s.shape != t.shape:
            raise ValueError(f"student and teacher states differ in shape: {tuple(s.shape)} vs {tuple(t.shape)}")
        diff = F.normalize(s.float(), dim=-1) - F.normalize(t.detach().float(), dim=-1)
        total = total + diff.pow(2).mean()
    return total / len(student_cls)


def cosine_hidden_loss(student_projected: Tensor, teacher_hidden: Tensor, mask: Tensor) -> Tensor:
    """DistilBERT's cosine embedding loss: mean over real tokens of 1 - cos(student, teacher)."""
    if student_projected.shape != teacher_hidden.shape:
        raise ValueError(f"shapes differ: {tuple(student_projected.shape)} vs {tuple(teacher_hidden.shape)}")
    m = _check_mask(student_projected, mask)
    cos = F.cosine_similarity(student_projected.float(), teacher_hidden.detach().float(), dim=-1)
    return ((1.0 - cos) * m).sum() / m.sum().clamp(min=1.0)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform mapping g(m) = m * N / M (floor) for m = 1..M: the teacher layer each student
    layer learns from (layer 0 = embeddings maps to 0)."""
    if not 0 < student_layers <= teacher_layers:
        raise ValueError(f"need 0 < student layers ({student_layers}) <= teacher layers ({teacher_layers})")
    return [m * teacher_layers // student_layers for m in range(1, student_layers + 1)]
