"""Tasks: the one seam between the core and a task (classification, detection, nlp, ... or your own).

A task is registered by a `TaskSpec`: its name, its metrics (with unit, range and direction), its Hugging
Face pipeline tag, and where its `TaskAdapter` and its recipes live (imported only when first needed, so
that reading cards stays cheap). Installed tasks declare their spec as an entry point of the group
``kdzoo.tasks`` (``name = "package.module:SPEC"``); the core never imports a task by name. Code can add
one at run time with `register_task`.

The adapter supplies what the core cannot know: how to build a model from a card, preprocess raw
inputs, predict, evaluate on the card's dataset split, its sample inputs, and (optionally) its command
line for ``zoo train|distill TASK``, its distillation API for `zoo.distill`, how to publish its own
kind of run folder, and its plug-in for the twin protocol (`zoo.protocol`).

This module also holds helpers the image and text adapters share (`label_predictions`, `read_image`,
`bundled_samples`).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # torch is imported where a model is built or run: reading cards and specs stays cheap
    import torch
    from torch import nn

    from .registry import ModelCard

ENTRY_POINT_GROUP = "kdzoo.tasks"


@dataclass(frozen=True)
class MetricInfo:
    """A metric as cards store it: ``name``, the stored value's valid range [``low``, ``high``] (None:
    unbounded), whether higher is better, its unit for display, and whether it is a fraction shown in
    percent (``top1 = 0.9312`` shows as 93.12 %), like the metadata of torchvision's weights."""

    name: str
    higher_is_better: bool = True
    low: float | None = 0.0
    high: float | None = 1.0
    unit: str = "%"
    percent: bool = True
    description: str = ""

    def check(self, value: float) -> str | None:
        """A problem with ``value`` (outside the range), or None."""
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            bounds = f"[{self.low if self.low is not None else '-inf'}, {self.high if self.high is not None else 'inf'}]"
            return f"metric {self.name}={value} is outside its range {bounds}" + (" (a fraction)" if self.percent else "")
        return None

    def format(self, value: float) -> str:
        """``93.12%`` for fractions, ``28.40 dB`` otherwise."""
        return f"{value * 100:.2f}%" if self.percent else f"{value:.2f}" + (f" {self.unit}" if self.unit else "")


@dataclass
class TaskSpec:
    """What registers a task: cheap to import (no model code)."""

    name: str
    metrics: tuple[MetricInfo, ...]  # the standard metrics; the first is the headline
    pipeline_tag: str = ""  # Hugging Face pipeline tag for the card's front matter
    adapter: Any = None  # a TaskAdapter, or "module:attribute" imported on first use
    recipes: str | None = None  # module that registers the task's recipes (and loss terms) when imported
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name[0].isalpha():
            raise ValueError(f"a task name is a lowercase identifier, got {self.name!r}")
        if not self.metrics:
            raise ValueError(f"task {self.name!r} must declare at least one metric")

    def metric(self, name: str) -> MetricInfo | None:
        return next((m for m in self.metrics if m.name == name), None)

    @property
    def headline(self) -> MetricInfo:
        return self.metrics[0]

    def load_adapter(self) -> "TaskAdapter":
        if isinstance(self.adapter, str):
            module, _, attr = self.adapter.partition(":")
            self.adapter = getattr(importlib.import_module(module), attr or "ADAPTER")
        if self.adapter is None:
            raise ValueError(f"task {self.name!r} has no adapter")
        return self.adapter

    def load_recipes(self) -> None:
        if self.recipes:
            importlib.import_module(self.recipes)


class TaskAdapter:
    """What the core calls for a task. Subclasses implement the model methods; the run methods are
    optional (a task without them can still be loaded, predicted and evaluated)."""

    task: str = ""

    # -------------------------------------------------------------- models (required)
    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        """The untrained network a card describes (``card.architecture``, ``card.config``)."""
        raise NotImplementedError(f"task {self.task!r}: build_model")

    def preprocessor(self, card: "ModelCard", directory: str | os.PathLike | None = None) -> Callable[[Any], Any]:
        """Raw inputs (files, images, texts) -> the batch the model takes; ``directory`` holds the card's files."""
        raise NotImplementedError(f"task {self.task!r}: preprocessor")

    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per input (``label``, ``index``, ``score`` at least); called in eval mode without grad."""
        raise NotImplementedError(f"task {self.task!r}: predict")

    def evaluate(self, model: nn.Module, card: "ModelCard", *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        """The card's metrics (and details) measured on ``card.dataset`` / ``card.split``."""
        raise NotImplementedError(f"task {self.task!r}: evaluate")

    def sample_inputs(self, card: "ModelCard") -> list[Any]:
        """The inputs `zoo predict` uses when given none."""
        raise NotImplementedError(f"task {self.task!r} ships no sample inputs; pass inputs")

    def save_prediction(self, prediction: dict[str, Any], source: Any, directory: Path) -> list[Path]:
        """Render ``prediction`` of input ``source`` into files in ``directory`` (`zoo predict --save`);
        returns the paths written. Raises NotImplementedError for a task that renders nothing."""
        raise NotImplementedError(f"task {self.task!r} does not save predictions as files; drop --save")

    def describe(self, prediction: dict[str, Any]) -> str:
        """One line for `zoo predict`'s text output."""
        ranked = prediction.get("top_k") or [{"label": prediction["label"], "score": prediction["score"]}]
        return ", ".join(f"{t['label']} ({t['score']:.3f})" for t in ranked)

    # -------------------------------------------------------------- runs (optional)
    # The generic run path (`zoo.runner`) needs these five; a task that trains its own way overrides
    # `distill` and `cli` instead.
    task_loss: Callable[[torch.Tensor, dict[str, Any]], torch.Tensor] | None = None  # default: cross-entropy
    # TrainConfig fields the task trains with unless a recipe's own ``train`` or the user's settings set them
    # (e.g. an image-to-image generator's Adam at 2e-4); empty: TrainConfig's defaults
    train_defaults: dict[str, Any] = {}

    def datasets(self, data: Any = None, *, train_subset: int | None = None) -> tuple[Any, Any]:
        """(train, test) batch sources (``len``, ``batch(indices, generator, augment, device)``, ``name``,
        ``split``) of ``data`` (a data set name of the task; None: its default)."""
        raise NotImplementedError(f"task {self.task!r} has no data for runs")

    def build_student(self, architecture: str, train: Any) -> nn.Module:
        """An untrained model of ``architecture`` sized for ``train``."""
        raise NotImplementedError(f"task {self.task!r} cannot build students")

    def evaluate_model(self, model: nn.Module, data: Any, *, device: Any = "cpu") -> dict[str, float]:
        """The task's metrics of ``model`` on a batch source (eval mode, no grad)."""
        raise NotImplementedError(f"task {self.task!r} cannot evaluate runs")

    def onnx_export(self, model: nn.Module, inputs: Any, *, dtype: str, int8: bool, rate: float, label: str
                    ) -> tuple[bytes, dict[str, Any]] | None:
        """The task's own ONNX export of ``model`` (the graph's bytes and the fields `zoo.export.export_onnx`
        reports), or None for the generic export of tensor inputs (the default). ``rate`` is the tolerance
        (relative), ``label`` the entry's name for messages."""
        return None

    def model_config(self, model: nn.Module) -> dict[str, Any]:
        """The builder keyword arguments a card records to rebuild ``model`` (default: ``model.config``)."""
        return dict(getattr(model, "config", {}))

    def card_fields(self, train: Any) -> dict[str, Any]:
        """``preprocessing`` and ``labels`` of the cards of models trained on ``train``."""
        return {}

    def cli(self, command: str, argv: list[str]) -> int:
        """``zoo train|distill TASK ARGS...``: parse ``argv``, run, return the exit code (default: the
        generic options of `zoo.runner.cli`)."""
        from .runner import cli

        return cli(self, command, argv)

    def distill(self, teacher: Any, student: Any, recipe: str | None, **kwargs: Any) -> Any:
        """`zoo.distill` for this task's recipes (``recipe`` None: the task loss only); returns a
        `zoo.api.DistillRun` (default: `zoo.runner.distill`)."""
        from .runner import distill

        return distill(self, teacher, student, recipe, **kwargs)

    def publish_run(self, run_dir: str | os.PathLike, name: str, **kwargs: Any) -> "ModelCard | None":
        """Publish a run folder of this task's own kind (not a kdzoo checkpoint folder); None when
        ``run_dir`` is not one."""
        return None

    protocol: Any = None  # the twin protocol's plug-in (`zoo.protocol.ProtocolTask`), if the task has one


_SPECS: dict[str, TaskSpec] = {}
_ENTRY_POINTS_READ = False


def _read_entry_points() -> None:
    global _ENTRY_POINTS_READ
    if _ENTRY_POINTS_READ:
        return
    _ENTRY_POINTS_READ = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _SPECS:
            continue
        spec = ep.load()
        if not isinstance(spec, TaskSpec) or spec.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) must be a TaskSpec named {ep.name!r}")
        _SPECS[spec.name] = spec


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Add a task (normally declared as a ``kdzoo.tasks`` entry point instead); a name already taken is an
    error unless ``replace``."""
    _read_entry_points()
    if spec.name in _SPECS and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    if isinstance(spec.adapter, TaskAdapter) and not spec.adapter.task:
        spec.adapter.task = spec.name
    return spec


def unregister_task(name: str) -> None:
    """Remove a task added by `register_task` (tests)."""
    _SPECS.pop(name, None)


def known_tasks() -> list[str]:
    """The names of every registered task, sorted."""
    _read_entry_points()
    return sorted(_SPECS)


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task``; ValueError naming the known tasks otherwise."""
    _read_entry_points()
    if task not in _SPECS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(_SPECS)) or 'none (is kdzoo installed?)'}")
    return _SPECS[task]


def get_adapter(task: str) -> TaskAdapter:
    """The adapter of ``task`` (imported on first use)."""
    return task_spec(task).load_adapter()


def load_all_recipes() -> None:
    """Import every task's recipes (and so their loss terms)."""
    for name in known_tasks():
        _SPECS[name].load_recipes()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer, else the CPU (a model without
    tensors): where a prediction's inputs go."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``batch`` with ``fn`` applied to every tensor in it (in mappings, such as a tokenizer's output, which come
    back as dicts, and in lists and tuples); anything else is kept as it is."""
    import torch
    from collections.abc import Mapping

    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it on ``device`` (`map_tensors`)."""
    return map_tensors(batch, lambda t: t.to(device))


def label_predictions(logits: torch.Tensor, labels: list[str], top_k: int = 1) -> list[dict[str, Any]]:
    """One dict per row of ``logits``: ``label``, ``index``, ``score`` (softmax probability), and with
    ``top_k`` > 1 the ``top_k`` list of such dicts. Shared by the classifying adapters."""
    import torch

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
    import numpy as np
    import torch
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
        raise FileNotFoundError(f"no bundled sample images for dataset {dataset!r}; pass input files (zoo predict NAME FILE ..., zoo export NAME --onnx OUT --input FILE ...)")
    return files
