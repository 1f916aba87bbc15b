"""Image classification, the reference task for the survey's Table 1 (installed as ``zoo.classification``)."""
from zoo.lazy import lazy_attributes

# Imported on first use: the task's entry point (`zoo.classification.task`) loads this package, and reading
# cards must not pay for torch.
_LAZY = {"ImageDataset": "data", "load_dataset": "data", "ARCHITECTURES": "models", "CifarResNet": "models",
         "build_model": "models"}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
