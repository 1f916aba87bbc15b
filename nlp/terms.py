"""Term builders for transformer distillation (registered into the core's `zoo.distiller.TERM_BUILDERS`).

Taps name the probes of `zoo.nlp.models.TextClassifier`: ``hidden.m`` (m = 0: embeddings) and
``scores.m`` (attention scores of layer m). Terms take lists of pairs, summed over layers as in the
papers; projections from the student's width to the teacher's are learned with the student.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.distiller import FunctionTerm, TermContext, TermModule, term_builder
from zoo.losses.logits import soft_cross_entropy

from . import losses


def _pairs(ctx: TermContext) -> int:
    if not ctx.student or len(ctx.student) != len(ctx.teacher):
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) needs as many student as teacher taps, "
                         f"got {len(ctx.student)} and {len(ctx.teacher)}")
    return len(ctx.student)


def _no_params(ctx: TermContext) -> dict[str, Any]:
    """The term's resolved hyperparameters (`zoo.recipes.term_params` refused any it does not take)."""
    return dict(ctx.params)


class _ProjectedPairs(TermModule):
    """A loss on pairs of token states, the student's projected by one learned linear map (W_h / W_e)."""

    def __init__(self, student_dim: int, teacher_dim: int, loss: str) -> None:
        super().__init__()
        self.connector = nn.Linear(student_dim, teacher_dim)
        self.loss = loss

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["inputs"]["attention_mask"]
        if self.loss == "patient":
            return losses.patient_loss([self.connector(s[:, 0]) for s in student], [t[:, 0] for t in teacher])
        fn = losses.hidden_mse if self.loss == "mse" else losses.cosine_hidden_loss
        return sum(fn(self.connector(s), t, mask) for s, t in zip(student, teacher))


def _projected(ctx: TermContext, loss: str) -> TermModule:
    _pairs(ctx)
    _no_params(ctx)
    return _ProjectedPairs(ctx.student[0].shape[-1], ctx.teacher[0].shape[-1], loss)


@term_builder("hidden_mse")
def _hidden_mse(ctx: TermContext) -> TermModule:
    """TinyBERT eqs. 8-9 (embeddings: one pair ``hidden.0``; layers: pairs ``hidden.m`` / ``hidden.g(m)``)."""
    return _projected(ctx, "mse")


@term_builder("patient")
def _patient(ctx: TermContext) -> TermModule:
    return _projected(ctx, "patient")


@term_builder("cosine_hidden")
def _cosine_hidden(ctx: TermContext) -> TermModule:
    return _projected(ctx, "cosine")


class _AttentionScores(TermModule):
    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["inputs"]["attention_mask"]
        return sum(losses.attention_score_mse(s, t, mask) for s, t in zip(student, teacher))


@term_builder("attention_mse")
def _attention_mse(ctx: TermContext) -> TermModule:
    """TinyBERT eq. 7, summed over the mapped layers; student and teacher need the same number of heads."""
    _pairs(ctx)
    _no_params(ctx)
    if ctx.student[0].shape[1] != ctx.teacher[0].shape[1]:
        raise ValueError(f"term {ctx.term.name!r}: the student has {ctx.student[0].shape[1]} attention heads, "
                         f"the teacher {ctx.teacher[0].shape[1]}; TinyBERT's attention loss needs the same number")
    return _AttentionScores()


@term_builder("soft_ce", soft_cross_entropy)
def _soft_ce(ctx: TermContext) -> TermModule:
    return FunctionTerm(soft_cross_entropy, _no_params(ctx))
