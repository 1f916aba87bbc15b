"""The gan task's loss terms and named recipes (registered when `zoo.tasks` loads the task's recipes).

A batch is ``{"inputs": photos, "labels": the teacher's images of them}`` (both in [-1, 1]; the teacher's
images come from the pseudo-pair cache, `zoo.gan.data.make_pairs`). The task loss is the L1 distance of
the student's image to the teacher's: alone it is the plain twin, the student fitted to the teacher's
outputs as plain targets. Terms that need the teacher's intermediate features tap the teacher, which
then runs at every step; terms that only need its images read them from the batch.

Taps (`zoo.gan.models.ResnetGenerator`, junyanz's layout): ``model.9`` is the ReLU after the second
downsampling (4 ngf channels at 1/4 of the image side), ``model.10`` ... ``model.18`` the nine residual
blocks; ``logits`` the output image.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.distiller import TermContext, TermModule, term_builder
from zoo.recipes import Recipe, Term, register_recipe

from . import losses
from .models import PatchDiscriminator

TASK = "gan"
# GAN Compression's mapping layers (mit-han-lab/gan-compression, base_resnet_distiller.py: 'model.%d' for
# range(9, 21, 3)): the bottleneck's input and the outputs of residual blocks 3, 6 and 9
GAN_COMPRESSION_LAYERS = ["model.9", "model.12", "model.15", "model.18"]


class _FeatureDistill(TermModule):
    """GAN Compression eq. 3: a learnable 1x1 convolution (with bias) per layer maps the student's map to
    the teacher's channels; the MSE per layer, summed."""

    def __init__(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> None:
        super().__init__()
        self.connectors = nn.ModuleList(nn.Conv2d(s.shape[1], t.shape[1], 1) for s, t in zip(student, teacher))

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return losses.feature_distill_loss(student, teacher, self.connectors)


@term_builder("feature_distill")
def _feature_distill(ctx: TermContext) -> TermModule:
    """Intermediate-feature distillation through 1x1 convolutions (Li et al. 2020, eq. 3)."""
    if not ctx.student or len(ctx.student) != len(ctx.teacher):
        raise ValueError(f"term {ctx.term.name!r} (feature_distill) pairs student and teacher layers one to one, got "
                         f"{len(ctx.student)} student and {len(ctx.teacher)} teacher taps")
    for i, (s, t) in enumerate(zip(ctx.student, ctx.teacher)):
        if not (isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor) and s.dim() == 4 and t.dim() == 4):
            raise ValueError(f"term {ctx.term.name!r} (feature_distill): layer {i} needs (N, C, H, W) maps")
        if s.shape[2:] != t.shape[2:]:
            raise ValueError(f"term {ctx.term.name!r} (feature_distill): layer {i} maps differ in size, student "
                             f"{tuple(s.shape)} vs teacher {tuple(t.shape)} (a 1x1 convolution keeps the size)")
    return _FeatureDistill(ctx.student, ctx.teacher)


class _PatchAdversarial(TermModule):
    """An LSGAN PatchGAN discriminator that scores the teacher's images (the batch's labels) as real and the
    student's as fake; it is trained in its own optimizer stage (``discriminator``). The student's side runs
    the discriminator on detached copies of its parameters, so the student's loss never trains it."""

    stage = "discriminator"

    def __init__(self, channels: int, ndf: int, n_layers: int, lr_scale: float) -> None:
        super().__init__()
        self.disc = PatchDiscriminator(channels, ndf, n_layers)
        self.stage_lr_scale = lr_scale

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        from torch.func import functional_call

        frozen = {n: p.detach() for n, p in self.disc.named_parameters()}
        frozen.update(dict(self.disc.named_buffers()))
        return losses.lsgan_generator_loss(functional_call(self.disc, frozen, (student[0],)))

    def adversary_loss(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return losses.lsgan_discriminator_loss(self.disc(batch["labels"]), self.disc(student[0]))


# ndf, n_layers: the 70x70 PatchGAN of CycleGAN and GAN Compression (--ndf 64, n_layers_D 3); lr_scale 1:
# GAN Compression steps D and G with the same Adam settings
@term_builder("patch_adversarial", PatchDiscriminator.__init__, lr_scale=1.0)
def _patch_adversarial(ctx: TermContext) -> TermModule:
    """LSGAN with a PatchGAN discriminator; the teacher's images are the real ones (Mao et al. 2017; Isola et al. 2017)."""
    if len(ctx.student) != 1 or ctx.teacher:
        raise ValueError(f"term {ctx.term.name!r} (patch_adversarial) taps the student's image only (teacher=None: "
                         f"the real images are the batch's teacher images), got {len(ctx.student)} student and "
                         f"{len(ctx.teacher)} teacher taps")
    image = ctx.student[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"term {ctx.term.name!r} (patch_adversarial) needs an image (N, C, H, W)")
    p = dict(ctx.params)
    if not p["lr_scale"] > 0:
        raise ValueError(f"term {ctx.term.name!r} (patch_adversarial): lr_scale must be > 0, got {p['lr_scale']}")
    return _PatchAdversarial(image.shape[1], int(p["ndf"]), int(p["n_layers"]), float(p["lr_scale"]))


GAN_COMPRESSION = "Li et al. 2020, GAN Compression: Efficient Architectures for Interactive Conditional GANs"

for _recipe in [
    # mit-han-lab/gan-compression, scripts/cycle_gan/horse2zebra/distill.sh: lambda_recon 10 (L1 to the
    # teacher's image), lambda_distill 0.01, lambda_gan 1 (default), lsgan, ndf 64.
    Recipe("gan-compression",
           [Term("feature_distill", student=GAN_COMPRESSION_LAYERS, teacher=GAN_COMPRESSION_LAYERS, weight=0.01),
            Term("patch_adversarial", student="logits", teacher=None, weight=1.0)],
           task_weight=10.0, paper=GAN_COMPRESSION,
           description="10 x L1 to the teacher's image + 0.01 x feature MSE through 1x1 convs at model.9/12/15/18 "
                       "+ LSGAN PatchGAN (teacher images real); Li et al. 2020 eq. 3 and their CycleGAN weights"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)
