"""COCO-style box mAP of a detector on a `DetectionDataset` (torchmetrics' MeanAveragePrecision, pycocotools)."""
from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import DetectionDataset, targets_from_batch


@torch.no_grad()
def evaluate(model: nn.Module, data: DetectionDataset, batch_size: int = 64, device: str | torch.device = "cpu",
             progress: bool = False) -> dict[str, float]:
    """COCO box metrics over ``data`` as fractions: ``bbox_mAP`` (mAP@[.5:.95]), ``bbox_mAP_50``, ``bbox_mAP_75``
    and ``bbox_mAR_100`` (recall with at most 100 detections per image)."""
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError:
        raise ImportError("detection metrics need torchmetrics and pycocotools: pip install 'kdzoo[detection]'") from None
    # sync_on_compute=False: under torchrun only rank 0 evaluates, so there is nobody to gather from
    metric = MeanAveragePrecision(iou_type="bbox", box_format="xyxy", sync_on_compute=False)
    was_training = model.training
    model.eval().to(device)
    try:
        batches = data.loader(batch_size, device=device)
        for batch in tqdm(batches, total=-(-len(data) // batch_size), desc="eval", disable=not progress, leave=False):
            detections = model(list(batch["inputs"]))
            metric.update([{k: v.cpu() for k, v in d.items()} for d in detections],
                          [{k: v.cpu() for k, v in t.items()} for t in targets_from_batch(batch["boxes"], batch["labels"])])
    finally:
        model.train(was_training)
    scores = metric.compute()
    names = {"map": "bbox_mAP", "map_50": "bbox_mAP_50", "map_75": "bbox_mAP_75", "mar_100": "bbox_mAR_100"}
    return {ours: round(float(scores[theirs]), 6) for theirs, ours in names.items()}
