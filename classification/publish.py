"""Turn a finished training run into a zoo checkpoint with a measured model card."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import hub
from zoo.metrics import count_flops, count_params, cpu_description, hardware_description, measure_latency
from zoo.registry import ModelCard, TeacherRef, TrainingRecord

from .evaluate import evaluate

CIFAR_RESNET_PAPER = "He et al. 2016, Deep Residual Learning for Image Recognition (CIFAR ResNet, sec. 4.2)"


def measure_costs(model: nn.Module, input_size: tuple[int, ...], batch_sizes: tuple[int, ...] = (1, 32)) -> dict[str, Any]:
    """Params, FLOPs per image and median CPU latency at each batch size, for a card."""
    model = model.to("cpu").eval()
    example = torch.randn(1, *input_size)
    return {
        "params": count_params(model),
        "flops": count_flops(model, example),
        "latency_ms": {f"cpu_bs{b}": round(measure_latency(model, torch.randn(b, *input_size)), 3) for b in batch_sizes},
        "latency_env": cpu_description(),
    }


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
    arch = f"resnet{model.config['depth']}" if hasattr(model, "config") else type(model).__name__
    result = evaluate(model, test)
    history = info["history"]
    cfg = info["train_config"]
    card = ModelCard(
        name=name or (f"{arch}-{method}.{data.name}" if method != "plain" else f"{arch}.{data.name}"),
        task="classification",
        architecture=arch,
        config=dict(model.config),
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
            wall_time_s=float(info.get("wall_time_s", history[-1]["seconds"] if history else 0.0)),
            date=_dt.date.today().isoformat(),
            config=cfg,
        ),
        extra={"per_class": result["per_class"], "confusion": result["confusion"],
               "history": [dict(h) for h in history], **extra_run},
    )
    hub.save(model, out_dir, card)
    return Path(out_dir)


def publish(run_dir: str | os.PathLike, name: str, *, dest_root: str | os.PathLike | None = None,
            aliases: list[str] | None = None, description: str = "", notes: str = "",
            dtype: torch.dtype = torch.float16, data_root: str | None = None,
            extra: dict[str, Any] | None = None, command: str | None = None) -> ModelCard:
    """Re-save a run's checkpoint as ``dtype`` under ``dest_root/name`` (default: the bundled ``weights/``).

    The card's metrics are measured again on the cast weights, exactly as ``zoo eval`` will load
    them, and params, FLOPs and CPU latency are measured. ``command`` replaces the card's reproduce
    command (default: the run's command followed by this ``zoo publish``).
    """
    card = hub.read_card(run_dir)
    model = hub.load_dir(run_dir, card)
    cast = model.to(dtype).float()  # the round trip the shipped weights go through
    from .adapter import ADAPTER

    result = ADAPTER.evaluate(cast, card, data_root=data_root)
    costs = measure_costs(cast, tuple(card.preprocessing["input_size"]))
    extra = {**card.extra, "per_class": result["per_class"], "confusion": result["confusion"],
             "top1_fp32": card.metrics["top1"], **(extra or {})}
    training = card.training
    if training is not None:
        training = replace(training, notes=notes or training.notes,
                           command=command or training.command + f" && zoo publish {run_dir} --name {name}")
    new = replace(card, name=name, aliases=aliases or [], metrics={"top1": round(result["top1"], 6)},
                  description=description or card.description, training=training, extra=extra, **costs)
    dest = Path(dest_root) if dest_root is not None else hub.bundled_dir()
    return hub.save(cast, dest / name, new, dtype=dtype)
