"""The classification task's registration (the ``kdzoo.tasks`` entry point ``classification``)."""
from zoo.tasks import MetricInfo, TaskSpec

SPEC = TaskSpec(
    name="classification",
    metrics=(MetricInfo("top1", description="top-1 accuracy on the split"),
             MetricInfo("top5", description="top-5 accuracy on the split")),
    pipeline_tag="image-classification",
    adapter="zoo.classification.adapter:ADAPTER",
    recipes="zoo.classification.recipes",
    description="image classification (CIFAR-style ResNets on Fashion-MNIST / CIFAR; the survey's Table 1)",
)
