"""The OpenMMLab bridge of the detection task: an mmdet two-stage detector as a kdzoo detector.

A user who holds an mmdet config (a file, the package's own config name such as
``mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``, or kdzoo's ``kdzoo::frcnn_r18_c16_fpn.py``) and optionally
its checkpoint gets a module that the rest of kdzoo treats like its torchvision detectors:

- ``MMDetector(images)`` in eval mode takes a list of [0, 1] RGB images (3, H, W) and returns torchvision's
  detections, one dict per image: ``boxes`` (K, 4) x1 y1 x2 y2 in the image's pixels, ``scores`` (K,) and
  ``labels`` (K,) counting the background as 0 (mmdet's class c is kdzoo's c + 1), so `zoo.detection.evaluate`,
  `zoo predict` and the twin protocol work unchanged;
- `MMDetectionDistiller` trains it with mmdet's own Faster R-CNN losses (its RPN head's and RoI head's, with
  their assigners, samplers and loss settings from the config) and, from an mmdet teacher on the same anchors,
  Chen et al. 2017's RPN, RoI-head and hint terms on the very anchors and proposals the student samples;
- its modules are tapped by path like any module (``mm.neck``, ``mm.backbone.layer4``);
- the card's ``config`` records the whole mm model config (``mm_model``), so `zoo.load` rebuilds it without
  the config files.

The images are normalised with the config's ``data_preprocessor`` mean and std (0-255 scale) inside the
model and padded (bottom, right) to one size divisible by its ``pad_size_divisor``; its BGR flag is not used
(kdzoo's images are RGB tensors). mmdet needs mmcv's compiled ops (RoIAlign, NMS): install the bridge with
``bash scripts/setup_openmmlab.sh``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.connectors import make_connector
from zoo.losses.features import fitnet_loss
from zoo.losses.logits import soft_cross_entropy

from .data import targets_from_batch
from .distill import DetectionDistiller
from .losses import bounded_regression_loss, class_weights, objectness_soft_loss

PREFIX = "mmdet:"


def _require() -> Any:
    from zoo.segmentation.mm import require_openmmlab

    return require_openmmlab("mmdet", "mmdet 3.3")


def is_mm_architecture(architecture: Any) -> bool:
    """Whether ``architecture`` names an mmdet config (``mmdet:<config file or package config name>``)."""
    return isinstance(architecture, str) and architecture.startswith(PREFIX)


def load_model_config(config: str | Path) -> dict[str, Any]:
    """The ``model`` dict of an mmdet config: a config file, a name in the package's own configs
    (``mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py``) or in kdzoo's (``kdzoo::frcnn_r18_c16_fpn.py``,
    detection/configs); the ``mmdet:`` architecture prefix is removed first.

    Raises:
        OpenMMLabMissingError: mmdet missing. FileNotFoundError: no such file or package config.
        ValueError: the config has no ``model``."""
    from zoo.segmentation.mm import read_model_config

    _require()
    return read_model_config(str(config), "mmdet", Path(__file__).parent / "configs",
                             "'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'")


def _no_downloads(cfg: Any) -> Any:
    """The config without ``init_cfg`` entries of type ``Pretrained`` (ImageNet weights fetched at
    ``init_weights``): kdzoo's weights come from a checkpoint or a card, and nothing downloads here."""
    if isinstance(cfg, dict):
        return {k: _no_downloads(v) for k, v in cfg.items()
                if not (k == "init_cfg" and isinstance(v, dict) and v.get("type") == "Pretrained")}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_no_downloads(v) for v in cfg)
    return cfg


def check_two_stage(cfg: dict[str, Any], architecture: str) -> None:
    """ValueError unless the mm model config is a two-stage detector the bridge takes: an ``rpn_head`` and a
    ``roi_head`` with one ``bbox_head`` (Faster R-CNN and its kin); the message names what is missing."""
    roi = cfg.get("roi_head")
    missing = [name for name, ok in (("rpn_head", isinstance(cfg.get("rpn_head"), dict)),
                                     ("roi_head", isinstance(roi, dict)),
                                     ("roi_head.bbox_head", isinstance(roi, dict) and isinstance(roi.get("bbox_head"), dict)))
               if not ok]
    if missing:
        raise ValueError(f"{architecture}: the mmdet bridge takes two-stage detectors with an rpn_head and a roi_head "
                         f"with one bbox_head (Faster R-CNN and its kin); this {cfg.get('type')!r} config has no "
                         f"{', '.join(missing)}")


def _quietly(fn: Any) -> Any:
    """``fn()`` with mmengine's current logger at WARNING."""
    import logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return fn()
    finally:
        logger.setLevel(level)


class MMDetector(nn.Module):
    """An mmdet two-stage detector (``mm``, built from ``model_cfg``) for ``num_classes`` classes counting the
    background (kdzoo's and torchvision's convention; the mm head gets ``num_classes - 1``). Its weights start
    as mmdet's ``init_weights`` sets them; with ``pretrained``, a MobileNetV2 backbone whose config asks for
    ``kdzoo::mobilenet_v2_imagenet`` starts from torchvision's ImageNet weights. Eval: list of (3, H, W) images
    in [0, 1] -> list of ``{boxes, scores, labels}`` (see the module docstring).

    Raises: ValueError: a config that is not a two-stage detector with an RPN and a box RoI head, or a
    ``num_classes`` < 2."""

    checkpoint_prefix = "mm."  # the mm model's own state-dict keys live under this prefix (zoo.reported.load)

    def __init__(self, model_cfg: dict[str, Any], architecture: str, num_classes: int, image_size: int = 96,
                 pretrained: bool = False) -> None:
        super().__init__()
        from zoo.segmentation.mm import (asks_imagenet_mobilenet_v2, cpu_norms, load_mobilenet_v2_imagenet_mm,
                                         register_normalisation)

        if num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
        models = _require()
        imagenet = pretrained and asks_imagenet_mobilenet_v2(model_cfg)
        cfg = _no_downloads(cpu_norms(copy.deepcopy(model_cfg)))
        check_two_stage(cfg, architecture)
        cfg["roi_head"]["bbox_head"]["num_classes"] = num_classes - 1
        pre = cfg.pop("data_preprocessor", None) or {}
        cfg.pop("pretrained", None)  # ImageNet weights to download: never (see _no_downloads)
        self.pad_divisor = int(pre.get("pad_size_divisor", 1) or 1)
        from mmengine.config import ConfigDict
        from mmengine.registry import DefaultScope

        with DefaultScope.overwrite_default_scope("mmdet"):  # not mmseg's, should the other bridge have set its own
            self.mm = models.build(ConfigDict(copy.deepcopy(cfg)))  # mmdet reads its train/test cfgs by attribute
            _quietly(self.mm.init_weights)  # mmengine logs every parameter's initialiser at INFO
        # torchvision's ImageNet MobileNetV2 (offline), for a fresh build from a config that asks for it; a card's
        # weights replace it on loading, so zoo.load never needs the file
        self.backbone_weights = load_mobilenet_v2_imagenet_mm(self.mm.backbone) if imagenet else None
        self.architecture = architecture
        self.model_cfg = cfg  # the config the model was built from (num_classes and norms set)
        self.num_classes = num_classes
        self.image_size = image_size
        register_normalisation(self, pre)

    @property
    def config(self) -> dict[str, Any]:
        """What the card records to rebuild the model (`build_mm_detector`)."""
        return {"num_classes": self.num_classes, "image_size": self.image_size,
                "mm_model": json.loads(json.dumps(self.model_cfg, default=str))}

    def prepare(self, images: list[torch.Tensor] | torch.Tensor,
                targets: list[dict[str, torch.Tensor]] | None = None) -> tuple[torch.Tensor, list[Any]]:
        """(the normalised, padded (N, 3, H', W') batch, mmdet's ``DetDataSample`` per image with its shapes
        and, given ``targets`` (torchvision's: ``boxes`` in pixels, ``labels`` >= 1), its ground truth).

        ``images``: a list of (3, H, W) float images (or one such image, or an (N, 3, H, W) batch).

        Raises: ValueError: no images, an image that is not (3, H, W) or not float, or a box label outside
        1..num_classes - 1."""
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        if isinstance(images, torch.Tensor) and images.dim() == 3:  # one image, not a list of them
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("no images given")
        for im in images:
            if im.dim() != 3 or im.shape[0] != 3 or min(im.shape[1:]) < 1:
                raise ValueError(f"an MMDetector takes RGB images (3, H, W) in [0, 1], got {tuple(im.shape)}")
            if not im.is_floating_point():  # as torchvision's detectors: uint8 pixels would be read as [0, 1]
                raise ValueError(f"an MMDetector takes float images in [0, 1] (pixels / 255), got {im.dtype}")
        d = self.pad_divisor
        height = -(-max(im.shape[1] for im in images) // d) * d
        width = -(-max(im.shape[2] for im in images) // d) * d
        batch = torch.stack([F.pad((im.float() - self.mean[0]) / self.std[0],
                                   (0, width - im.shape[2], 0, height - im.shape[1])) for im in images])
        samples = []
        for i, im in enumerate(images):
            shape = (int(im.shape[1]), int(im.shape[2]))
            sample = DetDataSample(metainfo={"img_shape": shape, "ori_shape": shape, "pad_shape": (height, width),
                                             "batch_input_shape": (height, width), "scale_factor": (1.0, 1.0)})
            if targets is not None:
                labels = targets[i]["labels"]
                if len(labels) and (int(labels.min()) < 1 or int(labels.max()) >= self.num_classes):
                    raise ValueError(f"image {i}: box labels must be classes 1..{self.num_classes - 1} (0 is the "
                                     f"background), got {sorted(set(labels.tolist()))}")
                sample.gt_instances = InstanceData(bboxes=targets[i]["boxes"].float(),
                                                   labels=targets[i]["labels"].long() - 1)
            samples.append(sample)
        return batch, samples

    def forward(self, images: list[torch.Tensor] | torch.Tensor) -> list[dict[str, torch.Tensor]]:
        if self.training:
            raise RuntimeError("an MMDetector trains through zoo.detection.mm.MMDetectionDistiller (its losses need "
                               "the ground truth); call .eval() to detect")
        dtypes = sorted({str(p.dtype).replace("torch.", "") for p in self.parameters() if p.is_floating_point()})
        if dtypes not in ([], ["float32"]):
            raise TypeError(f"this mmdet detector's weights are {' and '.join(dtypes)}: mmcv's NMS runs in "
                            f"float32 only, so an mmdet model detects in float32 (call .float() on it)")
        batch, samples = self.prepare(images)
        results = self.mm.predict(batch, samples, rescale=False)
        out = []
        for r in results:
            found = r.pred_instances
            out.append({"boxes": found.bboxes.float(), "scores": found.scores.float(), "labels": found.labels.long() + 1})
        return out


def build_mm_detector(architecture: str, num_classes: int, image_size: int = 96, *,
                      mm_model: dict[str, Any] | None = None, checkpoint: str | Path | None = None) -> MMDetector:
    """An `MMDetector` for ``num_classes`` (counting the background) from ``mm_model`` (a card's recorded config)
    or else from the config ``architecture`` names (``mmdet:<file or mmdet::name or kdzoo::name>``), with an
    optional mm checkpoint (``weights_only=True``; MMRazor's ``architecture.`` prefix stripped; a box head of
    another class count is left at its initialisation, and said so).

    Raises:
        OpenMMLabMissingError, FileNotFoundError, ValueError (see `load_model_config`, `MMDetector`); ValueError:
        a checkpoint whose keys do not fit the model (the mismatched keys named)."""
    from zoo.segmentation.mm import load_mm_checkpoint

    cfg = mm_model if mm_model is not None else load_model_config(architecture)
    # a config's ImageNet backbone is loaded for a fresh build; a card's recorded config has the trained weights
    model = MMDetector(cfg, architecture, num_classes, image_size, pretrained=mm_model is None and checkpoint is None)
    if checkpoint is not None:
        skipped = load_mm_checkpoint(model.mm, checkpoint, head_keys=("bbox_head.fc_cls", "bbox_head.fc_reg"))
        if skipped:
            import warnings

            warnings.warn(f"{Path(checkpoint).name}: {len(skipped)} tensors of other shapes left at their initialisation "
                          f"(e.g. a head for another number of classes): {', '.join(skipped[:4])}", stacklevel=2)
    return model


def _levels(maps: list[torch.Tensor], width: int) -> torch.Tensor:
    """Per-level (N, A * width, H, W) head outputs -> (N, sum_l H_l W_l A, width), in mmdet's anchor order
    (level, then position, then anchor)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in maps], 1)


class MMDetectionDistiller(DetectionDistiller):
    """`zoo.detection.distill.DetectionDistiller` for an `MMDetector` student (and teacher): the same nine
    parts and recipe weights (``chen2017``), computed on mmdet's modules.

    - Hard parts: mmdet's own losses, called as its ``TwoStageDetector.loss`` calls them, but step by step so the
      teacher is asked about the same samples: ``rpn_cls`` / ``rpn_reg`` are the RPN head's
      ``loss_by_feat_single`` summed over the FPN levels (on ``get_targets``' sampled anchors), ``rcn_cls`` /
      ``rcn_reg`` the box head's ``loss_cls`` / ``loss_bbox`` on the proposals its sampler drew.
    - Chen et al. 2017 (eqs. 1-4): ``rpn_soft`` (the teacher's objectness on the student's sampled anchors,
      background weight w_0), ``rpn_bounded`` (teacher-bounded regression on the positive anchors, normalised
      by the sampled anchors), ``rcn_soft`` (class-weighted soft cross-entropy on the sampled proposals, mmdet's
      background column moved first for the weights), ``rcn_bounded`` (on the positive proposals' own-class
      deltas, normalised by the proposals) and ``backbone_hint``: FitNet's L2 through an adaptation layer,
      averaged over the FPN levels the RPN reads (Chen et al. hint one backbone map; with an FPN every level
      feeds the RPN, so each is hinted).

    Raises:
        ValueError: (besides `DetectionDistiller`'s) a student that is not an `MMDetector`, an RPN with a
            softmax objectness (Chen's objectness term here takes one logit per anchor), or a teacher with other
            anchors, other FPN levels or strides, or another class count.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, recipe: Any = None, *,
                 example_batch: dict[str, Any] | None = None) -> None:
        if not isinstance(student, MMDetector):
            raise ValueError(f"MMDetectionDistiller trains an MMDetector, got {type(student).__name__}")
        if getattr(student.mm.rpn_head, "cls_out_channels", 1) != 1:
            raise ValueError("the mmdet bridge needs a sigmoid RPN objectness (loss_cls use_sigmoid=True): one logit "
                             "per anchor")
        super().__init__(student, teacher, recipe, example_batch=example_batch)

    @staticmethod
    def _match_teacher(student: nn.Module, teacher: nn.Module, example_batch: dict[str, Any]) -> nn.Module:
        if not isinstance(teacher, MMDetector):
            raise ValueError(f"an mmdet student distils from an mmdet teacher (an MMDetector), got {type(teacher).__name__}")
        s_gen, t_gen = student.mm.rpn_head.prior_generator, teacher.mm.rpn_head.prior_generator
        if len(s_gen.base_anchors) != len(t_gen.base_anchors) or s_gen.strides != t_gen.strides or not all(
                torch.equal(a, b) for a, b in zip(s_gen.base_anchors, t_gen.base_anchors)):
            raise ValueError(f"student and teacher need the same anchors (Chen et al. compare them anchor by anchor): "
                             f"strides {s_gen.strides} vs {t_gen.strides}, base anchors per level "
                             f"{[len(a) for a in s_gen.base_anchors]} vs {[len(a) for a in t_gen.base_anchors]}")
        if student.num_classes != teacher.num_classes:
            raise ValueError(f"student and teacher classify {student.num_classes} and {teacher.num_classes} classes")
        was_training = student.training
        student.eval()  # the probe must not move the student's BatchNorm statistics
        with torch.no_grad():
            images = list(example_batch["inputs"])
            s_maps = student.mm.extract_feat(student.prepare(images)[0])
            t_maps = teacher.mm.extract_feat(teacher.prepare(images)[0])
        student.train(was_training)
        if [m.shape[-2:] for m in s_maps] != [m.shape[-2:] for m in t_maps]:
            raise ValueError(f"student and teacher feature maps must have the same levels and strides: "
                             f"{[tuple(m.shape) for m in s_maps]} vs {[tuple(m.shape) for m in t_maps]}")
        return nn.ModuleList(make_connector(s.shape, t.shape) for s, t in zip(s_maps, t_maps))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        from mmdet.models.utils import images_to_levels, multi_apply
        from mmdet.structures.bbox import bbox2roi, cat_boxes
        from mmengine.structures import InstanceData

        student = self.student
        s = student.mm
        targets = targets_from_batch(batch["boxes"], batch["labels"])
        inputs, samples = student.prepare(list(batch["inputs"]), targets)
        metas = [d.metainfo for d in samples]
        gts = [d.gt_instances for d in samples]
        feats = s.extract_feat(inputs)

        # RPN: mmdet's AnchorHead.loss_by_feat, step by step (the RPN's ground truth is class-agnostic: label 0)
        rpn = s.rpn_head
        rpn_gts = [InstanceData(bboxes=g.bboxes, labels=torch.zeros_like(g.labels)) for g in gts]
        cls_maps, reg_maps = rpn(feats)
        anchors, valid = rpn.get_anchors([m.shape[-2:] for m in cls_maps], metas, device=inputs.device)
        labels, label_weights, box_targets, box_weights, avg_factor = rpn.get_targets(anchors, valid, rpn_gts, metas)
        level_sizes = [a.size(0) for a in anchors[0]]
        level_anchors = images_to_levels([cat_boxes(a) for a in anchors], level_sizes)
        cls_losses, reg_losses = multi_apply(rpn.loss_by_feat_single, cls_maps, reg_maps, level_anchors, labels,
                                             label_weights, box_targets, box_weights, avg_factor=avg_factor)
        parts = {"rpn_cls": sum(cls_losses), "rpn_reg": sum(reg_losses)}

        # proposals, then the RoI head's assigner and sampler (StandardRoIHead.loss) and its box loss
        proposal_cfg = s.train_cfg.get("rpn_proposal", s.test_cfg.rpn)
        proposals = rpn.predict_by_feat(cls_maps, reg_maps, batch_img_metas=metas, cfg=proposal_cfg)
        roi = s.roi_head
        sampled = []
        for i, found in enumerate(proposals):
            found.priors = found.pop("bboxes")
            assigned = roi.bbox_assigner.assign(found, gts[i])
            sampled.append(roi.bbox_sampler.sample(assigned, found, gts[i], feats=[f[i][None] for f in feats]))
        rois = bbox2roi([r.priors for r in sampled])
        out = roi._bbox_forward(feats, rois)
        result = roi.bbox_head.loss_and_target(out["cls_score"], out["bbox_pred"], rois, sampled, roi.train_cfg)
        parts["rcn_cls"], parts["rcn_reg"] = result["loss_bbox"]["loss_cls"], result["loss_bbox"]["loss_bbox"]

        if self.teacher is not None:
            t = self.teacher.mm
            with torch.no_grad():
                t_feats = t.extract_feat(self.teacher.prepare(list(batch["inputs"]))[0])
                t_cls_maps, t_reg_maps = t.rpn_head(t_feats)
                t_out = t.roi_head._bbox_forward(t_feats, rois)
            # RPN: every sampled anchor (label weight > 0); positives are label 0 (foreground), background is 1
            anchor_labels, anchor_weights = torch.cat(labels, 1).flatten(), torch.cat(label_weights, 1).flatten()
            picked = anchor_weights > 0
            positive = picked & (anchor_labels == 0)
            obj, t_obj = _levels(cls_maps, 1).flatten(), _levels(t_cls_maps, 1).flatten()
            parts["rpn_soft"] = objectness_soft_loss(obj[picked], t_obj[picked], self.background_weights["rpn_soft"])
            deltas, t_deltas = _levels(reg_maps, 4).reshape(-1, 4), _levels(t_reg_maps, 4).reshape(-1, 4)
            anchor_targets = torch.cat(box_targets, 1).reshape(-1, 4)
            parts["rpn_bounded"] = bounded_regression_loss(deltas[positive], t_deltas[positive], anchor_targets[positive],
                                                           self.margins["rpn_bounded"]) / picked.sum().clamp(min=1)
            # RoI head: mmdet puts the background last; Chen's class weights put it first
            first = lambda z: torch.cat([z[:, -1:], z[:, :-1]], 1)  # noqa: E731
            scores = out["cls_score"]
            parts["rcn_soft"] = soft_cross_entropy(first(scores), first(t_out["cls_score"]), class_weights=class_weights(
                scores.shape[1], self.background_weights["rcn_soft"]))
            roi_labels, _, roi_targets, _ = result["bbox_targets"]
            foreground = torch.where(roi_labels < scores.shape[1] - 1)[0]
            own = roi_labels[foreground] if not roi.bbox_head.reg_class_agnostic else torch.zeros_like(roi_labels[foreground])
            pred = out["bbox_pred"].reshape(len(roi_labels), -1, 4)[foreground, own]
            t_pred = t_out["bbox_pred"].reshape(len(roi_labels), -1, 4)[foreground, own]
            parts["rcn_bounded"] = bounded_regression_loss(pred, t_pred, roi_targets[foreground],
                                                           self.margins["rcn_bounded"]) / max(len(roi_labels), 1)
            parts["backbone_hint"] = sum(fitnet_loss(c(f), tf) for c, f, tf in zip(self.connector, feats, t_feats)) / len(feats)
        # L = L_RPN + L_RCN + gamma L_hint (Chen et al. 2017, eqs. 1-2, 4), each part at its recipe weight
        loss = sum(w * parts[name] for name, w in self.weights.items() if w)
        return {"loss": loss, **{k: v.detach() for k, v in parts.items()}}
