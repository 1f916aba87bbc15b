"""The face task's registration (the ``kdzoo.tasks`` entry point ``face``)."""
from zoo.tasks import MetricInfo, TaskSpec

SPEC = TaskSpec(
    name="face",
    metrics=(MetricInfo("tar_far_1e-3", description="true accept rate at a false accept rate of 1e-3, all test pairs"),
             MetricInfo("tar_far_1e-4", description="true accept rate at a false accept rate of 1e-4, all test pairs"),
             MetricInfo("acc", description="10-fold verification accuracy (LFW protocol)"),
             MetricInfo("acc_std", higher_is_better=False, description="standard deviation of the 10 fold accuracies"),
             MetricInfo("threshold", low=-1.0, high=1.0, unit="cos", percent=False,
                        description="cosine threshold of the 10-fold protocol (the same/different decision of predict)")),
    pipeline_tag="image-feature-extraction",
    adapter="zoo.face.adapter:ADAPTER",
    recipes="zoo.face.recipes",
    description="face recognition stand-in (CJK-font identities; ArcFace; ProxylessKD, embedding RKD, DDL)",
)
