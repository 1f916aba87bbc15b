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

__all__ = ["ChecksumError", "DistillRun", "ModelCard", "StateDictMismatchError", "UnknownModelError", "card",
           "distill", "evaluate", "get_recipe", "list_models", "list_recipes", "load", "predict", "register", "save", "train",
           "__version__"]
