"""The segmentation task's loss terms and named recipes (registered when `zoo.tasks` loads the task's recipes).

Taps are torchvision's LR-ASPP module paths (`zoo.segmentation.models`): ``net.classifier`` is the head's
output before upsampling, the logits at stride 4 (24 x 24 on a 96-pixel scene, teacher and students
alike), and ``net.classifier.cbr`` the head's features of the high-level map (students 64 channels at
12 x 12, the teacher 128 at 6 x 6). The weights are the papers' (see each recipe).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.connectors import make_connector
from zoo.distiller import FunctionTerm, TermContext, TermModule, term_builder
from zoo.recipes import Recipe, Term, register_recipe

from . import losses

TASK = "segmentation"
LOGITS = "net.classifier"
FEATURES = "net.classifier.cbr"


def _one_each(ctx: TermContext) -> None:
    if len(ctx.student) != 1 or len(ctx.teacher) != 1:
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) needs one student and one teacher tap, got "
                         f"{len(ctx.student)} and {len(ctx.teacher)}")
    for side, probe in (("student", ctx.student[0]), ("teacher", ctx.teacher[0])):
        if not isinstance(probe, torch.Tensor) or probe.dim() != 4:
            shape = tuple(probe.shape) if isinstance(probe, torch.Tensor) else type(probe).__name__
            raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) needs a spatial (N, C, H, W) {side} map, got "
                             f"{shape} from {getattr(ctx.term, side)!r}")


def _probe(ctx: TermContext, fn: Any, *args: Any, **params: Any) -> None:
    """Run the loss once on the probed maps, so that shapes and settings that cannot work fail when the
    recipe is built (before anything is written), naming the term and its taps."""
    try:
        fn(*args, **params)
    except ValueError as e:
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}; student {ctx.term.student!r}, teacher "
                         f"{ctx.term.teacher!r}): {e}") from None


@term_builder("pixel_kd", losses.pixel_wise_loss)
def _pixel_kd(ctx: TermContext) -> TermModule:
    """SKD pixel-wise: per-pixel KL of the class distributions (Liu et al. 2019, eq. 1)."""
    _one_each(ctx)
    _probe(ctx, losses.pixel_wise_loss, ctx.student[0], ctx.teacher[0], **ctx.params)
    return FunctionTerm(losses.pixel_wise_loss, dict(ctx.params))


@term_builder("pair_kd", losses.pair_wise_loss)
def _pair_kd(ctx: TermContext) -> TermModule:
    """SKD pair-wise: pooled cosine-similarity maps (Liu et al. 2019, eqs. 2-3)."""
    _one_each(ctx)
    _probe(ctx, losses.pair_wise_loss, ctx.student[0], ctx.teacher[0], **ctx.params)
    return FunctionTerm(losses.pair_wise_loss, dict(ctx.params))


class _CWD(TermModule):
    """CWD on maps of equal shape; with ``connector`` (features), a student map of other channels goes
    through a 1x1-conv connector first. Logits of different class counts are refused."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size, temperature: float,
                 connector: bool) -> None:
        super().__init__()
        self.temperature = temperature
        self.connector = make_connector(student_shape, teacher_shape, identity_if_equal=True) if connector else nn.Identity()

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return losses.cwd_loss(self.connector(student[0]), teacher[0], self.temperature)


# connector: False for logits (the classes must agree); True to distil features of other widths (a 1x1 conv)
@term_builder("cwd", losses.cwd_loss, connector=False)
def _cwd(ctx: TermContext) -> TermModule:
    """Channel-wise distillation (Shu et al. 2021, eqs. 3-4)."""
    _one_each(ctx)
    p = ctx.params
    s, t = ctx.student[0], ctx.teacher[0]
    if p["connector"] and s.shape[2:] != t.shape[2:]:
        raise ValueError(f"term {ctx.term.name!r} (cwd): a connector maps channels, not sizes; student {tuple(s.shape)}, "
                         f"teacher {tuple(t.shape)}")
    if not p["connector"]:
        _probe(ctx, losses.cwd_loss, s, t, p["temperature"])
    else:
        _probe(ctx, losses.cwd_loss, t, t, p["temperature"])
    return _CWD(s.shape, t.shape, p["temperature"], p["connector"])


class _Holistic(TermModule):
    """SKD holistic: the student's WGAN term here; the critic is trained in its own optimizer stage."""

    stage = "critic"

    def __init__(self, num_classes: int, map_size: int, gp_weight: float, lr_scale: float, **critic: Any) -> None:
        super().__init__()
        self.critic = losses.HolisticDiscriminator(num_classes, map_size=map_size, **critic)
        self.gp_weight = gp_weight
        self.stage_lr_scale = lr_scale

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return losses.holistic_loss(self.critic, batch["inputs"], student[0])

    def adversary_loss(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return losses.critic_loss(self.critic, batch["inputs"], student[0], teacher[0], self.gp_weight)


# lr_scale 0.04: SKD's critic is stepped by SGD at 4e-4 beside the student's 1e-2 (run_train_val.sh)
@term_builder("holistic", losses.critic_loss, losses.HolisticDiscriminator.__init__, lr_scale=0.04)
def _holistic(ctx: TermContext) -> TermModule:
    """SKD holistic: a conditional Wasserstein critic on (image, score map) (Liu et al. 2019, eq. 4)."""
    _one_each(ctx)
    s, t = ctx.student[0], ctx.teacher[0]
    if s.shape != t.shape:
        raise ValueError(f"term {ctx.term.name!r} (holistic) compares score maps of one shape, got student "
                         f"{tuple(s.shape)} and teacher {tuple(t.shape)}")
    p = dict(ctx.params)
    p.pop("map_size", None)  # the critic is sized by the probed score map ...
    p.pop("image_channels", None)  # ... and the images
    if not p["lr_scale"] > 0 or p["gp_weight"] < 0:
        raise ValueError(f"term {ctx.term.name!r} (holistic): lr_scale must be > 0 and gp_weight >= 0, got "
                         f"{p['lr_scale']} and {p['gp_weight']}")
    try:
        return _Holistic(s.shape[1], min(s.shape[2:]), p.pop("gp_weight"), p.pop("lr_scale"), image_channels=3, **p)
    except ValueError as e:
        raise ValueError(f"term {ctx.term.name!r} (holistic; taps {ctx.term.student!r}): {e}") from None


SKD = "Liu et al. 2019, Structured Knowledge Distillation for Semantic Segmentation"
CWD = "Shu et al. 2021, Channel-wise Knowledge Distillation for Dense Prediction"
PKD = "Cao et al. 2022, PKD: General Distillation Framework for Object Detectors via Pearson Correlation Coefficient"
MGD = "Yang et al. 2022, Masked Generative Distillation"
# Pair-wise nodes: the official code max-pools the 65 x 65 map with a kernel of half its side (3 x 3 nodes);
# the zoo's maps differ in size (student 12 x 12, teacher 6 x 6), so both are pooled to beta x beta = 6 x 6.
_PAIR = {"nodes": 6}

for _recipe in [
    # SKD's weights (irfanICMLL/structure_knowledge_distillation, run_train_val.sh): lambda_pi 10,
    # lambda_pa 0.5, lambda_d 0.1 (the holistic term and its critic), gradient penalty 10.
    Recipe("skd", [Term("pixel_kd", student=LOGITS, teacher=LOGITS, weight=10.0),
                   Term("pair_kd", student=FEATURES, teacher=FEATURES, weight=0.5, params=_PAIR),
                   Term("holistic", student=LOGITS, teacher=LOGITS, weight=0.1)],
           paper=SKD, description="pixel-wise + pair-wise + holistic (adversarial) distillation, the paper's weights"),
    Recipe("pixel-kd", [Term("pixel_kd", student=LOGITS, teacher=LOGITS, weight=10.0)], paper=SKD,
           description="per-pixel KL of the class distributions (SKD's pixel-wise term, weight 10)"),
    Recipe("pair-kd", [Term("pair_kd", student=FEATURES, teacher=FEATURES, weight=0.5, params=_PAIR)], paper=SKD,
           description="similarities between pooled positions of the last features (SKD's pair-wise term)"),
    # CWD on logits: T = 4 (the paper's, Cityscapes) and weight 3 (the authors' TorchDistiller exp_cwd.sh:
    # lambda_cwd 3; MMRazor's config uses tau 1, weight 5).
    Recipe("cwd", [Term("cwd", student=LOGITS, teacher=LOGITS, weight=3.0, params={"temperature": 4.0})], paper=CWD,
           description="each channel's spatial distribution (softmax over positions, T = 4), KL, T^2 / C"),
    # PKD: MMRazor's Faster R-CNN config weights each FPN level's loss 6
    # (configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py); here the last features
    Recipe("pearson-kd", [Term("pearson", student=FEATURES, teacher=FEATURES, weight=6.0)], paper=PKD,
           description="1 - Pearson correlation of the channel-standardised last features (PKD, weight 6; a 1x1 "
                       "convolution first where the channels differ)"),
    # MGD: alpha 2e-5 and mask ratio 0.65, MMRazor's MGDLoss / MGDConnector defaults (the paper's detection values)
    Recipe("mgd", [Term("mgd", student=FEATURES, teacher=FEATURES)], paper=MGD,
           description="the teacher's last features regenerated from the randomly masked student features (MGD)"),
    Recipe("cwd+pixel", [Term("cwd", student=LOGITS, teacher=LOGITS, weight=3.0, params={"temperature": 4.0}),
                         Term("pixel_kd", student=LOGITS, teacher=LOGITS, weight=10.0)], paper=f"{CWD}; {SKD}",
           description="channel-wise and pixel-wise distillation of the logits together"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)
