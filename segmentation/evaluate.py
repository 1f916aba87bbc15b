"""mIoU, per-class IoU and pixel accuracy of a segmentation model on a `SegmentationDataset` (torchmetrics)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, SegmentationDataset


@torch.no_grad()
def evaluate(model: nn.Module, data: SegmentationDataset, batch_size: int = 64, device: str | torch.device = "cpu",
             progress: bool = False) -> dict[str, Any]:
    """Metrics over ``data`` as fractions, pixels marked ``IGNORE_INDEX`` (255) left out:

    - ``mIoU``: the mean over the classes of IoU_c = TP_c / (TP_c + FP_c + FN_c), each class's counts
      summed over the whole split (as Cityscapes and VOC report it); a class absent from both the masks
      and the predictions (no union) is left out of the mean, as mmsegmentation does;
    - ``pixel_acc``: the fraction of pixels whose predicted class is right;
    - ``iou``: {class name: IoU_c or None} (a detail, not a card metric).

    The counts are torchmetrics' MulticlassConfusionMatrix.

    ``model`` maps [0, 1] images (N, 3, H, W) to logits (N, C, H, W) at the images' size."""
    try:
        from torchmetrics.classification import MulticlassConfusionMatrix
    except ImportError:
        raise ImportError("segmentation metrics need torchmetrics: pip install 'kdzoo[segmentation]'") from None
    c = data.num_classes
    # sync_on_compute=False: under torchrun only rank 0 evaluates
    confusion = MulticlassConfusionMatrix(c, ignore_index=IGNORE_INDEX, sync_on_compute=False)
    was_training = model.training
    model.eval().to(device)
    try:
        batches = data.loader(batch_size, device=device)
        for batch in tqdm(batches, total=-(-len(data) // batch_size), desc="eval", disable=not progress, leave=False):
            logits = model(batch["inputs"])
            if logits.shape[1] != c or logits.shape[2:] != batch["labels"].shape[1:]:
                raise ValueError(f"the model gives {tuple(logits.shape)} logits for {tuple(batch['labels'].shape)} masks "
                                 f"of {c} classes; it must give (N, {c}, H, W) at the images' size")
            confusion.update(logits.argmax(1).cpu(), batch["labels"].cpu())
    finally:
        model.train(was_training)
    counts = confusion.compute().double()  # rows: true class, columns: predicted
    if counts.sum() == 0:
        raise ValueError(f"{data.name}/{data.split}: every pixel is marked ignore ({IGNORE_INDEX}); nothing to measure")
    tp = counts.diag()
    union = counts.sum(0) + counts.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return {"mIoU": round(float(iou.nanmean()), 6), "pixel_acc": round(float(tp.sum() / counts.sum()), 6),
            "iou": {name: None if v != v else round(float(v), 6) for name, v in zip(data.classes, iou.tolist())}}
