"""Faster R-CNN detectors (Ren et al. 2015) on CIFAR-style ResNet backbones, built from torchvision parts.

A backbone is the body of a CIFAR ResNet (He et al. 2016, sec. 4.2: stem, three stages of 16, 32
and 64 channels) with a stride-2 stem, so its one feature map has stride 8 (12 x 12 on a 96-pixel
scene). On it sit torchvision's RPN (3 anchor sizes x 3 aspect ratios per cell), RoI Align and a
two-layer box head. The teacher (``frcnn-resnet56``) and student (``frcnn-resnet20``) differ in
depth and box-head width only, so they share anchors and feature stride: the RPN and RoI-head
distillation terms of Chen et al. (2017) compare the two on the same anchors and proposals.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.classification.models import CifarResNet

BACKBONE_DEPTHS = {"frcnn-resnet20": 20, "frcnn-resnet32": 32, "frcnn-resnet56": 56}
PRETRAINED_BACKBONES = ("frcnn-mobilenetv2",)
ARCHITECTURES = (*BACKBONE_DEPTHS, *PRETRAINED_BACKBONES)
BOX_HEAD_WIDTHS = {"frcnn-resnet20": 128, "frcnn-resnet32": 128, "frcnn-resnet56": 256, "frcnn-mobilenetv2": 256}
ANCHOR_SIZES = (16, 32, 48)
ASPECT_RATIOS = (0.5, 1.0, 2.0)


class ResNetBackbone(nn.Module):
    """The body of a CIFAR ResNet with a stride-2 stem: one feature map of 64 channels at stride 8."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        body = CifarResNet(depth=depth, num_classes=1, in_channels=3)
        body.conv1.stride = (2, 2)
        self.conv1, self.bn1 = body.conv1, body.bn1
        self.layer1, self.layer2, self.layer3 = body.layer1, body.layer2, body.layer3
        self.out_channels = 64
        self.stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) blocks 0-13 with torchvision's ImageNet weights when
    ``pretrained``: the 96-channel map of block 13, kept at stride 8 (blocks 7-13 without their stride,
    depthwise convolutions dilated by 2) so that it lines up with the CIFAR-ResNet students' stride-8 map
    (Chen et al. 2017's hint compares the two position by position). Blocks 14-18 are not used."""

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2()
        if pretrained:
            from zoo.classification.pretrained import load_mobilenet_v2_imagenet

            load_mobilenet_v2_imagenet(net)
        for block in net.features[7:14]:
            depthwise = block.conv[1][0]
            depthwise.stride, depthwise.dilation, depthwise.padding = (1, 1), (2, 2), (2, 2)
        self.body = net.features[:14]
        self.out_channels = 96
        self.stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def check_architecture(architecture: str) -> None:
    """ValueError unless ``architecture`` is one of kdzoo's detectors or an mmdet config (``mmdet:...``)."""
    from .mm import is_mm_architecture

    if architecture not in ARCHITECTURES and not is_mm_architecture(architecture):
        raise ValueError(f"unknown detection architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}, or "
                         "'mmdet:<config file or mmdet::config name>' (the OpenMMLab bridge)")


def build_detector(architecture: str, num_classes: int = 11, image_size: int = 96, pretrained_backbone: bool = False,
                   **config: Any) -> nn.Module:
    """A torchvision ``FasterRCNN`` on a CIFAR-ResNet backbone, for ``image_size`` square images.

    ``num_classes`` counts the background. Images are not resized (min = max = ``image_size``);
    the model normalises them with the ImageNet mean and std (its ``transform``). ``frcnn-mobilenetv2``
    (a teacher) starts from ImageNet weights with ``pretrained_backbone`` (training; a card's weights
    replace them on loading). ``mmdet:<config>`` builds an mmdet two-stage detector through the OpenMMLab
    bridge (`zoo.detection.mm.build_mm_detector`; ``mm_model`` in ``config``: a card's recorded mm config).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    from .mm import build_mm_detector, is_mm_architecture

    if is_mm_architecture(architecture):  # an mmdet config through the OpenMMLab bridge (zoo.detection.mm)
        return build_mm_detector(architecture, num_classes, image_size, mm_model=config.get("mm_model"))
    check_architecture(architecture)
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    backbone = (MobileNetV2Backbone(pretrained_backbone) if architecture in PRETRAINED_BACKBONES
                else ResNetBackbone(BACKBONE_DEPTHS[architecture]))
    width = BOX_HEAD_WIDTHS[architecture]
    settings = dict(
        min_size=image_size, max_size=image_size,
        rpn_anchor_generator=AnchorGenerator((ANCHOR_SIZES,), (ASPECT_RATIOS,)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, width), box_predictor=FastRCNNPredictor(width, num_classes),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128, box_batch_size_per_image=128, box_detections_per_img=20,
    )
    model = FasterRCNN(backbone, **{**settings, **config})  # config: any other FasterRCNN argument
    model.architecture = architecture
    model.config = {"num_classes": num_classes, "image_size": image_size}  # the builder's arguments, for cards
    return model
