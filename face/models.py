"""Face recognisers: a CIFAR-style ResNet trunk, an embedding layer, and a margin head for training.

`FaceRecognizer(images)` returns the L2-normalised embedding (N, D); `FaceRecognizer(images, labels)` in
training mode returns the margin head's logits (N, C) for the cross-entropy of training (the Distiller
passes a batch whose ``inputs`` are ``{"images", "labels"}`` during training); in eval mode (a teacher,
evaluation) the labels are not read and the embedding is returned. Taps for distillation:
- ``embedding``: the embedding before normalisation (N, D) (the BatchNorm1d that ends the embedding layer,
  as InsightFace's "features" layer);
- ``head_weight``: the head's class weights (C, D), passed through an identity module so a tap records
  them (ProxylessKD reuses the teacher's);
- ``body.layer1`` ... ``body.layer3``: the trunk's stage outputs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .heads import HEADS

ARCHITECTURES = {f"face-resnet{d}": d for d in (8, 14, 20, 32, 56)}
DEFAULT_DIM = 128


class FaceRecognizer(nn.Module):
    """CIFAR ResNet-``depth`` trunk (He et al. 2016) on (N, in_channels, H, W) in [0, 1] -> a ``dim``-d
    embedding (linear + BatchNorm1d) -> a margin ``head`` over ``num_classes`` training identities.

    Raises:
        ValueError: an unknown head, or a depth that is not 6n+2.
    """

    def __init__(self, depth: int = 20, num_classes: int = 2000, dim: int = DEFAULT_DIM, in_channels: int = 1,
                 head: str = "arcface") -> None:
        super().__init__()
        from zoo.classification.models import CifarResNet

        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
        trunk = CifarResNet(depth=depth, num_classes=1, in_channels=in_channels)
        trunk.fc = nn.Identity()  # the trunk ends at the pooled 64-d feature
        self.body = trunk
        self.embedding = nn.Sequential(nn.Linear(64, dim, bias=False), nn.BatchNorm1d(dim))
        self.head = HEADS[head](dim, num_classes)
        self.head_weight = nn.Identity()
        self.config = {"depth": depth, "num_classes": num_classes, "dim": dim, "in_channels": in_channels, "head": head}

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.config["in_channels"]:
            raise ValueError(f"expected images (N, {self.config['in_channels']}, H, W) in [0, 1], got {tuple(images.shape)}")
        e = self.embedding(self.body(images))
        self.head_weight(self.head.weight)  # recorded by a tap on "head_weight"
        if labels is None or not self.training:
            # the margin head is a training device: in eval mode (a teacher, evaluation) the labels are not read,
            # so a teacher trained on other identities gives its embedding for any batch
            return F.normalize(e, dim=1)
        return self.head(e, labels)


def build_recognizer(architecture: str, **config: Any) -> FaceRecognizer:
    """A `FaceRecognizer` by name (`ARCHITECTURES`, e.g. ``face-resnet20``); ``config`` sets num_classes, dim,
    in_channels and head.

    Raises:
        ValueError: an unknown architecture (the known ones are listed).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown face architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    config.pop("depth", None)
    model = FaceRecognizer(depth=ARCHITECTURES[architecture], **config)
    model.architecture = architecture
    return model
