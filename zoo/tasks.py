"""Task adapters: what the core needs from each task (build a model, preprocess, predict, evaluate)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from .registry import TASKS, ModelCard

ADAPTER_MODULES = {"classification": "zoo.classification.adapter", "detection": "zoo.detection.adapter",
                   "nlp": "zoo.nlp.adapter"}


class TaskAdapter(Protocol):
    task: str

    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module: ...

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], Any]: ...

    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]: ...

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]: ...

    def sample_inputs(self, card: ModelCard) -> list[Any]: ...


def get_adapter(task: str) -> TaskAdapter:
    """The adapter of ``task``; a clear error for tasks kdzoo does not (yet) support."""
    if task not in ADAPTER_MODULES:
        known = ", ".join(ADAPTER_MODULES)
        if task in TASKS:
            raise ValueError(f"task {task!r} has no adapter in this version of kdzoo yet (available: {known})")
        raise ValueError(f"unknown task {task!r}; available: {known}")
    return importlib.import_module(ADAPTER_MODULES[task]).ADAPTER


def label_predictions(logits: torch.Tensor, labels: list[str], top_k: int = 1) -> list[dict[str, Any]]:
    """One dict per row of ``logits``: ``label``, ``index``, ``score`` (softmax probability), and with
    ``top_k`` > 1 the ``top_k`` list of such dicts. Shared by the classifying adapters."""
    probs = torch.softmax(logits.float(), dim=-1)
    k = max(1, min(top_k, probs.shape[1]))
    scores, indices = probs.topk(k, dim=1)
    labels = labels or [str(i) for i in range(probs.shape[1])]
    results = []
    for s_row, i_row in zip(scores.tolist(), indices.tolist()):
        top = [{"label": labels[i], "index": i, "score": round(s, 6)} for s, i in zip(s_row, i_row)]
        results.append({**top[0], "top_k": top} if k > 1 else top[0])
    return results


def read_image(item: Any, channels: int = 3, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image (path, PIL image, array or tensor; any bit depth, see `zoo.images`) as a uint8
    ``(C, H, W)`` tensor with ``channels`` channels (1: grey by ITU-R 601-2 luma, as PIL's ``L``; 3:
    RGB), resized to ``size`` = (width, height) if given. Raises FileNotFoundError, TypeError or
    ValueError (with what was given) for inputs that are not images."""
    from PIL import Image

    from .images import to_uint8_array

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    arr = to_uint8_array(item)
    image = Image.fromarray(arr[:, :, 0] if arr.shape[-1] == 1 else arr)
    image = image.convert("L" if channels == 1 else "RGB")
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.BILINEAR)
    out = np.asarray(image, dtype=np.uint8)
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(out.copy()).permute(2, 0, 1)


def bundled_samples(samples_dir: Path, dataset: str) -> list[Path]:
    """The example images an adapter ships for ``dataset`` (``samples_dir/dataset/*.png``), sorted."""
    folder = samples_dir / dataset
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no bundled sample images for dataset {dataset!r}; pass input files")
    return files
