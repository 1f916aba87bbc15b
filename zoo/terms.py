"""Term builders: turn a recipe `Term` into a module the Distiller calls, sized by the probed shapes.

Each builder receives a `TermContext` (the term, one probe of its student and teacher inputs, the
data's size) and returns a `TermModule` whose ``forward(student_inputs, teacher_inputs, batch)``
returns the scalar loss. The math lives in `zoo.losses`; this module only wires it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from .connectors import make_connector
from .distiller import FunctionTerm, TermContext, TermModule, term_builder
from .losses import adversarial, features, logits, multi_teacher, online, relations, self_distill


def _params(ctx: TermContext) -> dict[str, Any]:
    """The term's hyperparameters, its registration's defaults resolved (`zoo.recipes.term_params`)."""
    return dict(ctx.params)


def _expect(ctx: TermContext, n_student: int | None, n_teacher: int | None) -> None:
    def bad(side: str, got: int, want: int) -> ValueError:
        return ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) needs {want} {side} tap(s), got {got}")

    if n_student is not None and len(ctx.student) != n_student:
        raise bad("student", len(ctx.student), n_student)
    if n_teacher is not None and len(ctx.teacher) != n_teacher:
        raise bad("teacher", len(ctx.teacher), n_teacher)


# ---------------------------------------------------------------- logits (survey eq. 1, section 2.1)
@term_builder("kd", logits.kd_loss)
def _kd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    return FunctionTerm(logits.kd_loss, _params(ctx))


@term_builder("dkd", logits.dkd_loss)
def _dkd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    return FunctionTerm(logits.dkd_loss, _params(ctx), labels=True)


@term_builder("gated_kd", logits.teacher_gated_kd_loss)
def _gated_kd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    return FunctionTerm(logits.teacher_gated_kd_loss, _params(ctx), labels=True)


@term_builder("adaptive_kd", logits.adaptive_temperature_kd_loss)
def _adaptive_kd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    p = _params(ctx)
    return FunctionTerm(logits.adaptive_temperature_kd_loss, p, labels=True)


class _CrossEntropy(TermModule):
    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return F.cross_entropy(student[0].float(), batch["labels"])


@term_builder("ce")
def _ce(ctx: TermContext) -> TermModule:
    """Cross-entropy on the labels as a schedulable term (early-stopped KD hands its weight back to CE)."""
    _expect(ctx, 1, 0)
    _params(ctx)
    return _CrossEntropy()


# ---------------------------------------------------------------- features (survey eqs. 2-3, section 2.2)
class _FitNet(TermModule):
    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size, relu: bool) -> None:
        super().__init__()
        self.connector = make_connector(student_shape, teacher_shape, relu=relu)

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return features.fitnet_loss(self.connector(student[0]), teacher[0])


# relu: the regressor ends in the hint layer's non-linearity (Romero et al. 2015; RepDistiller's ConvReg)
@term_builder("fitnet", relu=True)
def _fitnet(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    p = _params(ctx)
    return _FitNet(ctx.student[0].shape, ctx.teacher[0].shape, p["relu"])


@term_builder("at", features.at_loss)
def _at(ctx: TermContext) -> TermModule:
    _expect(ctx, len(ctx.teacher), None)
    return FunctionTerm(features.at_loss, _params(ctx), lists=True)


class _Pearson(TermModule):
    """PKD over the tapped pairs; a student map with other channels than the teacher's goes through a 1x1
    convolution first (the paper's FPN maps share 256 channels and need none)."""

    def __init__(self, pairs: list[tuple[int, int]], resize_student: bool) -> None:
        super().__init__()
        self.connectors = nn.ModuleList(nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1) for cs, ct in pairs)
        self.resize_student = resize_student

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return features.pearson_loss([c(s) for c, s in zip(self.connectors, student)], teacher,
                                     resize_student=self.resize_student)


@term_builder("pearson", features.pearson_loss)
def _pearson(ctx: TermContext) -> TermModule:
    """PKD (Cao et al. 2022): 1 - Pearson r of the channel-standardised maps, summed over the tapped pairs."""
    _expect(ctx, len(ctx.teacher), None)
    if any(s.dim() != 4 or t.dim() != 4 for s, t in zip(ctx.student, ctx.teacher)):
        raise ValueError(f"term {ctx.term.name!r} (pearson) needs (N, C, H, W) maps")
    return _Pearson([(s.shape[1], t.shape[1]) for s, t in zip(ctx.student, ctx.teacher)], _params(ctx)["resize_student"])


class _MGD(TermModule):
    """One `features.MGDGenerator` per tapped pair; the loss summed over the pairs."""

    def __init__(self, pairs: list[tuple[int, int]], ratio: float, alpha: float) -> None:
        super().__init__()
        self.generators = nn.ModuleList(features.MGDGenerator(cs, ct, ratio) for cs, ct in pairs)
        self.alpha = alpha

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        total = 0.0
        for g, s, t in zip(self.generators, student, teacher):
            if s.shape[2:] != t.shape[2:]:
                s = F.interpolate(s, size=t.shape[2:], mode="bilinear", align_corners=False)
            total = total + features.mgd_loss(g(s), t, self.alpha)
        return total


# ratio: the masked fraction lambda (MMRazor's MGDConnector default, 0.65)
@term_builder("mgd", features.mgd_loss, ratio=0.65)
def _mgd(ctx: TermContext) -> TermModule:
    """MGD (Yang et al. 2022): the teacher's maps regenerated from the masked student maps."""
    _expect(ctx, len(ctx.teacher), None)
    if any(s.dim() != 4 or t.dim() != 4 for s, t in zip(ctx.student, ctx.teacher)):
        raise ValueError(f"term {ctx.term.name!r} (mgd) needs (N, C, H, W) maps")
    p = _params(ctx)
    if not 0.0 <= float(p["alpha"]) < float("inf"):
        raise ValueError(f"mgd.alpha must be a finite number >= 0, got {p['alpha']}")
    return _MGD([(s.shape[1], t.shape[1]) for s, t in zip(ctx.student, ctx.teacher)], p["ratio"], p["alpha"])


class _FSP(TermModule):
    """FSP matrices between consecutive taps: taps [a, b, c] give the pairs (a, b) and (b, c)."""

    def __init__(self, entry_mean: bool) -> None:
        super().__init__()
        self.entry_mean = entry_mean

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return features.fsp_loss(list(zip(student[:-1], student[1:])), list(zip(teacher[:-1], teacher[1:])),
                                 entry_mean=self.entry_mean)


@term_builder("fsp", features.fsp_loss)
def _fsp(ctx: TermContext) -> TermModule:
    _expect(ctx, len(ctx.teacher), None)
    if len(ctx.student) < 2:
        raise ValueError(f"term {ctx.term.name!r} (fsp) needs at least 2 taps per side to form layer pairs")
    return _FSP(**_params(ctx))


class _AFD(TermModule):
    def __init__(self, student_channels: int, teacher_channels: int, num_maps: int) -> None:
        super().__init__()
        self.student_selector = features.FeatureSelection(student_channels, num_maps, learnable=True)
        self.teacher_selector = features.FeatureSelection(teacher_channels, num_maps, learnable=False)

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return features.afd_loss(student[0], teacher[0], self.student_selector, self.teacher_selector)


@term_builder("afd", num_maps=0)
def _afd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    p = _params(ctx)
    c_s, c_t = ctx.student[0].shape[1], ctx.teacher[0].shape[1]
    return _AFD(c_s, c_t, p["num_maps"] or min(c_s, c_t) // 2)


# ---------------------------------------------------------------- structural knowledge (survey eq. 4)
@term_builder("rkd", relations.rkd_loss)
def _rkd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    return FunctionTerm(relations.rkd_loss, _params(ctx), min_batch=3)


@term_builder("rkd_angle")
def _rkd_angle(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    return FunctionTerm(relations.rkd_angle_loss, _params(ctx), min_batch=3)


@term_builder("spkd")
def _spkd(ctx: TermContext) -> TermModule:
    _expect(ctx, len(ctx.teacher), None)
    return FunctionTerm(relations.spkd_loss, _params(ctx), lists=True, min_batch=2)


@term_builder("irg", relations.irg_loss)
def _irg(ctx: TermContext) -> TermModule:
    _expect(ctx, len(ctx.teacher), None)
    p = _params(ctx)
    # normalised edges (distances over their mean) are constant for 2 samples
    return FunctionTerm(relations.irg_loss, p, lists=True, min_batch=3 if p["normalize"] else 2)


class _CRD(TermModule):
    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], n_data: int,
                 labels: torch.Tensor | None = None, **params: Any) -> None:
        super().__init__()
        self.crd = relations.CRDLoss(student_shape, teacher_shape, n_data, labels=labels, **params)

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return self.crd(student[0], teacher[0], batch["index"])


@term_builder("crd", relations.CRDLoss.__init__, negatives="other-class")
def _crd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    if ctx.num_examples < 2:
        raise ValueError("crd needs the training-set size (num_examples) for its memory bank")
    p = _params(ctx)
    if p["negatives"] not in ("other-class", "uniform"):
        raise ValueError(f"crd.negatives must be 'other-class' (RepDistiller's sampling) or 'uniform', got {p['negatives']!r}")
    labels = None
    if p.pop("negatives") == "other-class":
        if ctx.example_labels is None:
            raise ValueError("crd draws its negatives from the other classes (as the authors' code does), which needs "
                             "the class of every training example (Distiller(example_labels=...)); "
                             "set crd.negatives=uniform to draw them from all other examples")
        labels = ctx.example_labels
    p["n_negatives"] = min(p["n_negatives"], ctx.num_examples - 1)
    return _CRD(tuple(ctx.student[0].shape[1:]), tuple(ctx.teacher[0].shape[1:]), ctx.num_examples, labels=labels, **p)


# ---------------------------------------------------------------- online distillation (survey eq. 5)
@term_builder("dml", online.dml_loss)
def _dml(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 0)
    return FunctionTerm(online.dml_loss, _params(ctx), labels=True)


class _ONE(TermModule):
    """Taps: the B branch logits, then the gate's weights."""

    def __init__(self, T: float) -> None:
        super().__init__()
        self.T = T

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return online.one_loss(student[:-1], student[-1], batch["labels"], T=self.T)


@term_builder("one", online.one_loss)
def _one(ctx: TermContext) -> TermModule:
    _expect(ctx, None, 0)
    return _ONE(**_params(ctx))


class _OKDDip(TermModule):
    """Taps: the M peer logits, the leader's logits, then the M peers' pooled features."""

    def __init__(self, peers: int, feat_dim: int, T: float, beta: float, gamma: float) -> None:
        super().__init__()
        self.peers, self.T, self.beta, self.gamma = peers, T, beta, gamma
        self.attention = online.PeerAttention(feat_dim)

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        m = self.peers
        alpha = self.attention([f.flatten(1) for f in student[m + 1:]])
        return online.okddip_loss(student[:m], student[m], alpha, batch["labels"], T=self.T, beta=self.beta,
                                  gamma=self.gamma)


@term_builder("okddip", online.okddip_loss)
def _okddip(ctx: TermContext) -> TermModule:
    _expect(ctx, None, 0)
    if len(ctx.student) < 5 or len(ctx.student) % 2 == 0:
        raise ValueError("okddip taps: M >= 2 peer logits, the leader's logits, then the M peers' features")
    m = (len(ctx.student) - 1) // 2
    return _OKDDip(m, ctx.student[m + 1].flatten(1).shape[1], **_params(ctx))


# ---------------------------------------------------------------- self-distillation (survey eq. 6)
class _BYOT(TermModule):
    """Taps: the shallow sections' feature maps, the deepest feature map, then the deepest logits."""

    def __init__(self, sections: list[torch.Tensor], deepest: torch.Tensor, num_classes: int, **params: Any) -> None:
        super().__init__()
        self.heads = nn.ModuleList(self_distill.SectionHead.from_example(s, deepest, num_classes) for s in sections)
        self.params = params

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        *sections, deepest, logits = student
        outs = [head(s) for head, s in zip(self.heads, sections)]
        return self_distill.byot_loss([o[0] for o in outs] + [logits], [o[1] for o in outs] + [deepest],
                                      batch["labels"], **self.params)


@term_builder("byot", self_distill.byot_loss)
def _byot(ctx: TermContext) -> TermModule:
    _expect(ctx, None, 0)
    if len(ctx.student) < 3:
        raise ValueError("byot taps: one or more shallow sections, the deepest section, then 'logits'")
    p = _params(ctx)
    return _BYOT(ctx.student[:-2], ctx.student[-2], ctx.num_classes, **p)


# ---------------------------------------------------------------- multi-teacher (survey eq. 7)
@term_builder("avg_kd", multi_teacher.averaged_teacher_kd_loss)
def _avg_kd(ctx: TermContext) -> TermModule:
    _expect(ctx, 1, 1)
    return FunctionTerm(multi_teacher.averaged_teacher_kd_loss, _params(ctx))


class _AttentionKD(TermModule):
    """Taps: student (logits, feature); teachers (logits@*, feature@*)."""

    def __init__(self, student_dim: int, teacher_dims: list[int], T: float, embed_dim: int) -> None:
        super().__init__()
        self.T = T
        self.attention = multi_teacher.TeacherAttention(student_dim, teacher_dims, embed_dim)

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        weights = self.attention(student[1], teacher[1])
        return multi_teacher.attention_weighted_kd_loss(student[0], teacher[0], weights, T=self.T)


@term_builder("attention_kd", multi_teacher.attention_weighted_kd_loss, multi_teacher.TeacherAttention.__init__)
def _attention_kd(ctx: TermContext) -> TermModule:
    _expect(ctx, 2, 2)
    p = _params(ctx)
    return _AttentionKD(ctx.student[1].flatten(1).shape[1], [t.flatten(1).shape[1] for t in ctx.teacher[1]], **p)


# ---------------------------------------------------------------- adversarial (survey eqs. 9-10)
class _LogitAdversarial(TermModule):
    def __init__(self, num_classes: int, hidden: tuple[int, ...], conditional: bool, negative_slope: float) -> None:
        super().__init__()
        self.disc = adversarial.LogitDiscriminator(num_classes, hidden=hidden, conditional=conditional,
                                                   negative_slope=negative_slope)

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        labels = batch["labels"] if self.disc.conditional else None
        s, t = student[0].float(), teacher[0].float()
        # Both players in one step: each loss only reaches its own side (see zoo.losses.adversarial).
        return (adversarial.generator_loss(self.disc, s, labels)
                + adversarial.discriminator_loss(self.disc, s, t, labels))


@term_builder("logit_adversarial", adversarial.LogitDiscriminator.__init__)
def _logit_adversarial(ctx: TermContext) -> TermModule:
    """Xu et al. 2018: a (conditional) discriminator tells the teacher's logits from the student's."""
    _expect(ctx, 1, 1)
    p = _params(ctx)
    return _LogitAdversarial(ctx.num_classes, tuple(p["hidden"]), p["conditional"], p["negative_slope"])
