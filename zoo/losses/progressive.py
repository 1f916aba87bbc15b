"""Progressive distillation: the student follows the teacher's training process (survey section 2.3.4).

Survey eq. (8) (Si & Qi 2023):  L_PKD = L_t(l_S, t) + L_t(l_T, t) + L_KD(l_S, l_T), teacher and student
trained together (``joint_progressive_loss``). The other route the survey describes supervises the
student in stages with a sequence of the teacher's checkpoints ("snapshots", Yang et al. 2019; anchor
points along the teacher's optimisation route, Jin et al. 2019); ``snapshot_index`` is its schedule,
and the per-stage loss is ordinary KD against the current snapshot.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from .logits import kd_loss


def snapshot_index(epoch: float, total_epochs: float, num_snapshots: int) -> int:
    """Which teacher snapshot (0 = earliest) supervises the student at ``epoch`` (fractional allowed).

    Route-constrained optimisation (Jin et al. 2019, "Knowledge Distillation via Route Constrained
    Optimization", ICCV) trains the student against anchor points of the teacher's route, one after the
    other, from the earliest to the converged teacher. Here the student's schedule is cut into
    ``num_snapshots`` equal stages: stage k covers epochs [k·E/S, (k+1)·E/S) and uses snapshot k, i.e.
    ``floor(epoch · S / E)``; the last stage also includes ``epoch == total_epochs``. Jin et al. pick
    their anchors on the teacher's side (e.g. at equal epoch intervals); which checkpoints make the
    snapshots is up to the recipe.
    """
    if total_epochs <= 0 or num_snapshots < 1:
        raise ValueError(f"need total_epochs > 0 and num_snapshots ≥ 1, got {total_epochs}, {num_snapshots}")
    if not 0 <= epoch <= total_epochs:
        raise ValueError(f"epoch must lie in [0, {total_epochs}], got {epoch}")
    return min(int(math.floor(epoch * num_snapshots / total_epochs)), num_snapshots - 1)


def joint_progressive_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, T: float = 4.0) -> Tensor:
    """Teacher and student trained together (survey eq. (8); the setting of e.g. Zhao et al. 2019's
    student-following teacher)::

        L = CE(l_S, t) + CE(l_T, t) + T² · KL(softmax(l_T/T) ‖ softmax(l_S/T))

    Exception to the package's rule that teacher inputs are detached: here the teacher is being trained,
    so CE(l_T, t) back-propagates into ``teacher_logits`` (and the teacher's parameters). Only inside the
    KL term is l_T detached: the teacher learns from the labels alone and is never pulled toward the
    student, while the student learns from both the labels and the teacher.
    """
    return (F.cross_entropy(student_logits, labels) + F.cross_entropy(teacher_logits, labels)
            + kd_loss(student_logits, teacher_logits, T=T))
