"""The classification task adapter: model builders, preprocessing, prediction and evaluation."""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from zoo.registry import ModelCard
from zoo.tasks import TaskAdapter, bundled_samples, label_predictions, model_device, read_image

from .data import ImageDataset, dataset_key, load_dataset
from .folders import class_key, load_image_folder
from .evaluate import evaluate
from .models import build_model

SAMPLES_DIR = Path(__file__).parent / "samples"


class ClassificationPreprocessor:
    """Turn image paths, PIL images, arrays or uint8 tensors into the normalised batch a model expects."""

    def __init__(self, input_size: tuple[int, int, int], mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """``input_size``: (C, H, W) the model reads; ``mean``/``std``: per channel (or one for all), of
        pixels in [0, 1]. Raises ``ValueError`` for a size that is not three positive integers, or a
        mean/std of another length, not finite, or (std) not positive."""
        if (len(input_size) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                            for v in input_size)):
            raise ValueError(f"preprocessing input_size must be [channels, height, width], positive integers, "
                             f"got {list(input_size)}")
        for key, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, input_size[0]) or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                                                  for v in values):
                raise ValueError(f"preprocessing {key} must hold 1 or {input_size[0]} finite numbers (one per channel), "
                                 f"got {list(values)}")
        if not all(v > 0 for v in std):
            raise ValueError(f"preprocessing std must be positive, got {list(std)}")
        self.channels, self.height, self.width = input_size
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __repr__(self) -> str:
        return (f"ClassificationPreprocessor(input_size={(self.channels, self.height, self.width)}, "
                f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})")

    def _to_uint8(self, item: Any) -> torch.Tensor:
        return read_image(item, self.channels, (self.width, self.height))

    def __call__(self, inputs: Any) -> torch.Tensor:
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        if not items:
            raise ValueError("no inputs given")
        batch = torch.stack([self._to_uint8(x) for x in items])
        return (batch.float() / 255.0 - self.mean) / self.std


def image_folder_of(card: ModelCard, data_root: str | os.PathLike | None = None) -> str | None:
    """The image folder a classification card is evaluated on, or None for a data set kdzoo loads by name.

    The folder the card names while it exists (``data_root`` replaces it when given: the same data
    elsewhere); otherwise ``data_root``. Raises ``FileNotFoundError`` when neither is a folder."""
    if dataset_key(card.dataset) is not None:
        return None
    if data_root is not None and os.path.isdir(data_root):
        return os.fspath(data_root)
    if os.path.isdir(card.dataset):
        return card.dataset
    given = f"--data-root {data_root} is not a folder either" if data_root is not None else "give it with --data-root FOLDER"
    if os.sep in card.dataset or "/" in card.dataset:
        raise FileNotFoundError(f"the card of {card.name!r} was measured on the image folder {card.dataset}, which is not "
                                f"there (moved?): {given} (data_root= in Python)")
    raise FileNotFoundError(f"the card of {card.name!r} names the data set {card.dataset!r}, which kdzoo cannot load by "
                            f"name (a run on Python datasets, data=(train, test), records their class name): {given}, "
                            "its test images as an image folder (class folders, or test/ and train/ of class folders)")


def in_card_order(data: ImageDataset, card: ModelCard, folder: str) -> ImageDataset:
    """``data`` (an image folder's split, classes sorted by folder name) with its labels renumbered in the
    order of the card's labels (names compared by `class_key`); it may lack some of them. Raises
    ``ValueError`` for a class the card does not name."""
    if not card.labels:
        return data
    keys = [class_key(c) for c in card.labels]
    unknown = [c for c in data.classes if class_key(c) not in keys]
    if unknown:
        raise ValueError(f"the image folder {folder} has the classes {unknown}, which the card of {card.name!r} does not "
                         f"name (it names {list(card.labels)})")
    order = torch.tensor([keys.index(class_key(c)) for c in data.classes])
    return replace(data, labels=order[data.labels], classes=tuple(card.labels), _norm=None)


class ClassificationAdapter(TaskAdapter):
    task = "classification"

    def build_model(self, architecture: str, config: dict[str, Any]) -> nn.Module:
        return build_model(architecture, **config)

    def preprocessor(self, card: ModelCard, directory: str | os.PathLike | None = None) -> Callable[[Any], torch.Tensor]:
        """The card's preprocessing, checked against its model: ``ValueError`` for a card whose
        preprocessing lacks a field or is invalid, whose channels differ from the model's
        ``in_channels``, or whose labels are fewer or more than the model's ``num_classes``."""
        p = card.preprocessing
        missing = [k for k in ("input_size", "mean", "std") if k not in p]
        if missing:
            raise ValueError(f"the card of {card.name!r} has no preprocessing {', '.join(missing)}")
        size = p["input_size"]
        if not isinstance(size, (list, tuple)):
            raise ValueError(f"preprocessing input_size must be [channels, height, width], got {size!r}")
        pre = ClassificationPreprocessor(tuple(size), tuple(p["mean"]), tuple(p["std"]))
        channels, classes = card.config.get("in_channels"), card.config.get("num_classes")
        if channels is not None and channels != pre.channels:
            raise ValueError(f"the card of {card.name!r}: preprocessing input_size has {pre.channels} channels, "
                             f"its model reads {channels}")
        if classes is not None and card.labels and len(card.labels) != classes:
            raise ValueError(f"the card of {card.name!r} names {len(card.labels)} labels for a model of {classes} classes")
        return pre

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Any, top_k: int = 1) -> list[dict[str, Any]]:
        """One dict per input: ``label``, ``index``, ``score`` (softmax probability) and the ``top_k`` list."""
        batch = model.preprocess(inputs)
        return label_predictions(model(batch.to(model_device(model))), model.card.labels, top_k)

    def evaluate(self, model: nn.Module, card: ModelCard, *, data_root: str | None = None,
                 device: str = "cpu") -> dict[str, Any]:
        """Top-1 on the card's split, each image preprocessed as `predict` does it (the card's size and
        normalisation). A named data set is read from ``data_root`` (default: its standard places); an
        image folder from the path on the card, or from ``data_root`` when that folder has moved or the
        card names data kdzoo cannot load by name (a run on Python datasets, ``data=(train, test)``).

        Raises ``FileNotFoundError`` for an image folder that is not there, ``ValueError`` for one whose
        classes are not the card's labels, or a named data set of other image sizes than the card's."""
        folder = image_folder_of(card, data_root)
        if folder is not None:  # an image folder of the user's: read as the model was trained
            p = card.preprocessing
            data = load_image_folder(folder, card.split, channels=p["input_size"][0], size=p["input_size"][-1],
                                     mean=tuple(p["mean"]), std=tuple(p["std"]))
            data = in_card_order(data, card, folder)
        else:  # normalised as the card says, as `predict` does (not by the data set's own statistics)
            pre = self.preprocessor(card)
            data = load_dataset(card.dataset, card.split, data_root)
            if (data.in_channels, data.image_size) != (pre.channels, pre.width) or pre.height != pre.width:
                raise ValueError(f"the card of {card.name!r} reads {pre.channels}x{pre.height}x{pre.width} inputs, "
                                 f"{card.dataset} has {data.in_channels}x{data.image_size}x{data.image_size} images")
            p = card.preprocessing
            data = replace(data, mean=tuple(map(float, p["mean"])), std=tuple(map(float, p["std"])), _norm=None)
        return evaluate(model.to(device), data, device=device)

    def sample_inputs(self, card: ModelCard) -> list[Any]:
        """The bundled example images of the card's dataset (the default input of `zoo predict`)."""
        return bundled_samples(SAMPLES_DIR, card.dataset)

    @property
    def protocol(self) -> Any:
        """The twin protocol's task plug-in (`zoo.protocol.ProtocolTask`)."""
        from .protocol import PROTOCOL

        return PROTOCOL

    def cli(self, command: str, argv: list[str]) -> int:
        from .cli import main

        return main(command, argv)

    def distill(self, teacher: Any, student: str | nn.Module, recipe: str, *, data: Any = None, out: str | os.PathLike,
                settings: dict[str, Any], train_subset: int | None = None, resume: bool = False,
                device: str | None = None, deadline: float | None = None) -> Any:
        """`zoo.distill` for classification: distil (or, with the ``plain`` recipe, train) and export the
        finished run with its measured card."""
        from zoo import hub
        from zoo.api import DistillRun

        from .distill import distill_classifier
        from .publish import export_run

        named = data is None or isinstance(data, (str, os.PathLike))
        model, info = distill_classifier(recipe, teacher, student, str(data) if named and data is not None else None,
                                         out, settings, train_subset=train_subset, resume=resume, device=device,
                                         data=None if named else data, deadline=deadline)
        run = DistillRun(model, Path(out), info["finished"], info.get("history", []))
        if run.finished:
            export_run(model, info, out, command=info["command"])
            run.card = hub.read_card(out)
        return run


ADAPTER = ClassificationAdapter()
