"""Turn a finished classification training run into a zoo checkpoint with a measured model card."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from torch import nn

from zoo import hub
from zoo.metrics import count_params, hardware_description
from zoo.registry import ModelCard, TeacherRef, TrainingRecord

from .evaluate import evaluate
from .models import describe_model

CIFAR_RESNET_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition (CIFAR ResNet, sec. 4.2)"


def default_name(arch: str, method: str, dataset: str) -> str:
    """``resnet20-kd.fashion-mnist``; an image folder's base name stands for its path, ``:`` becomes ``-``."""
    data = Path(dataset).name if os.path.isdir(dataset) else dataset
    return (f"{arch}-{method}.{data}" if method != "plain" else f"{arch}.{data}").replace(":", "-")


def export_run(model: nn.Module, info: dict[str, Any], out_dir: str | os.PathLike, *, command: str,
               name: str | None = None) -> Path:
    """Save a finished run's model (fp32) with a card whose metrics are measured now on the test split.

    ``info`` comes from ``train_classifier`` (plain recipe) or ``distill_classifier`` (its recipe and
    teachers go on the card).
    """
    data, test = info["dataset"], info["test"]
    recipe = info.get("recipe")
    teachers = info.get("teachers") or []
    method = recipe["name"] if recipe else "plain"
    paper = recipe["paper"] if recipe and recipe.get("paper") else CIFAR_RESNET_PAPER
    extra_run = ({"recipe": recipe, "teachers": teachers, "assistant_chain": info.get("assistant_chain")}
                 if method != "plain" else {})
    arch, config = describe_model(model)
    result = evaluate(model, test)
    history = info["history"]
    cfg = info["train_config"]
    card = ModelCard(
        name=name or default_name(arch, method, data.name),
        task="classification",
        architecture=arch,
        config=config,
        dataset=data.name,
        split=test.split,
        metrics={"top1": round(result["top1"], 6)},
        params=count_params(model),
        method=method,
        paper=paper,
        teacher=TeacherRef(**teachers[0]) if teachers else None,
        preprocessing={"input_size": [data.in_channels, data.image_size, data.image_size],
                       "mean": list(data.mean), "std": list(data.std)},
        labels=list(data.classes),
        training=TrainingRecord(
            command=command,
            hardware=info.get("hardware") or hardware_description(info["device"]),
            epochs=cfg["epochs"],
            seeds=[cfg["seed"]],
            wall_time_s=float(info["wall_time_s"] if "wall_time_s" in info
                              else history[-1]["seconds"] if history else 0.0),
            date=_dt.date.today().isoformat(),
            config=cfg,
        ),
        extra={"per_class": result["per_class"], "confusion": result["confusion"],
               "history": [dict(h) for h in history], **extra_run},
    )
    hub.save(model, out_dir, card)
    return Path(out_dir)
