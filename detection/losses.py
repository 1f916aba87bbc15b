"""Detection distillation losses of Chen et al. 2017, "Learning Efficient Object Detection Models with
Knowledge Distillation" (NeurIPS), for both the RPN and the RoI head (RCN) of a Faster R-CNN.

    L_cls = mu * L_hard(P_s, y) + (1 - mu) * L_soft(P_s, P_t)                        (eq. 2)
    L_reg = L_sL1(R_s, y_reg) + nu * L_b(R_s, R_t, y_reg)                             (eq. 3)
    L_b   = ||R_s - y||^2  if ||R_s - y||^2 + m > ||R_t - y||^2,  else 0               (eq. 4)
    L     = L_RPN + lambda * L_RCN + gamma * L_Hint                                   (eq. 1)

L_soft is `zoo.losses.logits.soft_cross_entropy` with class weights (background 1.5, paper sec. 3.1)
at temperature 1 (the paper found no temperature best for detection); L_Hint is FitNet's
(`zoo.losses.features.fitnet_loss`) through an adaptation layer. Only the teacher-bounded
regression loss and the objectness form are detection-specific, and live here.
"""
from __future__ import annotations

import torch
from torch import Tensor

from zoo.losses.logits import soft_cross_entropy

BACKGROUND_WEIGHT = 1.5  # w_0 of L_soft (Chen et al. 2017, sec. 3.1); the other classes weigh 1


def class_weights(num_classes: int, background_weight: float = BACKGROUND_WEIGHT) -> Tensor:
    """w_c for L_soft: ``background_weight`` for class 0 (the background), 1 for the others."""
    weights = torch.ones(num_classes)
    weights[0] = background_weight
    return weights


def objectness_soft_loss(student_logits: Tensor, teacher_logits: Tensor,
                         background_weight: float = BACKGROUND_WEIGHT) -> Tensor:
    """L_soft on the RPN's objectness: each anchor's single logit z is the two-class softmax over
    (background, object) with logits (0, z), weighted as in `class_weights`."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"objectness shapes differ: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    two = lambda z: torch.stack([torch.zeros_like(z), z], -1).reshape(-1, 2)  # noqa: E731
    return soft_cross_entropy(two(student_logits.float()), two(teacher_logits.float()),
                              class_weights=class_weights(2, background_weight))


def bounded_regression_loss(student: Tensor, teacher: Tensor, target: Tensor, margin: float = 0.0) -> Tensor:
    """Teacher-bounded regression loss L_b (Chen et al. 2017, eq. 4), summed over the given boxes.

    ``student``, ``teacher`` and ``target`` are (N, 4) box-regression vectors of the positive samples.
    A box costs the student's squared error ||R_s - y||^2 only while that error, plus ``margin``, is
    above the teacher's: the teacher's quality is an upper bound to reach, not a target to copy.
    The caller normalises the sum (by the number of sampled boxes, as the smooth-L1 term is).
    """
    if not (student.shape == teacher.shape == target.shape) or student.dim() != 2:
        raise ValueError(f"need equal (N, 4) shapes, got {tuple(student.shape)}, {tuple(teacher.shape)}, "
                         f"{tuple(target.shape)}")
    student_error = (student.float() - target.float()).pow(2).sum(-1)
    teacher_error = (teacher.detach().float() - target.float()).pow(2).sum(-1)
    return torch.where(student_error + margin > teacher_error, student_error, torch.zeros_like(student_error)).sum()
