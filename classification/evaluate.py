"""Classification metrics: top-1 accuracy, per-class accuracy and the confusion matrix."""
from __future__ import annotations

import torch
from torch import nn

from .data import ImageDataset


@torch.no_grad()
def confusion_matrix(model: nn.Module, data: ImageDataset, batch_size: int = 1000,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Counts ``C[true, predicted]`` over the whole split, in eval mode and fp32."""
    was_training = model.training
    model.eval()
    n = len(data.classes)
    counts = torch.zeros(n * n, dtype=torch.long, device=device)
    for batch in data.loader(batch_size, device=device):
        pred = model(batch["inputs"]).argmax(1)
        counts += torch.bincount(batch["labels"] * n + pred, minlength=n * n)
    model.train(was_training)
    return counts.view(n, n).cpu()


def metrics_from_confusion(conf: torch.Tensor, classes: tuple[str, ...]) -> dict:
    total = int(conf.sum())
    correct = int(conf.diag().sum())
    per_class = conf.diag().double() / conf.sum(1).clamp(min=1).double()
    return {
        "top1": correct / total,
        "per_class": {c: round(float(a), 6) for c, a in zip(classes, per_class)},
        "confusion": conf.tolist(),
        "n": total,
    }


def evaluate(model: nn.Module, data: ImageDataset, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> dict:
    """Top-1 (a fraction), per-class accuracy and confusion matrix of ``model`` on ``data``."""
    return metrics_from_confusion(confusion_matrix(model, data, batch_size, device), data.classes)
