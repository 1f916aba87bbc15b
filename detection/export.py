"""ONNX export of the detection task's torchvision detectors (`zoo.export.export_onnx` calls it through the
adapter's ``onnx_export`` hook).

Detectors (torchvision's ``GeneralizedRCNN``, e.g. the zoo's Faster R-CNN entries) cannot go through
``torch.export``: with torch 2.14 / torchvision 0.29 it stops at torchvision's ``batched_nms``
(``GuardOnDataDependentSymNode`` on ``boxes.numel() == 0``, the number of boxes being data-dependent). They are
exported with the TorchScript-based exporter (``dynamo=False``, opset `DETECTOR_OPSET`), which traces
torchvision's ONNX paths. The graph takes **one** image ``image``: float (3, H, W) in [0, 1] (pixels / 255),
H and W dynamic (the model resizes it as in PyTorch and maps its boxes back); it returns ``boxes`` (K, 4,
x1 y1 x2 y2 in the image's pixels), ``scores`` (K) and ``labels`` (K, int64, 0 = background), best first, the
number of detections K dynamic. There is no batch dimension: run it once per image. Parity: on every sample
image, each PyTorch detection is matched to the unmatched onnxruntime detection of the same label with the
highest IoU (at least `MATCH_IOU`, taken in PyTorch's score order); the export is accepted only if every
detection of either side is matched (same count), the matched boxes differ by at most ``tolerance`` x max(1,
max |PyTorch box coordinate|) pixels and the scores by at most ``tolerance``.
For ``--dtype fp16`` only the detector's networks (`DETECTOR_NETWORKS`: backbone, RPN head, box head and
predictor) go to fp16; the image transform, anchors, box decoding, RoI Align, NMS and post-processing stay fp32.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.export import _exporter_failed, _preprocessed, _quiet_exporter, _session, run_session, to_fp16, to_int8

DETECTOR_OPSET = 17  # the TorchScript exporter's opset for detectors (RoiAlign, NonMaxSuppression: >= 11)
DETECTOR_OUTPUTS = ("boxes", "scores", "labels")
MATCH_IOU = 0.5  # a PyTorch and an onnxruntime detection of the same label pair up only at this IoU or above
# a detector's networks (fp16 under --dtype fp16); the rest of the graph (transform, anchors, box coding, RoI
# pooling, NMS, post-processing) stays fp32
DETECTOR_NETWORKS = ("backbone", "rpn.head", "roi_heads.box_head", "roi_heads.box_predictor")


def is_detector(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision detector (``GeneralizedRCNN``: Faster, Mask, Keypoint R-CNN)."""
    try:
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return isinstance(model, GeneralizedRCNN)


class DetectorGraph(nn.Module):
    """A torchvision detector as the ONNX graph sees it: one float image (3, H, W) in [0, 1] ->
    ``(boxes (K, 4), scores (K,), labels (K,))`` as the detector returns them for that image."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.detector([image])[0]
        return found["boxes"], found["scores"], found["labels"]


def export_detector(model: nn.Module, image: torch.Tensor) -> bytes:
    """A torchvision detector as ONNX (`DetectorGraph`: one image in, boxes/scores/labels out), traced on
    ``image`` (3, H, W) by the TorchScript exporter, opset `DETECTOR_OPSET`; H, W and the number of
    detections dynamic."""
    buf = io.BytesIO()
    dynamic = {"image": {1: "height", 2: "width"}, **{o: {0: "detections"} for o in DETECTOR_OUTPUTS}}
    with _quiet_exporter():
        torch.onnx.export(DetectorGraph(model).eval(), (image,), buf, dynamo=False, opset_version=DETECTOR_OPSET,
                          input_names=["image"], output_names=list(DETECTOR_OUTPUTS), dynamic_axes=dynamic)
    return buf.getvalue()


def match_detections(reference: tuple[torch.Tensor, ...], found: list[np.ndarray],
                     min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Pairs (PyTorch index, onnxruntime index) of one image's detections: in PyTorch's order (best score
    first), each takes the unmatched onnxruntime detection of the same label with the highest IoU, if that
    IoU is at least ``min_iou``."""
    from torchvision.ops import box_iou

    boxes, _, labels = reference
    other_boxes, other_labels = torch.from_numpy(np.asarray(found[0], np.float32)), found[2]
    if len(boxes) == 0 or len(other_boxes) == 0:
        return []
    iou = box_iou(boxes.float(), other_boxes)
    pairs, taken = [], set()
    for i in range(len(boxes)):
        best, best_iou = None, min_iou
        for j in range(len(other_boxes)):
            if j not in taken and int(other_labels[j]) == int(labels[i]) and float(iou[i, j]) >= best_iou:
                best, best_iou = j, float(iou[i, j])
        if best is not None:
            pairs.append((i, best))
            taken.add(best)
    return pairs


def compare_detections(reference: list[tuple[torch.Tensor, ...]], outputs: list[list[np.ndarray]]) -> dict[str, Any]:
    """Detections of PyTorch and onnxruntime on the same images, matched by `match_detections`: counts
    (``pytorch``, ``onnx``, ``matched``, ``images_differing`` in count or matching) and the largest box
    (pixels) and score differences over the matched pairs."""
    stats = {"images": len(reference), "pytorch": 0, "onnx": 0, "matched": 0, "images_differing": 0,
             "max_box_diff": 0.0, "max_score_diff": 0.0, "max_box": 0.0}
    for ref, out in zip(reference, outputs):
        pairs = match_detections(ref, out)
        stats["pytorch"] += len(ref[0])
        stats["onnx"] += len(out[0])
        stats["matched"] += len(pairs)
        stats["images_differing"] += int(not (len(pairs) == len(ref[0]) == len(out[0])))
        if len(ref[0]):
            stats["max_box"] = max(stats["max_box"], float(ref[0].abs().max()))
        if pairs:
            i, j = (list(t) for t in zip(*pairs))
            stats["max_box_diff"] = max(stats["max_box_diff"],
                                        float(np.abs(out[0][j].astype(np.float32) - ref[0][i].numpy()).max()))
            stats["max_score_diff"] = max(stats["max_score_diff"],
                                          float(np.abs(out[1][j].astype(np.float32) - ref[1][i].numpy()).max()))
    return stats


def onnx_export(model: nn.Module, inputs: Any, *, dtype: str, int8: bool, rate: float, label: str
                ) -> tuple[bytes, dict[str, Any]] | None:
    """The ONNX graph of a torchvision detector and the fields `zoo.export.export_onnx` reports (``detections``
    from `compare_detections`, with the box and score bounds; ``max_abs_diff`` the larger of the box and score
    differences, ``tolerance`` the box bound); None for a model that is not one.

    Raises:
        NotImplementedError: the exporter fails (the entry, the exporter and the error named).
        NotImplementedError: an mmdet detector of the OpenMMLab bridge (`zoo.detection.mm.MMDetector`): its
            mmcv ops (RoIAlign, NMS) export through OpenMMLab's MMDeploy, not here.
        ValueError: onnxruntime's detections differ from PyTorch's beyond the bounds."""
    if getattr(model, "mm", None) is not None and getattr(model, "architecture", "").startswith("mmdet:"):
        raise NotImplementedError(f"{label}: an mmdet detector (the OpenMMLab bridge) exports through OpenMMLab's MMDeploy "
                                  "(its mmcv RoIAlign and NMS ops); kdzoo exports its torchvision detectors")
    if not is_detector(model):
        return None
    result: dict[str, Any] = {}
    images = _preprocessed(model, inputs)
    with torch.no_grad():
        reference = [DetectorGraph(model)(image) for image in images]
    try:
        blob = export_detector(model, images[0])
    except Exception as e:  # the exporter's own errors: say which model, exporter and error
        raise _exporter_failed(label, "detection", f"TorchScript (dynamo=False, opset {DETECTOR_OPSET})", e) from e
    prefixes = tuple(f"/detector/{m.replace('.', '/')}/" for m in DETECTOR_NETWORKS)
    blob = to_fp16(blob, keep_fp32=lambda n: not n.name.startswith(prefixes)) if dtype == "fp16" else blob
    blob = to_int8(blob) if int8 else blob
    session = _session(blob)
    stats = compare_detections(reference, [run_session(session, {"image": image}) for image in images])
    box_bound = None if int8 else rate * max(1.0, stats["max_box"])
    score_bound = None if int8 else rate
    stats.update(box_tolerance=box_bound, score_tolerance=score_bound, match_iou=MATCH_IOU)
    diff = max(stats["max_box_diff"], stats["max_score_diff"])
    if not int8:
        problems = []
        if stats["images_differing"]:
            problems.append(f"on {stats['images_differing']} of {stats['images']} images the detections differ "
                            f"(PyTorch {stats['pytorch']}, onnxruntime {stats['onnx']}, {stats['matched']} "
                            f"matched at IoU >= {MATCH_IOU} with the same label)")
        if stats["max_box_diff"] > box_bound:
            problems.append(f"boxes differ by {stats['max_box_diff']:.3g} px (> {box_bound:.3g})")
        if stats["max_score_diff"] > score_bound:
            problems.append(f"scores differ by {stats['max_score_diff']:.3g} (> {score_bound:.3g})")
        if problems:
            raise ValueError(f"{label}: onnxruntime differs from PyTorch on the sample inputs: {'; '.join(problems)}; "
                             "the ONNX file was not written")
    result.update(max_abs_diff=diff, tolerance=box_bound, inputs={"image": list(images[0].shape)},
                  outputs=list(DETECTOR_OUTPUTS), dynamic={"image": ["height", "width"], **{o: ["detections"] for o in DETECTOR_OUTPUTS}},
                  exporter=f"torchscript (dynamo=False, opset {DETECTOR_OPSET})", detections=stats)
    return blob, result
