"""The gan task's loss terms and named recipes (registered when `zoo.tasks` loads the task's recipes).

A batch is ``{"inputs": photos, "labels": the teacher's images of them}`` (both in [-1, 1]; the teacher's
images come from the pseudo-pair cache, `zoo.gan.data.make_pairs`). The task loss is the L1 distance of
the student's image to the teacher's: alone it is the plain twin, the student fitted to the teacher's
outputs as plain targets. The recipes' feature terms read the teacher's maps from the batch too
(``teacher_maps``, ``teacher_pooled``: recorded once with the pairs), so the teacher never runs in their
training; a term given teacher taps instead runs the teacher at every step.

Taps (`zoo.gan.models.ResnetGenerator`, junyanz's layout): ``model.9`` is the ReLU after the second
downsampling (4 ngf channels at 1/4 of the image side), ``model.10`` ... ``model.18`` the nine residual
blocks; ``logits`` the output image.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.distiller import TermContext, TermModule, term_builder
from zoo.recipes import Recipe, Term, register_recipe, register_student_init

from . import losses
from .inherit import INIT as INHERIT_CHANNELS, inherit_channels
from .models import MAPPING_LAYERS, STRIDE, PatchDiscriminator

TASK = "gan"
GAN_COMPRESSION_LAYERS = list(MAPPING_LAYERS)


class _FeatureDistill(TermModule):
    """GAN Compression eq. 3: a learnable 1x1 convolution (with bias) per layer maps the student's map to
    the teacher's channels; the MSE per layer, summed. Without teacher taps, the teacher's maps are read
    from the batch (``teacher_maps``, (B, layers, C, h, w), stored once by `zoo.gan.maps`), so the teacher
    does not run."""

    def __init__(self, student: list[torch.Tensor], channels: list[int]) -> None:
        super().__init__()
        self.connectors = nn.ModuleList(nn.Conv2d(s.shape[1], c, 1) for s, c in zip(student, channels))

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        if not teacher:
            maps = batch["teacher_maps"]
            teacher = [maps[:, i] for i in range(maps.shape[1])]
        return losses.feature_distill_loss(student, teacher, self.connectors)


@term_builder("feature_distill")
def _feature_distill(ctx: TermContext) -> TermModule:
    """Intermediate-feature distillation through 1x1 convolutions (Li et al. 2020, eq. 3); with ``teacher=None``
    the teacher's maps at the same layers come with the batch (``teacher_maps``)."""
    if not ctx.teacher:
        maps = _recorded(ctx, "teacher_maps", "maps", "zoo.gan.data.make_pairs(..., maps=True) (zoo.distill does)")
        _same_places(ctx, [maps[:, i] for i in range(maps.shape[1])])
        return _FeatureDistill(ctx.student, [int(maps.shape[2])] * len(ctx.student))
    if not ctx.student or len(ctx.student) != len(ctx.teacher):
        raise ValueError(f"term {ctx.term.name!r} (feature_distill) pairs student and teacher layers one to one, got "
                         f"{len(ctx.student)} student and {len(ctx.teacher)} teacher taps")
    _same_places(ctx)
    return _FeatureDistill(ctx.student, [t.shape[1] for t in ctx.teacher])


def _recorded(ctx: TermContext, key: str, what: str, how: str) -> torch.Tensor:
    """The teacher's recorded ``key`` ((B, layers, ...)) in the term's example batch, checked against the
    term's student layers; ValueError, saying how to record them, when the data has none."""
    found = (ctx.batch or {}).get(key)
    if found is None:
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) has no teacher taps, so it reads the teacher's "
                         f"{what} from the batch ({key!r}), and the data has none: make the pairs with {how}, or tap "
                         "the teacher's layers")
    if not ctx.student or len(ctx.student) != found.shape[1]:
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}): {len(ctx.student)} student layers for the "
                         f"{found.shape[1]} teacher layers the data carries")
    return found


def _same_places(ctx: TermContext, teacher: list[torch.Tensor] | None = None) -> None:
    """Paired student and teacher maps (``teacher``: the batch's, else the taps') must be (N, C, H, W) of one
    size: the same place in both networks. The recipes' layers (model.9 ... model.18) are those of a 9-block
    generator; in another depth they name other modules (in a 6-block one, model.18 is an upsampling layer at
    twice the size)."""
    for i, (s, t) in enumerate(zip(ctx.student, ctx.teacher if teacher is None else teacher)):
        if not (isinstance(s, torch.Tensor) and isinstance(t, torch.Tensor) and s.dim() == 4 and t.dim() == 4):
            raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}): layer {i} needs (N, C, H, W) maps")
        if s.shape[2:] != t.shape[2:]:
            paths = ctx.term.student if isinstance(ctx.term.student, list) else [ctx.term.student]
            raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}): the student's {paths[i]!r} is "
                             f"{tuple(s.shape[1:])} but the teacher's is {tuple(t.shape[1:])}: not the same place in "
                             "both networks. The recipe's layers are those of a 9-block generator; use a 9-block "
                             "student (cyclegan-resnet9-*) or set the term's student/teacher layers "
                             "(ResnetGenerator.block_paths)")


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


def _student_image(ctx: TermContext) -> torch.Tensor:
    if len(ctx.student) != 1 or ctx.teacher:
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) taps the student's image only (teacher=None: the "
                         f"teacher's image is the batch's label), got {len(ctx.student)} student and "
                         f"{len(ctx.teacher)} teacher taps")
    image = ctx.student[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"term {ctx.term.name!r} ({ctx.term.loss}) needs an RGB image (N, 3, H, W)")
    return image


def _unit(images: torch.Tensor) -> torch.Tensor:
    return (images + 1) / 2


class _ImageTerm(TermModule):
    """A loss of the student's image and the batch's teacher image (both [-1, 1])."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        return self.fn(student[0], batch["labels"])


@term_builder("ssim")
def _ssim(ctx: TermContext) -> TermModule:
    """1 - SSIM between the student's and the teacher's images (OMGD's image-quality term)."""
    _student_image(ctx)
    return _ImageTerm(losses.ssim_loss)


@term_builder("total_variation")
def _tv(ctx: TermContext) -> TermModule:
    """Total variation of the student's image (OMGD's smoothness term)."""
    _student_image(ctx)
    return _ImageTerm(lambda s, t: losses.total_variation(s))


class _FeatureTerm(TermModule):
    """Style (Gram L1 over every layer) or perceptual (L1 of one layer) loss on the frozen ImageNet features
    (`zoo.gan.features`) of the student's and the teacher's images."""

    def __init__(self, kind: str, layer: int) -> None:
        super().__init__()
        from .features import CUTS, ImageNetFeatures

        if not 0 <= layer < len(CUTS):
            raise ValueError(f"layer must index the {len(CUTS)} feature maps (0..{len(CUTS) - 1}), got {layer}")
        self.kind, self.layer = kind, layer
        self.features = ImageNetFeatures()

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        s = self.features(_unit(student[0]))
        with torch.no_grad():
            t = self.features(_unit(batch["labels"]))
        if self.kind == "style":
            return losses.style_loss(s, t)
        return torch.nn.functional.l1_loss(s[self.layer].float(), t[self.layer].float())


# layer 1: the stride-4 map standing in for VGG's relu2_2, the one layer OMGD's feature term reads
@term_builder("perceptual", layer=1)
def _perceptual(ctx: TermContext) -> TermModule:
    """L1 between the ImageNet features of the student's and the teacher's images at one layer (Johnson et al. 2016)."""
    _student_image(ctx)
    return _FeatureTerm("perceptual", int(ctx.params["layer"]))


@term_builder("style")
def _style(ctx: TermContext) -> TermModule:
    """L1 between Gram matrices of the ImageNet features of the two images, summed over layers (Gatys et al. 2016)."""
    _student_image(ctx)
    return _FeatureTerm("style", 0)


class _ChannelDistill(TermModule):
    """OMGD's channel distillation: an adaptor per layer (1x1 conv without bias, BatchNorm, ReLU) maps the
    student's map to the teacher's channels; both are averaged over space; MSE, summed over layers. Without
    teacher taps, the teacher's averaged maps are read from the batch (``teacher_pooled``, (B, layers, C),
    recorded with the pseudo-pairs by `zoo.gan.data.make_pairs`), so the teacher does not run."""

    def __init__(self, student: list[torch.Tensor], channels: list[int]) -> None:
        super().__init__()
        self.adaptors = nn.ModuleList(nn.Sequential(nn.Conv2d(s.shape[1], c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
                                      for s, c in zip(student, channels))

    def forward(self, student: list[Any], teacher: list[Any], batch: dict[str, Any]) -> torch.Tensor:
        if not teacher:
            pooled = batch["teacher_pooled"]
            teacher = [pooled[:, i, :, None, None] for i in range(pooled.shape[1])]
        return losses.pooled_channel_loss(student, teacher, self.adaptors)


@term_builder("channel_distill")
def _channel_distill(ctx: TermContext) -> TermModule:
    """OMGD's channel distillation between paired layers (Ren et al. 2021, sec. 3.3); with ``teacher=None``
    the teacher's spatially averaged maps come with the batch (``teacher_pooled``)."""
    if not ctx.teacher:
        pooled = _recorded(ctx, "teacher_pooled", "pooled maps", "zoo.gan.data.make_pairs")
        if not all(isinstance(m, torch.Tensor) and m.dim() == 4 for m in ctx.student):
            raise ValueError(f"term {ctx.term.name!r} (channel_distill) needs (N, C, H, W) student maps")
        side = tuple(d // STRIDE for d in ctx.batch["inputs"].shape[-2:])
        for path, m in zip(ctx.term.student if isinstance(ctx.term.student, list) else [ctx.term.student], ctx.student):
            if tuple(m.shape[-2:]) != side:  # the pooled teacher maps are at a quarter of the image side
                raise ValueError(f"term {ctx.term.name!r} (channel_distill): the student's {path!r} is {tuple(m.shape[1:])}, "
                                 f"not at a quarter of the image side {side} like the teacher's recorded layers: not "
                                 "the same place in both networks. The recipe's layers are those of a 9-block "
                                 "generator; use a 9-block student (cyclegan-resnet9-*)")
        return _ChannelDistill(ctx.student, [int(pooled.shape[-1])] * len(ctx.student))
    if not ctx.student or len(ctx.student) != len(ctx.teacher):
        raise ValueError(f"term {ctx.term.name!r} (channel_distill) pairs student and teacher layers one to one, got "
                         f"{len(ctx.student)} student and {len(ctx.teacher)} teacher taps")
    _same_places(ctx)
    return _ChannelDistill(ctx.student, [t.shape[1] for t in ctx.teacher])


register_student_init(INHERIT_CHANNELS)(inherit_channels)


def reads_teacher_maps(recipe: Recipe | None) -> bool:
    """Whether ``recipe`` has a feature term that reads the teacher's whole maps from the batch
    (``feature_distill`` with ``teacher=None``): its training pairs must carry them (`zoo.gan.maps`)."""
    return recipe is not None and any(t.loss == "feature_distill" and t.teacher is None for t in recipe.terms)

GAN_COMPRESSION = "Li et al. 2020, GAN Compression: Efficient Architectures for Interactive Conditional GANs"
OMGD = "Ren et al. 2021, Online Multi-Granularity Distillation for GAN Compression"

for _recipe in [
    # mit-han-lab/gan-compression, scripts/cycle_gan/horse2zebra/distill.sh: lambda_recon 10 (L1 to the
    # teacher's image), lambda_distill 0.01, lambda_gan 1 (default), lsgan, ndf 64; the student starts from
    # the teacher's strongest channels (--restore_pretrained_G_path = the teacher, `zoo.gan.inherit`).
    Recipe("gan-compression",
           # teacher=None: the teacher's maps at the same layers come with the pairs (zoo.gan.maps, stored once)
           [Term("feature_distill", student=GAN_COMPRESSION_LAYERS, teacher=None, weight=0.01),
            Term("patch_adversarial", student="logits", teacher=None, weight=1.0)],
           task_weight=10.0, paper=GAN_COMPRESSION, init=INHERIT_CHANNELS,
           description="student initialised from the teacher's largest-L1 channels; 10 x L1 to the teacher's image "
                       "+ 0.01 x feature MSE through 1x1 convs at model.9/12/15/18 + LSGAN PatchGAN (teacher images "
                       "real); Li et al. 2020 eq. 3 and their CycleGAN script"),
    # GAN Compression's full objective (eq. 4) less its adversarial term and its weight transfer: the
    # twin's L1 to the teacher's image plus eq. 3's intermediate-feature distillation, from the twin's random
    # init. It isolates what the teacher's feature maps add to its images, with the weights of their
    # CycleGAN script.
    Recipe("gan-compression-distill",
           [Term("feature_distill", student=GAN_COMPRESSION_LAYERS, teacher=None, weight=0.01)],
           task_weight=10.0, paper=GAN_COMPRESSION,
           description="10 x L1 to the teacher's image + 0.01 x feature MSE through 1x1 convs at model.9/12/15/18 "
                       "(Li et al. 2020 eqs. 3-4 without the LSGAN term and without the weight transfer; random init "
                       "as the twin's)"),
    # GAN Compression's full objective less only its adversarial term: the weight transfer (the teacher's
    # strongest channels) stays. With `gan-compression-distill` (no transfer) it separates what the teacher's
    # weights add from what its discriminator costs.
    Recipe("gan-compression-no-adversary",
           [Term("feature_distill", student=GAN_COMPRESSION_LAYERS, teacher=None, weight=0.01)],
           task_weight=10.0, paper=GAN_COMPRESSION, init=INHERIT_CHANNELS,
           description="student initialised from the teacher's largest-L1 channels; 10 x L1 to the teacher's image "
                       "+ 0.01 x feature MSE through 1x1 convs at model.9/12/15/18 (Li et al. 2020 eqs. 3-4 and their "
                       "weight transfer, without the LSGAN term)"),
    # bytedance/OMGD, scripts/cycle_gan/horse2zebra/distill.sh: AGD_weights 1e1,1e4,1e1,1e-5 (SSIM, style,
    # feature, TV) and lambda_CD 5e2; no adversarial and no L1 term for the student. The teacher here is the
    # frozen pretrained generator (OMGD trains its teacher online beside the student; we have no real
    # images of the target domain to train it on).
    Recipe("omgd",
           [Term("ssim", student="logits", teacher=None, weight=10.0),
            Term("style", student="logits", teacher=None, weight=1e4),
            Term("perceptual", student="logits", teacher=None, weight=10.0),
            Term("total_variation", student="logits", teacher=None, weight=1e-5),
            # the teacher's pooled maps at the same layers come with the pairs: the teacher never runs here
            Term("channel_distill", student=GAN_COMPRESSION_LAYERS, teacher=None, weight=5e2)],
           task_weight=0.0, paper=OMGD,
           description="KD alone: 10 x (1 - SSIM) + 1e4 x Gram L1 + 10 x feature L1 + 1e-5 x TV + 500 x pooled channel "
                       "MSE at model.9/12/15/18 (OMGD's CycleGAN weights; MobileNetV2 features for VGG-16; frozen teacher)"),
]:
    _recipe.task = TASK
    register_recipe(_recipe)
