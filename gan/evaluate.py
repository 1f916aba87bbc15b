"""How close a compressed generator's images are to its teacher's, on the held-out photos.

- ``fd_mnv2``: the Fréchet distance (Dowson & Landau 1982; as FID, Heusel et al. 2017, eq. 6:
  ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})) between the student's and the teacher's images,
  on the features of torchvision's ImageNet MobileNetV2 after ``features[:14]`` (96 channels, stride 16),
  one 96-d sample per spatial position: 256 per 256x256 image. It is *not* FID, which uses
  Inception-v3's 2048-d pooled features (unavailable offline); the values are not comparable with
  published FIDs, only with each other. Lower is better, 0 for identical image sets.
- ``psnr``: peak signal-to-noise ratio of the student's images against the teacher's, in dB (images in
  [0, 1], torchmetrics' ``PeakSignalNoiseRatio(data_range=1)``, over all images at once). Higher is better.
- ``ssim``: structural similarity (Wang et al. 2004; torchmetrics, Gaussian 11x11 window, sigma 1.5),
  mean over images. Higher is better, at most 1.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .models import from_pixels, to_unit

FEATURE_LAYERS = 14  # MobileNetV2 features[:14]: 96 channels at stride 16


class FeatureNet(nn.Module):
    """The ``fd_mnv2`` features: [0, 1] RGB (N, 3, H, W) -> (N*H/16*W/16, 96) samples, one per spatial position
    of torchvision's ImageNet MobileNetV2 after ``features[:14]`` (`zoo.gan.features.ImageNetFeatures`)."""

    def __init__(self) -> None:
        super().__init__()
        from .features import ImageNetFeatures

        self.net = ImageNetFeatures((FEATURE_LAYERS,))
        self.weights_sha256 = self.net.weights_sha256

    def forward(self, images: Tensor) -> Tensor:
        [f] = self.net(images)
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``x`` (N, D) and ``y`` (M, D), in float64.

    It is clamped at 0 (equal sets can come out a rounding error below). Tr((S_x S_y)^{1/2}) is computed as the sum of the square roots of the eigenvalues of the symmetric
    positive semi-definite S_x^{1/2} S_y S_x^{1/2} (the same spectrum), so no non-symmetric matrix
    square root is needed.

    Raises:
        ValueError: fewer than two rows, or different feature sizes.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise ValueError(f"need two (N>=2, D) feature sets of one D, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.double(), y.double()
    mu_x, mu_y = x.mean(0), y.mean(0)
    s_x, s_y = torch.cov(x.T), torch.cov(y.T)
    vals, vecs = torch.linalg.eigh(s_x)
    root_x = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = root_x @ s_y @ root_x
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = float(((mu_x - mu_y) ** 2).sum() + torch.trace(s_x) + torch.trace(s_y) - 2 * trace_root)
    return max(0.0, value)  # equal sets can come out a rounding error below 0


@torch.no_grad()
def translate(model: nn.Module, images: Tensor, batch_size: int = 4, device: Any = "cpu") -> Tensor:
    """uint8 (N, 3, H, W) photos -> the generator's images as float [0, 1] (N, 3, H, W), on the CPU."""
    model = model.to(device).eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = from_pixels(images[i:i + batch_size].to(device))
        out.append(to_unit(model(x).float()).cpu())
    return torch.cat(out)


@torch.no_grad()
def compare(student_images: Tensor, teacher_images: Tensor, features: FeatureNet | None = None) -> dict[str, float]:
    """``fd_mnv2``, ``psnr`` (dB) and ``ssim`` of [0, 1] (N, 3, H, W) student images against the teacher's."""
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    if student_images.shape != teacher_images.shape:
        raise ValueError(f"student and teacher images differ in shape: {tuple(student_images.shape)} vs "
                         f"{tuple(teacher_images.shape)}")
    features = features or FeatureNet()
    psnr = PeakSignalNoiseRatio(data_range=1.0)(student_images, teacher_images)
    ssim = StructuralSimilarityIndexMeasure(data_range=1.0)(student_images, teacher_images)
    fd = frechet_distance(features(student_images), features(teacher_images))
    return {"fd_mnv2": fd, "psnr": float(psnr), "ssim": float(ssim)}
