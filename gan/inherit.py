"""GAN Compression's weight inheritance: a thinner generator starts from the teacher's strongest channels.

Li et al. 2020 (GAN Compression) initialise the student from the pretrained generator before distilling
it: the official CycleGAN recipe (mit-han-lab/gan-compression, ``scripts/cycle_gan/horse2zebra/distill.sh``)
passes the teacher as ``--restore_pretrained_G_path``, and ``utils/weight_transfer.py`` copies, layer by
layer, the output channels whose filters have the largest L1 norm. `inherit_channels` does the same for
`zoo.gan.models.ResnetGenerator`, walking the layers in order:

- a convolution takes the input channels its predecessor kept, then keeps the ``C_student`` output channels
  with the largest sum of |w| over (kept inputs, kh, kw); its bias follows;
- the first convolution takes every image channel, the last keeps every image channel;
- in a residual block the first convolution chooses its channels as above and the second writes back into
  the channels the block's input kept, so that the skip connection adds matching channels;
- a transposed convolution (weights (C_in, C_out, kh, kw)) takes the kept inputs on its first axis and
  chooses outputs by the L1 norm over the others;
- an affine instance norm keeps the scale and shift of the channels its convolution kept (GAN Compression's
  generators have no affine norms; vintagify's have). ResnetGenerator has instance norms only.

Where the reference differs: its transposed-convolution step ignores the channels the previous layer kept
(its branch on ``input_index`` is inverted) and chooses inputs by their own norm; here every layer reads the
channels its predecessor actually passes on, so a teacher whose other channels are dead (exact zeros) is
reproduced exactly by its inherited student (tested).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .models import ResidualBlock, ResnetGenerator

INIT = "teacher-channels"  # the name recipes use (`zoo.recipes.Recipe.init`)


def _strongest(weight: Tensor, count: int, dims: tuple[int, ...]) -> Tensor:
    """Indices of the ``count`` slices with the largest L1 norm over ``dims``, in the teacher's order."""
    return weight.abs().sum(dims).topk(count).indices.sort().values


def _copy_conv(t: nn.Conv2d, s: nn.Conv2d, inputs: Tensor, outputs: Tensor | None) -> Tensor:
    w = t.weight[:, inputs]
    if outputs is None:
        outputs = _strongest(w, s.out_channels, (1, 2, 3))
    s.weight.copy_(w[outputs])
    if s.bias is not None:
        s.bias.copy_(t.bias[outputs])
    return outputs


def _copy_transposed(t: nn.ConvTranspose2d, s: nn.ConvTranspose2d, inputs: Tensor) -> Tensor:
    w = t.weight[inputs]
    outputs = _strongest(w, s.out_channels, (0, 2, 3))
    s.weight.copy_(w[:, outputs])
    if s.bias is not None:
        s.bias.copy_(t.bias[outputs])
    return outputs


def _copy_norm(t: nn.Module, s: nn.Module, channels: Tensor) -> None:
    for name in ("weight", "bias"):  # an affine norm's scale and shift (none without affine)
        source, target = getattr(t, name, None), getattr(s, name, None)
        if isinstance(source, Tensor) and isinstance(target, Tensor):
            target.copy_(source[channels])


def _norm_pairs(t: nn.Module, s: nn.Module) -> list[tuple[nn.InstanceNorm2d, nn.InstanceNorm2d]]:
    """The (teacher, student) instance norms of one layer: itself, a residual block's two, or none."""
    if isinstance(t, nn.InstanceNorm2d):
        return [(t, s)]
    if isinstance(t, ResidualBlock):
        return [(t.block[2], s.block[2]), (t.block[6], s.block[6])]
    return []


@torch.no_grad()
def inherit_channels(teacher: nn.Module, student: nn.Module) -> None:
    """Fill ``student`` in place with the teacher's strongest channels (GAN Compression's weight transfer).

    Both are `ResnetGenerator`s of one layout (same ``n_blocks``, image channels and norm type); the
    student's ``ngf`` is at most the teacher's. The Distiller calls it when a recipe's ``init`` is
    ``"teacher-channels"``. A refused pair leaves the student unchanged.

    Raises:
        ValueError: not two ResnetGenerators, another depth or image channels, a wider student, or norms
            that differ in having a learnable scale and shift.
    """
    if not (isinstance(teacher, ResnetGenerator) and isinstance(student, ResnetGenerator)):
        raise ValueError("teacher-channels initialises a ResnetGenerator student from a ResnetGenerator teacher, got "
                         f"{type(teacher).__name__} -> {type(student).__name__}")
    if (teacher.n_blocks, teacher.in_channels, teacher.out_channels) != (student.n_blocks, student.in_channels,
                                                                         student.out_channels):
        raise ValueError(f"teacher-channels needs one layout: the teacher has {teacher.n_blocks} blocks and "
                         f"{teacher.in_channels}->{teacher.out_channels} image channels, the student "
                         f"{student.n_blocks} and {student.in_channels}->{student.out_channels}")
    if student.ngf > teacher.ngf:
        raise ValueError(f"teacher-channels keeps a subset of the teacher's channels: the student (ngf "
                         f"{student.ngf}) is wider than the teacher (ngf {teacher.ngf})")
    layers = list(zip(teacher.model, student.model))
    for i, (t, s) in enumerate(layers):  # checked before anything is copied: a refused student is left as it was
        if type(t) is not type(s):
            raise ValueError(f"teacher-channels: layer model.{i} is {type(t).__name__} in the teacher and "
                             f"{type(s).__name__} in the student")
        for tn, sn in _norm_pairs(t, s):
            if tn.affine != sn.affine:
                raise ValueError(f"teacher-channels: the norms of model.{i} have affine={tn.affine} in the teacher "
                                 f"and affine={sn.affine} in the student")
    kept = torch.arange(teacher.in_channels)
    last_conv = max(i for i, (t, _) in enumerate(layers) if isinstance(t, nn.Conv2d))
    for i, (t, s) in enumerate(layers):
        if isinstance(t, nn.Conv2d):
            kept = _copy_conv(t, s, kept, torch.arange(t.out_channels) if i == last_conv else None)
        elif isinstance(t, nn.ConvTranspose2d):
            kept = _copy_transposed(t, s, kept)
        elif isinstance(t, nn.InstanceNorm2d):
            _copy_norm(t, s, kept)
        elif isinstance(t, ResidualBlock):
            tb, sb = t.block, s.block  # pad, conv, norm, relu, pad, conv, norm
            middle = _copy_conv(tb[1], sb[1], kept, None)
            _copy_norm(tb[2], sb[2], middle)
            _copy_conv(tb[5], sb[5], middle, kept)
            _copy_norm(tb[6], sb[6], kept)
