"""The detection task's registration (the ``kdzoo.tasks`` entry point ``detection``)."""
from zoo.tasks import MetricInfo, TaskSpec

SPEC = TaskSpec(
    name="detection",
    metrics=(MetricInfo("bbox_mAP", description="COCO box mAP@[.5:.95]"),
             MetricInfo("bbox_mAP_50", description="COCO box mAP@.5"),
             MetricInfo("bbox_mAP_75", description="COCO box mAP@.75"),
             MetricInfo("bbox_mAR_100", description="COCO box mAR with 100 detections")),
    pipeline_tag="object-detection",
    adapter="zoo.detection.adapter:ADAPTER",
    recipes="zoo.detection.recipes",
    description="object detection (Faster R-CNN; Chen et al. 2017 distillation)",
)
