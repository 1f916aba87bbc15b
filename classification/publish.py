"""Turn a finished classification training run into a zoo checkpoint with a measured model card."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from zoo import hub
from zoo.metrics import hardware_description
from zoo.registry import TeacherRef
from zoo.runner import RunRecord, default_name, make_card

from .evaluate import evaluate
from .models import describe_model

CIFAR_RESNET_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition (CIFAR ResNet, sec. 4.2)"




def run_record(model: nn.Module, info: dict[str, Any], *, command: str) -> RunRecord:
    """The typed record of a finished classification run (``info`` from ``distill_classifier``)."""
    data = info["dataset"]
    recipe = info.get("recipe")
    method = recipe["name"] if recipe else "plain"
    arch, config = describe_model(model)
    history = info["history"]
    return RunRecord(
        task="classification", model=model, architecture=arch, config=config, dataset=data.name,
        split=info["test"].split, method=method,
        paper=recipe["paper"] if recipe and recipe.get("paper") else CIFAR_RESNET_PAPER,
        teachers=[TeacherRef(**t) for t in info.get("teachers") or []] if method != "plain" else [],
        train_config=info["train_config"], history=history, command=command,
        hardware=info.get("hardware") or hardware_description(info["device"]),
        wall_time_s=float(info["wall_time_s"] if "wall_time_s" in info else history[-1]["seconds"] if history else 0.0),
        preprocessing={"input_size": [data.in_channels, data.image_size, data.image_size],
                       "mean": list(data.mean), "std": list(data.std)},
        labels=list(data.classes), recipe=recipe if method != "plain" else None,
        extra={"assistant_chain": info.get("assistant_chain")} if method != "plain" else {},
        notes=info.get("notes", ""))


def export_run(model: nn.Module, info: dict[str, Any], out_dir: str | os.PathLike, *, command: str,
               name: str | None = None) -> Path:
    """Save a finished run's model (fp32) with a card whose metrics are measured now on the test split
    (`zoo.runner`: run record -> card -> checkpoint; the per-class accuracy and confusion matrix go in
    the card's ``extra``). ``info`` comes from ``distill_classifier``."""
    record = run_record(model, info, command=command)
    result = evaluate(model, info["test"])
    record.extra.update({"per_class": result["per_class"], "confusion": result["confusion"]})
    card = make_card(record, {"top1": result["top1"]}, name or default_name(record.architecture, record.method,
                                                                          record.dataset))
    hub.save(model, out_dir, card)
    return Path(out_dir)
