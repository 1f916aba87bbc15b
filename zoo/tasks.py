"""Task adapters: what the core needs from each task (build a model, preprocess, predict, evaluate)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Protocol

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
    """An image path, PIL image, uint8 array (H, W[, C]) or uint8 tensor (C, H, W) as a uint8 (C, H, W)
    tensor with ``channels`` channels (1: grey, 3: RGB), resized to ``size`` = (width, height) if given."""
    import numpy as np
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            item = Image.open(path)
            item.load()
        except OSError as e:
            raise ValueError(f"{path} is not a readable image ({e})") from None
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8:
            raise ValueError("tensor inputs must be uint8 images (C, H, W); pass float batches to the model directly")
        item = item.permute(1, 2, 0).numpy() if item.dim() == 3 else item.numpy()
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3):
            raise ValueError(f"array inputs must be uint8 (H, W) or (H, W, C), got {item.dtype} {item.shape}")
        item = Image.fromarray(item.squeeze(-1) if item.ndim == 3 and item.shape[-1] == 1 else item)
    if not isinstance(item, Image.Image):
        raise TypeError(f"cannot read an image from {type(item).__name__}; pass a path, PIL image, array or uint8 tensor")
    item = item.convert("L" if channels == 1 else "RGB")
    if size is not None and item.size != tuple(size):
        item = item.resize(tuple(size), Image.BILINEAR)
    arr = np.asarray(item, dtype=np.uint8)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def bundled_samples(samples_dir: Path, dataset: str) -> list[Path]:
    """The example images an adapter ships for ``dataset`` (``samples_dir/dataset/*.png``), sorted."""
    folder = samples_dir / dataset
    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no bundled sample images for dataset {dataset!r}; pass input files")
    return files
