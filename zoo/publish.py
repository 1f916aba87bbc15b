"""Publish a finished run (any task whose adapter can evaluate it) as a zoo checkpoint with a measured card."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import hub
from .io import check_output_folder
from .metrics import count_flops, count_params, cpu_description, measure_latency
from .registry import ModelCard
from .tasks import get_adapter


def check_destination(name: str, aliases: list[str] | None = None, dest_root: str | os.PathLike | None = None,
                      *, overwrite: bool = False, zoo_names: bool = True) -> Path:
    """The folder ``dest_root/name`` a publish will write (default root: the bundled ``weights/``), checked
    before any work is done.

    Raises ``ValueError`` when ``dest_root`` is not a folder, when ``dest_root/name`` exists already and
    ``overwrite`` is false, when an alias repeats the name, when the name or an alias is already a name
    of another zoo entry (an alias would shadow it), or when the name is a zoo entry's and ``dest_root``
    is not the bundled folder (two entries of one name). ``zoo_names=False`` leaves the zoo's names out
    (a protocol publishing the zoo's own entries, re-made, into a folder of its own)."""
    from .api import REGISTRY

    root = Path(dest_root) if dest_root is not None else hub.bundled_dir()
    check_output_folder("--dest", root)
    target = root / name
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists already; nothing was published. Pass --overwrite to replace it, "
                         "or choose another --name")
    aliases = aliases or []
    if name in aliases:
        raise ValueError(f"alias {name!r} repeats the entry's name")
    bundled = root.resolve() == hub.bundled_dir().resolve()
    for n in [name, *aliases] if zoo_names else []:
        if n in REGISTRY and (REGISTRY.get(n).name != name or not bundled):
            raise ValueError(f"{n!r} is already a name of the zoo entry {REGISTRY.get(n).name!r}; nothing "
                             "was published. Choose another name")
    return target


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


def publish(run_dir: str | os.PathLike, name: str, *, dest_root: str | os.PathLike | None = None,
            aliases: list[str] | None = None, description: str = "", notes: str = "",
            dtype: torch.dtype = torch.float16, data_root: str | None = None,
            extra: dict[str, Any] | None = None, command: str | None = None,
            latency_batch_sizes: tuple[int, ...] = (1, 32), baseline: dict[str, Any] | None = None) -> ModelCard:
    """Re-save a run's checkpoint as ``dtype`` under ``dest_root/name`` (default: the bundled ``weights/``).

    The card's metrics are measured again on the cast weights, exactly as ``zoo eval`` will load
    them, and params, FLOPs and CPU latency are measured. ``command`` replaces the card's reproduce
    command (default: the run's command followed by this ``zoo publish``). ``baseline``: the plain
    twin's record (`zoo.protocol.baseline_record`) for a distilled entry.
    """
    card = hub.read_card(run_dir)
    model = hub.load_dir(run_dir, card)
    cast = model.to(dtype).float()  # the round trip the shipped weights go through
    result = get_adapter(card.task).evaluate(cast, card, data_root=data_root)
    costs = measure_costs(cast, tuple(card.preprocessing["input_size"]), latency_batch_sizes)
    details = {k: v for k, v in result.items() if k not in card.metrics and k != "n"}  # the task's breakdown
    extra = {**card.extra, **details, **{f"{k}_fp32": v for k, v in card.metrics.items()}, **(extra or {})}
    training = card.training
    if training is not None:
        training = replace(training, notes=notes or training.notes,
                           command=command or training.command + f" && zoo publish {run_dir} --name {name}"
                           + (f" --dest {dest_root}" if dest_root is not None else ""))
    new = replace(card, name=name, aliases=aliases or [], metrics={k: round(result[k], 6) for k in card.metrics},
                  description=description or card.description, training=training, extra=extra,
                  baseline=baseline if baseline is not None else card.baseline, **costs)
    dest = Path(dest_root) if dest_root is not None else hub.bundled_dir()
    return hub.save(cast, dest / name, new, dtype=dtype)
