"""Faster R-CNN training and distillation as one trainable module for `zoo.trainer.fit`.

`DetectionDistiller(student, teacher)` runs the student's detector piece by piece (backbone, RPN,
RoI head) so that the teacher can be asked about the very anchors and proposals the student is
trained on, as Chen et al. (2017) distil all three parts:

- backbone: a hint (FitNet) loss through an adaptation layer, L_Hint;
- RPN: soft objectness from the teacher on the student's sampled anchors, and the teacher-bounded
  regression loss on the positive anchors;
- RoI head (RCN): the class-weighted soft cross-entropy on the student's sampled proposals, and the
  teacher-bounded regression loss on the positive proposals.

Without a teacher it computes the plain Faster R-CNN losses (Ren et al. 2015) of torchvision's model,
so the baseline student and the teacher are trained by the same code.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.connectors import make_connector
from zoo.losses.features import fitnet_loss
from zoo.losses.logits import soft_cross_entropy
from zoo.trainer import TrainModule

from .data import targets_from_batch
from zoo.recipes import Recipe

from .losses import BACKGROUND_WEIGHT, bounded_regression_loss, class_weights, objectness_soft_loss
from .recipes import HARD_PARTS, SOFT_PARTS, chen_recipe, part_weights

class DetectionDistiller(TrainModule):
    """A torchvision Faster R-CNN student trained on its own losses, plus Chen et al. 2017's terms when a
    (frozen, eval-mode) teacher with the same anchors and feature stride is given.

    The loss is the sum of the parts weighted by ``recipe`` (`zoo.detection.recipes`: the ``chen2017``
    recipe by default with a teacher; without a teacher the four Faster R-CNN parts at weight 1).

    Raises:
        ValueError: a recipe with a part the detector does not compute, distillation parts without a
            teacher, a teacher with other anchors or another feature stride, or no ``example_batch``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, recipe: Recipe | None = None, *,
                 example_batch: dict[str, Any] | None = None) -> None:
        super().__init__()
        if teacher is not None and recipe is None:
            recipe = chen_recipe()
        self.weights, params = part_weights(recipe)
        distilling = [p for p in self.weights if p in SOFT_PARTS]
        if teacher is None and distilling:
            raise ValueError(f"the recipe's parts {distilling} distil from a teacher; none was given")
        self.recipe = recipe
        self.student = student
        self._teacher = [] if teacher is None else [teacher]  # kept out of parameters() and state_dict()
        self.margins = {p: float(params.get(p, {}).get("margin", 0.0)) for p in ("rpn_bounded", "rcn_bounded")}
        self.background_weights = {p: float(params.get(p, {}).get("background_weight", BACKGROUND_WEIGHT))
                                   for p in ("rpn_soft", "rcn_soft")}
        self.connector: nn.Module | None = None
        if teacher is not None:
            teacher.eval().requires_grad_(False)
            if example_batch is None:
                raise ValueError("a teacher needs an example_batch to size the hint's connector")
            self.connector = self._match_teacher(student, teacher, example_batch)

    @staticmethod
    def _match_teacher(student: nn.Module, teacher: nn.Module, example_batch: dict[str, Any]) -> nn.Module:
        """Check that ``teacher`` has the student's anchors and feature stride; return the hint's connector
        (an adaptation layer from the student's feature map to the teacher's). ValueError otherwise."""
        s_anchors = student.rpn.anchor_generator.num_anchors_per_location()
        t_anchors = teacher.rpn.anchor_generator.num_anchors_per_location()
        if s_anchors != t_anchors:
            raise ValueError(f"student and teacher need the same anchors per location, got {s_anchors} and {t_anchors}")
        was_training = student.training
        student.eval()  # the probe must not move the student's BatchNorm statistics
        with torch.no_grad():
            images = student.transform.normalize(example_batch["inputs"])  # broadcasts over the batch
            s_shape = student.backbone(images).shape
            t_shape = teacher.backbone(images).shape
        student.train(was_training)
        if s_shape[-2:] != t_shape[-2:]:
            raise ValueError(f"student and teacher feature maps must have the same stride: {tuple(s_shape)} vs {tuple(t_shape)}")
        # Chen et al. use an adaptation layer (kdzoo: a connector) even when the channel counts agree (sec. 3.3).
        return make_connector(s_shape, t_shape)

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    @property
    def part_names(self) -> list[str]:
        hard = list(HARD_PARTS)
        return hard + ([p for p in SOFT_PARTS if p in self.weights] if self._teacher else [])

    def train(self, mode: bool = True) -> "DetectionDistiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> "DetectionDistiller":
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn, recurse)
        return self

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from torchvision.models.detection.roi_heads import fastrcnn_loss
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        s = self.student
        targets = targets_from_batch(batch["boxes"], batch["labels"])
        images, targets = s.transform(list(batch["inputs"]), targets)
        sizes = images.image_sizes
        feat_s = s.backbone(images.tensors)

        # RPN (Ren et al. 2015): objectness and box deltas per anchor, proposals, anchor sampling.
        obj_levels, delta_levels = s.rpn.head([feat_s])
        anchors = s.rpn.anchor_generator(images, [feat_s])
        per_level = [o[0].numel() for o in obj_levels]
        objectness, deltas = concat_box_prediction_layers(obj_levels, delta_levels)
        proposals = s.rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = s.rpn.filter_proposals(proposals, objectness.detach(), sizes, per_level)
        anchor_labels, matched = s.rpn.assign_targets_to_anchors(anchors, targets)
        anchor_targets = torch.cat(s.rpn.box_coder.encode(matched, anchors))
        pos_masks, neg_masks = s.rpn.fg_bg_sampler(anchor_labels)
        pos = torch.where(torch.cat(pos_masks))[0]
        sampled = torch.cat([pos, torch.where(torch.cat(neg_masks))[0]])
        objectness = objectness.flatten()
        anchor_labels = torch.cat(anchor_labels)
        parts = {
            "rpn_cls": F.binary_cross_entropy_with_logits(objectness[sampled], anchor_labels[sampled]),
            "rpn_reg": F.smooth_l1_loss(deltas[pos], anchor_targets[pos], beta=1 / 9, reduction="sum") / sampled.numel(),
        }

        # RoI head on the proposals sampled against the ground truth.
        rois, _, roi_labels, roi_targets = s.roi_heads.select_training_samples(boxes, targets)
        class_logits, box_deltas = self._roi_head(s, feat_s, rois, sizes)
        parts["rcn_cls"], parts["rcn_reg"] = fastrcnn_loss(class_logits, box_deltas, roi_labels, roi_targets)

        t = self.teacher
        if t is not None:
            with torch.no_grad():
                feat_t = t.backbone(images.tensors)
                t_obj, t_deltas = concat_box_prediction_layers(*t.rpn.head([feat_t]))
                t_class_logits, t_box_deltas = self._roi_head(t, feat_t, rois, sizes)
            parts["rpn_soft"] = objectness_soft_loss(objectness[sampled], t_obj.flatten()[sampled],
                                                     self.background_weights["rpn_soft"])
            parts["rpn_bounded"] = bounded_regression_loss(deltas[pos], t_deltas[pos], anchor_targets[pos],
                                                           self.margins["rpn_bounded"]) / sampled.numel()
            num_classes = class_logits.shape[-1]
            parts["rcn_soft"] = soft_cross_entropy(class_logits, t_class_logits, class_weights=class_weights(
                num_classes, self.background_weights["rcn_soft"]))
            labels = torch.cat(roi_labels)
            positive = torch.where(labels > 0)[0]
            cls = labels[positive]
            parts["rcn_bounded"] = bounded_regression_loss(
                box_deltas.reshape(len(labels), -1, 4)[positive, cls], t_box_deltas.reshape(len(labels), -1, 4)[positive, cls],
                torch.cat(roi_targets)[positive], self.margins["rcn_bounded"]) / labels.numel()
            parts["backbone_hint"] = fitnet_loss(self.connector(feat_s), feat_t)
        # L = L_RPN + L_RCN + gamma L_hint (Chen et al. 2017, eqs. 1-2, 4), each part at its recipe weight
        loss = sum(w * parts[name] for name, w in self.weights.items() if w)
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}

    @staticmethod
    def _roi_head(model: nn.Module, feature: torch.Tensor, rois: list[torch.Tensor],
                  sizes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        heads = model.roi_heads
        pooled = heads.box_roi_pool({"0": feature}, rois, sizes)
        return heads.box_predictor(heads.box_head(pooled))
