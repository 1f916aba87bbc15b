"""GAN-based distillation: a discriminator tells teacher outputs from student outputs (survey section 2.3.5).

Survey eqs. (9)-(10) (Si & Qi 2023):  L_GAN-KD = L_t(l_S, t) + L_GAN(l_S, l_T, D), with
L_GAN = log D(l_T) + log(1 − D(l_S)), maximised by D and minimised by the student. (The survey prints
the second term as log D(1 − l_S), a misprint for the standard log(1 − D(l_S)).)

Implemented after Xu, Hsu, Liu, Chen & Lin 2018 ("Training Shallow and Thin Networks for Acceleration
via Knowledge Distillation with Conditional Adversarial Networks", ICLR workshop): D is an MLP on
logits and, in the conditional variant, also predicts the class of what it sees.

Both losses can be summed and stepped by one optimiser holding the student's and D's parameters:
``discriminator_loss`` detaches the logits, so it only reaches D; ``generator_loss`` runs D on
detached copies of its parameters, so it only reaches the student.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


class LogitDiscriminator(nn.Module):
    """MLP discriminator on logits (Xu et al. 2018).

    ``num_classes`` → hidden layers (``hidden``, each Linear + LeakyReLU(``negative_slope``)) → one
    real/fake logit (real = teacher), plus ``num_classes`` class logits when ``conditional``.
    ``hidden=()`` gives a linear discriminator. ``forward`` returns ``(adv_logit (N,), class_logits or None)``.
    """

    def __init__(self, num_classes: int, hidden: Sequence[int] = (128, 128), conditional: bool = False,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = num_classes
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope)]
            width = h
        self.body = nn.Sequential(*layers)
        self.adv_head = nn.Linear(width, 1)
        self.class_head = nn.Linear(width, num_classes) if conditional else None

    @property
    def conditional(self) -> bool:
        return self.class_head is not None

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.body(logits)
        return self.adv_head(h).squeeze(-1), (self.class_head(h) if self.class_head is not None else None)


def _class_term(class_logits: Tensor | None, labels: Tensor | None) -> Tensor | float:
    if class_logits is None:
        return 0.0
    if labels is None:
        raise ValueError("a conditional discriminator needs labels")
    return F.cross_entropy(class_logits, labels)


def discriminator_loss(disc: LogitDiscriminator, student_logits: Tensor, teacher_logits: Tensor,
                       labels: Tensor | None = None) -> Tensor:
    """D's loss (survey eq. (10) with the usual sign: D maximises log D(l_T) + log(1 − D(l_S)))::

        L_D = BCE(D(l_T), 1) + BCE(D(l_S), 0)   [+ CE(D_cls(l_T), y) + CE(D_cls(l_S), y) if conditional]

    Both logits are detached: this loss trains D only.
    """
    real_adv, real_cls = disc(teacher_logits.detach())
    fake_adv, fake_cls = disc(student_logits.detach())
    loss = F.binary_cross_entropy_with_logits(real_adv, torch.ones_like(real_adv)) \
        + F.binary_cross_entropy_with_logits(fake_adv, torch.zeros_like(fake_adv))
    return loss + _class_term(real_cls, labels) + _class_term(fake_cls, labels)


def generator_loss(disc: LogitDiscriminator, student_logits: Tensor, labels: Tensor | None = None) -> Tensor:
    """The student's adversarial term (survey eq. (9)), in the non-saturating form::

        L_G = BCE(D(l_S), 1)   [+ CE(D_cls(l_S), y) if conditional]

    i.e. −log D(l_S) instead of log(1 − D(l_S)), which has the same fixed point and does not vanish while
    D wins. D is evaluated through ``torch.func.functional_call`` with detached copies of its parameters,
    so the gradient reaches the student's logits but none of D's parameters: adding this to
    ``discriminator_loss`` and stepping one optimiser updates each side with its own objective.
    """
    frozen = {name: p.detach() for name, p in disc.named_parameters()}
    frozen.update(dict(disc.named_buffers()))
    adv, cls = functional_call(disc, frozen, (student_logits,))
    return F.binary_cross_entropy_with_logits(adv, torch.ones_like(adv)) + _class_term(cls, labels)
