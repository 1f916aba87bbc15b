"""Image-to-image generators and discriminators: the CycleGAN ResNet generator and the PatchGAN critic.

`ResnetGenerator` is the generator of Zhu et al. 2017 (CycleGAN, after Johnson et al. 2016): a 7x7
convolution, two stride-2 downsampling convolutions, ``n_blocks`` residual blocks at 4x fewer pixels,
two stride-2 transposed convolutions and a 7x7 convolution to ``tanh``, instance normalisation
throughout, reflection padding at the borders. Its module layout (``model.<i>``, the residual blocks'
``block.<j>``) is the one of the pretrained ``vintagify`` generator, so that file loads strictly
(`zoo.gan.pretrained`). Images are RGB in [-1, 1] (``pixels / 127.5 - 1``), in and out.

Students are the same family with fewer channels (``ngf``), the compressed generators of GAN Compression
(Li et al. 2020) without their per-layer search: every layer is uniformly thinner.

`PatchDiscriminator` is the 70x70 PatchGAN of Isola et al. 2017 (pix2pix, sec. 3.2.2): C64-C128-C256-
C512 4x4 convolutions with LeakyReLU(0.2), instance normalisation from the second, a 1-channel map of
real/fake logits, one per 70x70 receptive field.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDE = 4  # two stride-2 downsamplings: a side must be a multiple of 4 to round-trip
# GAN Compression's mapping layers of a 9-block generator (mit-han-lab/gan-compression,
# base_resnet_distiller.py: 'model.%d' for range(9, 21, 3)): the bottleneck's input and the outputs of
# residual blocks 3, 6 and 9, each with 4 ngf channels at a quarter of the image side
MAPPING_LAYERS = ("model.9", "model.12", "model.15", "model.18")
MIN_SIDE = 8  # the smallest side (after padding to STRIDE) the reflection paddings accept

# architecture name -> ResnetGenerator arguments (the teacher's shape, and its thinner students)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "cyclegan-resnet9-ngf64": {"ngf": 64, "n_blocks": 9},  # the vintagify teacher: 11.38M params
    "cyclegan-resnet9-ngf32": {"ngf": 32, "n_blocks": 9},
    "cyclegan-resnet9-ngf24": {"ngf": 24, "n_blocks": 9},
    "cyclegan-resnet9-ngf16": {"ngf": 16, "n_blocks": 9},
    "cyclegan-resnet6-ngf16": {"ngf": 16, "n_blocks": 6},
}


class ResidualBlock(nn.Module):
    """x + [pad, conv3x3, IN, ReLU, pad, conv3x3, IN](x), channels unchanged (CycleGAN's ResnetBlock)."""

    def __init__(self, channels: int, affine: bool = True) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=affine),
            nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels, affine=affine))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator: (N, in_channels, H, W) in [-1, 1] -> (N, out_channels, H, W) in [-1, 1].

    Any H, W of at least `MIN_SIDE` pixels: a side that is not a multiple of 4 is reflect-padded up to
    one and the output cropped back, so the output always has the input's size.

    Args:
        ngf: channels of the first convolution (the widths are ngf, 2 ngf, 4 ngf); 64 in CycleGAN.
        n_blocks: residual blocks at the bottleneck (9 for 256x256 images in CycleGAN, 6 for 128x128).
        affine: learnable instance-norm scale and shift (vintagify: True; junyanz/pytorch-CycleGAN-and-pix2pix: False).

    Raises:
        ValueError (forward): not a 4-D tensor with ``in_channels`` channels, or a side below `MIN_SIDE`.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 affine: bool = True) -> None:
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"ngf must be >= 1 and n_blocks >= 0, got ngf={ngf}, n_blocks={n_blocks}")
        self.in_channels, self.out_channels, self.ngf, self.n_blocks = in_channels, out_channels, ngf, n_blocks
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7),
                                   nn.InstanceNorm2d(ngf, affine=affine), nn.ReLU()]
        width = ngf
        for _ in range(2):  # downsampling
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width, affine=affine),
                       nn.ReLU()]
            width *= 2
        layers += [ResidualBlock(width, affine) for _ in range(n_blocks)]
        for _ in range(2):  # upsampling
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(width // 2, affine=affine), nn.ReLU()]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    @property
    def block_paths(self) -> list[str]:
        """Module paths of the residual blocks (``model.10`` ... for 9 blocks): GAN Compression's taps."""
        return [f"model.{i}" for i, m in enumerate(self.model) if isinstance(m, ResidualBlock)]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (N, {self.in_channels}, H, W) in [-1, 1], got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = -h % STRIDE, -w % STRIDE
        if min(h + ph, w + pw) < MIN_SIDE:
            raise ValueError(f"an image of {h}x{w} pixels is too small: the generator needs at least "
                             f"{MIN_SIDE}x{MIN_SIDE}")
        if ph or pw:
            if ph >= h or pw >= w:  # reflection needs the pad to be smaller than the side
                x = F.pad(x, (0, pw, 0, ph), mode="replicate")
            else:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        y = self.model(x)
        return y[..., :h, :w] if ph or pw else y


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN (Isola et al. 2017): (N, in_channels, H, W) -> (N, 1, H/8 - 2, W/8 - 2) logits."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = ndf
        for i in range(1, n_layers + 1):
            out = ndf * min(2 ** i, 8)
            layers += [nn.Conv2d(width, out, 4, stride=2 if i < n_layers else 1, padding=1),
                       nn.InstanceNorm2d(out, affine=True), nn.LeakyReLU(0.2)]
            width = out
        layers += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def build_generator(architecture: str, **config: Any) -> ResnetGenerator:
    """A `ResnetGenerator` by name (`ARCHITECTURES`); ``config`` overrides its arguments.

    Raises:
        ValueError: an unknown architecture (the known ones are listed).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown gan architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")
    return ResnetGenerator(**{**ARCHITECTURES[architecture], **config})


def from_pixels(images: Tensor) -> Tensor:
    """uint8 (..., 3, H, W) pixels -> the generator's float [-1, 1] (``pixels / 127.5 - 1``)."""
    return images.float() / 127.5 - 1


def to_unit(images: Tensor) -> Tensor:
    """The generator's [-1, 1] images -> float [0, 1] (clamped)."""
    return ((images + 1) / 2).clamp(0, 1)


def to_pixels(images: Tensor) -> Tensor:
    """The generator's [-1, 1] images -> uint8 pixels (rounded, clamped to 0-255), on the CPU."""
    return ((images.float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
