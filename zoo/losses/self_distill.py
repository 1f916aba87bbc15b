"""Self-distillation: a network's deepest part teaches its shallower parts (survey section 2.3.2).

Survey eq. (6) (Si & Qi 2023):  L_SD = L_t(l, t) + Σ_{i=1}^{N−1} DF(f_i, R(f_{i+1})).

Implemented: BYOT (Zhang et al. 2019), ``byot_loss`` plus ``SectionHead``, the shallow classifier
attached to the end of each section of the backbone.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .logits import kd_loss


def byot_loss(section_logits: Sequence[Tensor], section_features: Sequence[Tensor], labels: Tensor,
              alpha: float = 0.3, lam: float = 0.03, T: float = 3.0) -> Tensor:
    """Be Your Own Teacher (Zhang, Song, Gao, Chen, Bao & Ma 2019, "Be Your Own Teacher: Improve the
    Performance of Convolutional Neural Networks via Self Distillation", ICCV, section 3.2); an instance of
    survey eq. (6).

    ``section_logits`` and ``section_features`` run from the shallowest section to the deepest (last).
    The deepest classifier C is the teacher; for every shallower section i::

        L_i = (1 − α) · CE(q_i, y) + α · T² · KL(q_C ‖ q_i) + λ · mean((F_i − F_C)²)

    and the deepest classifier gets plain CE(q_C, y); the loss is L = CE(q_C, y) + Σ_{i<C} L_i.
    q_C and F_C are detached: the deepest section learns from the labels only. F_i must already have
    F_C's shape (the output of the section's bottleneck, see ``SectionHead``). The paper writes the hint
    term as λ·‖F_i − F_C‖²₂; here it is the per-element mean, so λ does not depend on the feature size.
    The T² factor keeps the KL's gradient scale independent of T (Hinton et al. 2015).
    """
    if len(section_logits) < 2 or len(section_logits) != len(section_features):
        raise ValueError(f"byot_loss needs ≥ 2 sections with one feature map each, got "
                         f"{len(section_logits)} logits and {len(section_features)} features")
    q_c, f_c = section_logits[-1], section_features[-1].detach()
    total = F.cross_entropy(q_c, labels)
    for q_i, f_i in zip(section_logits[:-1], section_features[:-1]):
        if f_i.shape != f_c.shape:
            raise ValueError(f"section feature {tuple(f_i.shape)} does not match the deepest {tuple(f_c.shape)}")
        total = total + (1 - alpha) * F.cross_entropy(q_i, labels) + alpha * kd_loss(q_i, q_c, T=T) \
            + lam * (f_i - f_c).pow(2).mean()
    return total


class SectionHead(nn.Module):
    """BYOT's shallow classifier for one section (Zhang et al. 2019, ICCV, section 3.1, Fig. 2).

    A bottleneck maps the section's feature map (N, C_in, S_in, S_in) to the deepest feature's shape
    (N, C_out, S_out, S_out); it is the F_i of ``byot_loss``. Then global average pooling and a linear
    classifier give the logits q_i. The bottleneck is k = log2(S_in / S_out) blocks of
    conv3x3(stride 2) → BN → ReLU (one stride-1 block when the sizes are equal), with the channel count
    growing geometrically from C_in to C_out. S_in / S_out must be a power of two (CIFAR 32→16→8,
    Fashion-MNIST 28→14→7). ``forward`` returns ``(logits, feature)``.
    """

    def __init__(self, in_channels: int, out_channels: int, in_size: int, out_size: int, num_classes: int) -> None:
        super().__init__()
        ratio = in_size // out_size if out_size > 0 else 0
        if ratio < 1 or ratio * out_size != in_size or ratio & (ratio - 1):
            raise ValueError(f"in_size / out_size must be a power of two, got {in_size} / {out_size}")
        steps = max(1, int(math.log2(ratio)))
        stride = 2 if ratio > 1 else 1
        widths = [in_channels] + [round(in_channels * (out_channels / in_channels) ** (k / steps))
                                  for k in range(1, steps)] + [out_channels]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
        self.bottleneck = nn.Sequential(*layers)
        self.fc = nn.Linear(out_channels, num_classes)

    @classmethod
    def from_example(cls, section_feature: Tensor, deepest_feature: Tensor, num_classes: int) -> "SectionHead":
        """Size the head by probing example feature maps (N, C, H, W) of its section and of the deepest one."""
        return cls(section_feature.shape[1], deepest_feature.shape[1], section_feature.shape[-1],
                   deepest_feature.shape[-1], num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.bottleneck(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feature, 1), 1)), feature
