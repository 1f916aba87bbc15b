"""Margin classification heads of face recognition, on L2-normalised embeddings and class weights.

- `ArcFace` (Deng et al. 2019, CVPR, eq. 3): the target logit is s cos(theta_y + m), the others s cos(theta_j),
  theta the angle between the embedding and the class weight; m = 0.5, s = 64. Where theta_y + m would pass
  pi the target logit is s (cos(theta_y) - m sin(m)) instead, as InsightFace does (``easy_margin`` off),
  so that it keeps decreasing in theta_y.
- `CosFace` (Wang et al. 2018, CVPR, eq. 4; "large margin cosine loss"): the target logit is
  s (cos(theta_y) - m); m = 0.35, s = 64.

Both give plain s cos(theta) logits without labels (evaluation); training uses cross-entropy on the
returned logits. The class weights ``weight`` (C, D) are what ProxylessKD copies from the teacher.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MarginHead(nn.Module):
    """Normalised class weights (num_classes, dim) and a margin on the target's logit (subclasses)."""

    def __init__(self, dim: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__()
        if dim < 1 or num_classes < 2:
            raise ValueError(f"need dim >= 1 and at least 2 classes, got dim={dim}, num_classes={num_classes}")
        self.s, self.m = float(s), float(m)
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """(N, D) -> (N, C) cosines between each embedding and each class weight."""
        return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1)).clamp(-1, 1)

    def target_logit(self, cos: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """(N, C) logits: s cos(theta), with the margin on each row's ``labels`` column when given."""
        cos = self.cosine(embeddings)
        if labels is None:
            return self.s * cos
        if labels.shape != (len(cos),):
            raise ValueError(f"labels must be (N,) = ({len(cos)},) class indices, got shape {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= cos.shape[1]:
            raise ValueError(f"labels must be class indices in 0..{cos.shape[1] - 1} (this head's classes), got values "
                             f"{int(labels.min())}..{int(labels.max())}")
        target = cos.gather(1, labels[:, None])
        logits = cos.scatter(1, labels[:, None], self.target_logit(target))
        return self.s * logits


class ArcFace(MarginHead):
    """Additive angular margin (Deng et al. 2019): cos(theta + m) on the target; m = 0.5, s = 64."""

    def __init__(self, dim: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__(dim, num_classes, s, m)

    def target_logit(self, cos: Tensor) -> Tensor:
        sin = (1 - cos * cos).clamp(min=0).sqrt()
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)
        # past theta = pi - m, cos(theta + m) would rise again: continue linearly (InsightFace's fallback)
        return torch.where(cos > math.cos(math.pi - self.m), phi, cos - math.sin(math.pi - self.m) * self.m)


class CosFace(MarginHead):
    """Additive cosine margin (Wang et al. 2018): cos(theta) - m on the target; m = 0.35, s = 64."""

    def __init__(self, dim: int, num_classes: int, s: float = 64.0, m: float = 0.35) -> None:
        super().__init__(dim, num_classes, s, m)

    def target_logit(self, cos: Tensor) -> Tensor:
        return cos - self.m


HEADS = {"arcface": ArcFace, "cosface": CosFace}
