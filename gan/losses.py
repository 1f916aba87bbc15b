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
