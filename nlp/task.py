"""The nlp task's registration (the ``kdzoo.tasks`` entry point ``nlp``)."""
from zoo.tasks import MetricInfo, TaskSpec

SPEC = TaskSpec(
    name="nlp",
    metrics=(MetricInfo("accuracy", description="accuracy on the split"),
             MetricInfo("f1", description="macro F1 on the split")),
    pipeline_tag="text-classification",
    adapter="zoo.nlp.adapter:ADAPTER",
    recipes="zoo.nlp.recipes",
    description="text classification (BERT-style teachers -> TinyBERT, PKD, DistilBERT)",
)
