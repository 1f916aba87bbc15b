"""Losses of generator compression, each as its paper defines it.

Images are generator outputs in [-1, 1], (N, 3, H, W).

- `feature_distill_loss`: GAN Compression's intermediate-feature distillation (Li et al. 2020, CVPR,
  sec. 3.1, eq. 3): L_distill = sum_t || f_t(G_t(x)) - G'_t(x) ||_2 over the chosen layers t, with f_t a
  learnable 1x1 convolution from the student's to the teacher's channels; the authors' code
  (mit-han-lab/gan-compression, distillers/resnet_distiller.py, ``calc_distill_loss``) takes the mean
  squared error per layer and sums the layers, which is what this computes.
- `lsgan_generator_loss` / `lsgan_discriminator_loss`: the least-squares GAN objective (Mao et al. 2017,
  eq. 2 with a = 0, b = c = 1) that CycleGAN and GAN Compression train with (``--gan_mode lsgan``):
  the generator minimises mean((D(G(x)) - 1)^2); the discriminator minimises
  0.5 [mean((D(real) - 1)^2) + mean(D(G(x))^2)].
- OMGD's student terms (Ren et al. 2021, ICCV, sec. 3.3: image-quality, style and perceptual losses, plus
  channel distillation), as the authors' code computes them (bytedance/OMGD,
  distillers/cycleganbest_distiller.py ``backward_G_Student``): `ssim_loss` (1 - SSIM), `style_loss`
  (L1 between Gram matrices f f^T / (C H W) of feature maps), the perceptual term (L1 between one
  layer's features), `total_variation` (plain sums of absolute neighbour differences) and
  `pooled_channel_loss` (MSE of the spatially averaged, adapted feature maps).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def feature_distill_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], connectors: Sequence[nn.Module]) -> Tensor:
    """sum_t mean((f_t(s_t) - t_t)^2) over layer pairs (GAN Compression eq. 3, as its code computes it).

    Raises:
        ValueError: different numbers of student maps, teacher maps and connectors, or a connected
            student map whose shape is not the teacher map's.
    """
    if not (len(student) == len(teacher) == len(connectors)) or not student:
        raise ValueError(f"need as many student maps, teacher maps and connectors (>= 1), got "
                         f"{len(student)}, {len(teacher)} and {len(connectors)}")
    total = student[0].new_zeros(())
    for i, (s, t, f) in enumerate(zip(student, teacher, connectors)):
        mapped = f(s)
        if mapped.shape != t.shape:
            raise ValueError(f"layer {i}: the connected student map {tuple(mapped.shape)} is not the teacher's "
                             f"{tuple(t.shape)}")
        total = total + F.mse_loss(mapped.float(), t.float())
    return total


def lsgan_generator_loss(fake_scores: Tensor) -> Tensor:
    """mean((D(G(x)) - 1)^2): the generator wants its images scored as real (1)."""
    return ((fake_scores.float() - 1) ** 2).mean()


def lsgan_discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """0.5 [mean((D(real) - 1)^2) + mean(D(fake)^2)]: real scored 1, fake 0 (CycleGAN's D loss, halved)."""
    return 0.5 * (((real_scores.float() - 1) ** 2).mean() + (fake_scores.float() ** 2).mean())


# ---------------------------------------------------------------- OMGD's student objective (Ren et al. 2021)
def gram_matrix(features: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, C): f f^T / (C H W), f the (N, C, H*W) view (as OMGD's ``gram``)."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w).float()
    return f @ f.transpose(1, 2) / (c * h * w)


def style_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """sum_l mean|Gram(s_l) - Gram(t_l)| over the feature layers (OMGD's style term: L1 of Gram matrices)."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need as many student as teacher feature maps (>= 1), got {len(student)} and {len(teacher)}")
    return sum(F.l1_loss(gram_matrix(s), gram_matrix(t)) for s, t in zip(student, teacher))


def total_variation(images: Tensor) -> Tensor:
    """sum |x[..., :, 1:] - x[..., :, :-1]| + sum |x[..., 1:, :] - x[..., :-1, :]| (plain sums, as OMGD's TV term)."""
    return ((images[..., :, 1:] - images[..., :, :-1]).abs().sum()
            + (images[..., 1:, :] - images[..., :-1, :]).abs().sum())


def ssim_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - SSIM(student, teacher) of [-1, 1] images (OMGD's image-quality term), computed on the images mapped
    to [0, 1] (torchmetrics' SSIM: 11x11 Gaussian window, sigma 1.5, ``data_range=1``; Wang et al. 2004).

    OMGD's code calls pytorch_ssim on the [-1, 1] images themselves. SSIM is defined for intensities: on
    zero-mean signals its luminance and structure factors can both turn negative and multiply to a
    positive value (an image and its negative score about +0.86 there), so kdzoo maps to [0, 1] first."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    return 1 - ssim((student.float() + 1) / 2, (teacher.float() + 1) / 2, data_range=1.0)


def pooled_channel_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], adaptors: Sequence[nn.Module]) -> Tensor:
    """OMGD's channel distillation: each adapted student map and the teacher map averaged over H and W, the
    MSE of the (N, C) vectors, summed over the layers."""
    if not (len(student) == len(teacher) == len(adaptors)) or not student:
        raise ValueError(f"need as many student maps, teacher maps and adaptors (>= 1), got "
                         f"{len(student)}, {len(teacher)} and {len(adaptors)}")
    total = student[0].new_zeros((), dtype=torch.float32)
    for i, (s, t, a) in enumerate(zip(student, teacher, adaptors)):
        s = a(s).float().mean(dim=(2, 3))
        t = t.float().mean(dim=(2, 3))
        if s.shape != t.shape:
            raise ValueError(f"layer {i}: the adapted student channels {tuple(s.shape)} are not the teacher's {tuple(t.shape)}")
        total = total + F.mse_loss(s, t)
    return total
