"""Losses on network outputs (Si & Qi 2023, section 1 and section 2.1; survey eq. 1).

Survey eq. (1): L = λ L_task(l_S, t) + (1 - λ) T² L_KD(l_S, l_T). The functions here return the KD
term (with its T² factor where the paper has one); the recipe adds the task loss and the weights.
Logits are ``(N, C)``; labels are ``(N,)`` class indices. All maths is done in float32 so the losses
behave the same under autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kd_loss",
    "dkd_loss",
    "teacher_gated_kd_loss",
    "adaptive_temperature_kd_loss",
    "sample_temperatures",
    "kl_per_sample",
    "soft_cross_entropy",
]

_REDUCTIONS = ("mean", "none")


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be (N, C), got shape {tuple(student_logits.shape)}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same shape"
        )
    if labels is not None and labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"labels must be (N,) = ({student_logits.shape[0]},), got shape {tuple(labels.shape)}"
        )


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _upcast(x: Tensor) -> Tensor:
    """Half-precision inputs (autocast) are computed in float32; float32/float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, T: Tensor | float) -> Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) for each sample, summed over classes; shape ``(N,)``.

    ``T`` is a float or an ``(N,)`` tensor of per-sample temperatures. No T² factor, no detaching:
    a building block for the public losses.
    """
    if isinstance(T, Tensor) and T.dim() == 1:
        T = T.unsqueeze(1)
    log_p_s = F.log_softmax(_upcast(student_logits) / T, dim=1)
    log_p_t = F.log_softmax(_upcast(teacher_logits) / T, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0, reduction: str = "mean") -> Tensor:
    """Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"; survey eq. (1).

    L_KD = T² · KL(softmax(l_T / T) ‖ softmax(l_S / T)), summed over classes, mean over the batch
    (``reduction="none"`` returns the ``(N,)`` per-sample values). The T² factor keeps the gradient
    magnitude roughly independent of T (Hinton et al., section 2).
    """
    _check_logits(student_logits, teacher_logits)
    if T <= 0:
        raise ValueError(f"temperature T must be positive, got {T}")
    per_sample = (T * T) * kl_per_sample(student_logits, teacher_logits.detach(), T)
    return _reduce(per_sample, reduction)


def _binary_log_probs(logits: Tensor, labels: Tensor, target_mask: Tensor, T: float) -> Tensor:
    """log [p_target, p_non-target] of softmax(logits / T), computed stably; shape ``(N, 2)``."""
    z = logits.float() / T
    log_norm = torch.logsumexp(z, dim=1)
    log_target = z.gather(1, labels[:, None]).squeeze(1) - log_norm
    log_other = torch.logsumexp(z.masked_fill(target_mask, float("-inf")), dim=1) - log_norm
    return torch.stack([log_target, log_other], dim=1)


def _non_target_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """The ``(N, C-1)`` logits with each sample's target class removed (a gather: no host sync, unlike a
    boolean mask, whose output size the host must read)."""
    n, c = logits.shape
    columns = torch.arange(c - 1, device=logits.device).expand(n, c - 1)
    return logits.gather(1, columns + (columns >= labels[:, None]).long())


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, alpha: float = 1.0,
             beta: float = 8.0, T: float = 4.0) -> Tensor:
    """Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR).

    L = α · TCKD + β · NCKD, mean over the batch, with
      TCKD = T² · KL(b_T ‖ b_S),  b = [p_t, 1 - p_t] (target vs. all non-target probability at T),
      NCKD = T² · KL(p̂_T ‖ p̂_S),  p̂ = softmax over the C-1 non-target logits / T (target excluded).
    """
    _check_logits(student_logits, teacher_logits, labels)
    if student_logits.shape[1] < 2:
        raise ValueError("dkd_loss needs at least 2 classes")
    teacher_logits = teacher_logits.detach()
    mask = F.one_hot(labels, student_logits.shape[1]).bool()
    b_s = _binary_log_probs(student_logits, labels, mask, T)
    b_t = _binary_log_probs(teacher_logits, labels, mask, T)
    tckd = F.kl_div(b_s, b_t, reduction="none", log_target=True).sum(dim=1)
    nckd = kl_per_sample(_non_target_logits(student_logits, labels), _non_target_logits(teacher_logits, labels), T)
    return (T * T) * (alpha * tckd + beta * nckd).mean()


def teacher_gated_kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float = 4.0) -> Tensor:
    """Meng et al. 2019, as the survey describes it (Si & Qi 2023, section 2.1).

    The student learns the teacher's output only where the teacher is right; where it is wrong the
    student learns the true target instead:
      L = mean_i [ c_i · T² KL_i(softmax(l_T/T) ‖ softmax(l_S/T)) + (1 - c_i) · CE(l_S, y_i) ],
      c_i = 1[argmax l_T,i = y_i].
    This replaces the KD term of eq. (1); the recipe still adds the usual task loss with its weight.
    """
    _check_logits(student_logits, teacher_logits, labels)
    teacher_logits = teacher_logits.detach()
    correct = (teacher_logits.argmax(dim=1) == labels).float()
    kd = kd_loss(student_logits, teacher_logits, T=T, reduction="none")
    ce = F.cross_entropy(student_logits.float(), labels, reduction="none")
    return (correct * kd + (1.0 - correct) * ce).mean()


def sample_temperatures(teacher_logits: Tensor, labels: Tensor, T: float = 4.0, beta: float = 2.0,
                        gamma: float = 2.0, confidence: str = "focal", t_min: float = 1.0,
                        t_max: float = 10.0) -> Tensor:
    """Per-sample temperatures T_i of :func:`adaptive_temperature_kd_loss`; shape ``(N,)``, no grad."""
    with torch.no_grad():
        p = F.softmax(teacher_logits.float(), dim=1)
        if confidence == "focal":
            hardness = (1.0 - p.gather(1, labels.unsqueeze(1)).squeeze(1)).pow(gamma)
        elif confidence == "norm":
            hardness = 1.0 - p.norm(dim=1)
        else:
            raise ValueError(f"confidence must be 'focal' or 'norm', got {confidence!r}")
        temps = T + beta * (hardness.mean() - hardness)
        return temps.clamp(min=t_min, max=t_max)


def adaptive_temperature_kd_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float = 4.0,
                                 beta: float = 2.0, gamma: float = 2.0, confidence: str = "focal",
                                 t_min: float = 1.0, t_max: float = 10.0) -> Tensor:
    """Sample-wise temperature KD: Wen et al. 2021, "Preparing lessons: Improve knowledge
    distillation with better supervision" (Neurocomputing), dynamic temperature distillation,
    as the survey describes it (Si & Qi 2023, section 2.1): a per-sample temperature set from a
    focal-loss-like confidence or from the norm of the probability vector.

    Definition implemented (the form of the paper's DTD, τ_i = T_0 + β(mean_j w_j - w_i), with the
    weight w computed from the teacher; the exact weight of the paper was not checked):
      p_i  = softmax(l_T,i) (temperature 1),
      w_i  = (1 - p_i[y_i])^γ          if confidence == "focal"  (hard sample: large w),
           = 1 - ‖p_i‖_2               if confidence == "norm"   (flat output: large w),
      T_i  = clip(T + β · (mean_j w_j - w_i), t_min, t_max),
      L    = mean_i T_i² · KL(softmax(l_T,i / T_i) ‖ softmax(l_S,i / T_i)).
    Confident (sharp) teacher outputs get T_i > T, which softens them; uncertain ones get T_i < T.
    The temperatures are constants for the gradient. With β = 0 this is :func:`kd_loss`.
    """
    _check_logits(student_logits, teacher_logits, labels)
    if t_min <= 0 or t_max < t_min:
        raise ValueError(f"need 0 < t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    teacher_logits = teacher_logits.detach()
    temps = sample_temperatures(teacher_logits, labels, T, beta, gamma, confidence, t_min, t_max)
    return (temps.pow(2) * kl_per_sample(student_logits, teacher_logits, temps)).mean()


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0,
                       class_weights: Tensor | None = None) -> Tensor:
    """Cross-entropy of the student's tempered softmax against the teacher's (Jiao et al. 2020, TinyBERT
    eq. 10; also the distillation loss of Sun et al. 2019 and Sanh et al. 2019):

        L = -1/N sum_n sum_c w_c softmax(z_T / T)_c log softmax(z_S / T)_c

    with every w_c = 1 by default. ``class_weights`` gives the class-weighted form of Chen et al. 2017
    ("Learning Efficient Object Detection Models with Knowledge Distillation", NeurIPS, L_soft of
    eq. 2), where the background class weighs more (w_0 = 1.5) to offset its imbalance.
    It differs from `kd_loss` by the teacher's entropy (a constant for the student) and has no T^2 factor.
    """
    _check_logits(student_logits, teacher_logits)
    if T <= 0:
        raise ValueError(f"temperature T must be positive, got {T}")
    target = F.softmax(teacher_logits.detach().float() / T, dim=-1)
    terms = target * F.log_softmax(student_logits.float() / T, dim=-1)
    if class_weights is not None:
        if class_weights.shape != terms.shape[-1:]:
            raise ValueError(f"class_weights must have one weight per class ({terms.shape[-1]}), "
                             f"got shape {tuple(class_weights.shape)}")
        terms = terms * class_weights.to(terms.device, terms.dtype)
    return -terms.sum(-1).mean()
