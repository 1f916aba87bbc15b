"""Connectors: small learnable adapters that bring a student feature to a teacher feature's shape.

They are sized by probing: the Distiller runs one forward of student and teacher, and each term
that needs a connector gets one built from the two observed shapes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvConnector(nn.Module):
    """1x1 conv + BN (+ ReLU with ``relu=True``), resizing space to the teacher's H x W.

    FitNet's regressor (Romero et al. 2015, sec. 2.2) must end in the same non-linearity as the
    teacher's hint layer; the stage outputs of a ResNet end in a ReLU, so the fitnet term uses
    ``relu=True``, as RepDistiller's ``ConvReg`` (conv + BN + ReLU) does. Chen et al. 2017's
    adaptation layer is linear (``relu=False``).
    """

    def __init__(self, in_channels: int, out_channels: int, out_size: tuple[int, int], relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.out_size = tuple(out_size)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.adaptive_avg_pool2d(x, self.out_size)
        y = self.bn(self.conv(x))
        return F.relu(y) if self.relu else y


class LinearConnector(nn.Module):
    """A linear map of the last dimension (token or vector features)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def make_connector(student_shape: torch.Size | tuple[int, ...], teacher_shape: torch.Size | tuple[int, ...],
                   identity_if_equal: bool = False, relu: bool = False) -> nn.Module:
    """A connector from ``student_shape`` to ``teacher_shape`` (batch dimension included or not);
    ``relu`` ends a conv connector in a ReLU (see `ConvConnector`)."""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if identity_if_equal and s == t:
        return nn.Identity()
    if len(s) == 4 and len(t) == 4:
        return ConvConnector(s[1], t[1], t[2:], relu=relu)
    if len(s) >= 2 and len(t) >= 2 and s[:-1] == t[:-1]:
        return LinearConnector(s[-1], t[-1])
    raise ValueError(f"no connector maps a student feature of shape {s} to a teacher feature of shape {t}")
