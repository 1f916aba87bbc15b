"""kdzoo: a task-specific knowledge-distillation model zoo for PyTorch.

>>> import zoo
>>> model = zoo.load("resnet20.fmnist")           # eval-mode model; model.card holds its measured metrics
>>> zoo.predict("resnet20.fmnist")                # predictions on the entry's bundled sample images
"""
__version__ = "0.1.0"

from .api import DistillRun, card, distill, evaluate, list_models, load, predict, register, save, train  # noqa: E402
from .recipes import get_recipe, list_recipes  # noqa: E402
from .hub import ChecksumError, StateDictMismatchError  # noqa: E402
from .registry import ModelCard, UnknownModelError  # noqa: E402


def compare(task: str | None = None, dataset: str | None = None, method: str | None = None) -> list[dict]:
    """Rows comparing the zoo's entries (filtered by task, data set and method): headline metric with its unit
    and direction, params, FLOPs/MACs, CPU latency, teacher, gain over the plain twin and the teacher-twin gap
    closed (`zoo.comparison.comparison_rows`). Raises ValueError for a filter value no entry has."""
    from .comparison import comparison_rows, select

    return comparison_rows(select(task, dataset, method))

__all__ = ["ChecksumError", "DistillRun", "ModelCard", "StateDictMismatchError", "UnknownModelError", "card", "compare",
           "distill", "evaluate", "get_recipe", "list_models", "list_recipes", "load", "predict", "register", "save", "train",
           "__version__"]
