"""The segmentation task's registration (the ``kdzoo.tasks`` entry point ``segmentation``)."""
from zoo.tasks import MetricInfo, TaskSpec

SPEC = TaskSpec(
    name="segmentation",
    metrics=(MetricInfo("mIoU", description="mean intersection over union of the classes on the split"),
             MetricInfo("pixel_acc", description="fraction of pixels classified right")),
    pipeline_tag="image-segmentation",
    adapter="zoo.segmentation.adapter:ADAPTER",
    recipes="zoo.segmentation.recipes",
    description="semantic segmentation (LR-ASPP; structured KD of Liu et al. 2019, channel-wise KD of Shu et al. 2021)",
)
