"""Image classification, the reference task for the survey's Table 1 (installed as ``zoo.classification``)."""
import importlib

# Imported on first use (PEP 562): the task's entry point (`zoo.classification.task`) loads this package, and
# reading cards must not pay for torch.
_LAZY = {"ImageDataset": "data", "load_dataset": "data", "ARCHITECTURES": "models", "CifarResNet": "models",
         "build_model": "models"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):  # noqa: ANN202 (module attribute hook)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
