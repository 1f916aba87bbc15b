"""The face task's loss terms and named recipes (registered when `zoo.tasks` loads the task's recipes).

Taps (`zoo.face.models.FaceRecognizer`): ``embedding`` (N, D) before normalisation, ``head_weight`` the
margin head's class weights (C, D), ``body.layer1..3`` the trunk's stages; ``logits`` the margin logits.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from zoo.distiller import TermContext, TermModule, term_builder
from zoo.recipes import Recipe, Term, register_recipe

TASK = "face"
PROXYLESS = "Shi et al. 2020, ProxylessKD: Direct Knowledge Distillation with Inherited Classifier for Face Recognition"


def inherited_margin_loss(embeddings: torch.Tensor, teacher_weight: torch.Tensor, labels: torch.Tensor,
                          s: float = 64.0, m: float = 0.5) -> torch.Tensor:
    """ProxylessKD: ArcFace cross-entropy of the student's ``embeddings`` (N, D) against the teacher's class
    weights (C, D), which are not trained (detached): the student learns embeddings in the teacher's space,
    with the teacher's classifier. The ArcFace target logit is s cos(theta_y + m) (Deng et al. 2019, eq. 3,
    with InsightFace's continuation past pi - m), the others s cos(theta_j).

    Raises:
        ValueError: embedding and weight dimensions differ (the student's embedding must live in the
            teacher's space), or a label outside the teacher's classes.
    """
    if embeddings.shape[1] != teacher_weight.shape[1]:
        raise ValueError(f"the student's embedding has {embeddings.shape[1]} dimensions, the teacher's classifier "
                         f"{teacher_weight.shape[1]}: ProxylessKD needs the student's embedding in the teacher's space")
    if int(labels.max()) >= teacher_weight.shape[0]:
        raise ValueError(f"label {int(labels.max())} is outside the teacher's {teacher_weight.shape[0]} classes")
    cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(teacher_weight.detach().float(), dim=1)).clamp(-1, 1)
    target = cos.gather(1, labels[:, None])
    sin = (1 - target * target).clamp(min=0).sqrt()
    phi = target * math.cos(m) - sin * math.sin(m)
    phi = torch.where(target > math.cos(math.pi - m), phi, target - math.sin(math.pi - m) * m)
    return F.cross_entropy(s * cos.scatter(1, labels[:, None], phi), labels)


class _Inherited(TermModule):
    def __init__(self, s: float, m: float) -> None:
        super().__init__()
        self.s, self.m = s, m

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return inherited_margin_loss(student[0], teacher[0], batch["labels"], self.s, self.m)


@term_builder("inherited_margin", inherited_margin_loss)
def _inherited(ctx: TermContext) -> TermModule:
    """ProxylessKD: the student's embedding under the teacher's (frozen) ArcFace classifier (Shi et al. 2020)."""
    if len(ctx.student) != 1 or len(ctx.teacher) != 1:
        raise ValueError(f"term {ctx.term.name!r} (inherited_margin) taps the student's embedding and the teacher's "
                         "head_weight")
    e, w = ctx.student[0], ctx.teacher[0]
    if e.dim() != 2 or w.dim() != 2 or e.shape[1] != w.shape[1]:
        raise ValueError(f"term {ctx.term.name!r} (inherited_margin): student embedding {tuple(e.shape)} and teacher "
                         f"classifier {tuple(w.shape)} must share the embedding dimension (the teacher's space)")
    return _Inherited(float(ctx.params["s"]), float(ctx.params["m"]))


def embedding_l2_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean_i || s_i / |s_i| - t_i / |t_i| ||^2 over the batch (= 2 - 2 cos(s_i, t_i)): the L2 distance of the
    L2-normalised embeddings, the space verification compares them in (raw embeddings are unbounded).

    Raises:
        ValueError: shapes differ (apply a connector first)."""
    if student.shape != teacher.shape:
        raise ValueError(f"embedding_l2 needs equal shapes (a connector first): {tuple(student.shape)} vs {tuple(teacher.shape)}")
    return (F.normalize(student.float(), dim=1) - F.normalize(teacher.float(), dim=1)).pow(2).sum(1).mean()


class _EmbeddingL2(TermModule):
    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.connector = torch.nn.Linear(student_dim, teacher_dim, bias=False) if student_dim != teacher_dim else torch.nn.Identity()

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return embedding_l2_loss(self.connector(student[0]), teacher[0])


@term_builder("embedding_l2")
def _embedding_l2(ctx: TermContext) -> TermModule:
    """L2 between the normalised student and teacher embeddings (a linear connector when the sizes differ)."""
    if len(ctx.student) != 1 or len(ctx.teacher) != 1 or ctx.student[0].dim() != 2 or ctx.teacher[0].dim() != 2:
        raise ValueError(f"term {ctx.term.name!r} (embedding_l2) taps one (N, D) embedding of each network")
    return _EmbeddingL2(int(ctx.student[0].shape[1]), int(ctx.teacher[0].shape[1]))


for _recipe in [
    # the baseline ProxylessKD compares with: the student's own ArcFace loss plus the L2 distance of its
    # normalised embedding (through a linear connector when the dimensions differ) to the teacher's. On raw
    # embeddings the MSE is unbounded (an undertrained teacher's reach 1e5 and the run diverges). Weight 1: ours.
    Recipe("embedding-kd", [Term("embedding_l2", student="embedding", teacher="embedding", weight=1.0)], task_weight=1.0,
           paper="the embedding L2 baseline of Shi et al. 2020 (ProxylessKD)",
           description="ArcFace + L2 between the student's and the teacher's normalised embeddings (linear connector)"),
    # the student's own head is not trained (task weight 0): its classifier is the teacher's, frozen
    Recipe("proxyless-kd", [Term("inherited_margin", student="embedding", teacher="head_weight")], task_weight=0.0,
           paper=PROXYLESS, description="ArcFace (s 64, m 0.5) on the student's embedding with the teacher's classifier "
                                        "inherited and frozen (Shi et al. 2020)"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)
