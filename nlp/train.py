"""Train text classifiers and distil them through the core's trainer (`zoo.trainer.fit` + `zoo.distiller`)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save
from torch import nn

from zoo.distiller import Distiller
from zoo.io import atomic_write, atomic_write_text
from zoo.recipes import Recipe
from zoo.hub import cache_dir
from zoo.teacher_cache import ExampleOutputCache, weights_fingerprint
from zoo.trainer import TrainConfig, TrainResult, fit, resolve_amp

from .data import TextBatches


@torch.no_grad()
def accuracy(model: nn.Module, data: TextBatches, batch_size: int = 128, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (a fraction) of ``model`` on ``data``, in eval mode."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for batch in data.loader(batch_size, device=device):
        pred = model(**batch["inputs"]).argmax(-1)
        correct += int((pred == batch["labels"]).sum())
        total += len(pred)
    model.train(was_training)
    return correct / max(1, total)


def train_text(recipe: Recipe, students: Sequence[nn.Module], teachers: Sequence[nn.Module], train: TextBatches,
               cfg: TrainConfig, out_dir: str | os.PathLike, *, evaluate_on: TextBatches | None = None,
               resume: bool = False, device: str | torch.device | None = None,
               deadline: float | None = None) -> TrainResult:
    """Fit ``students`` with ``recipe`` from frozen ``teachers``; accuracy on ``evaluate_on`` after each epoch."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    example = train.batch(torch.arange(min(4, len(train))))
    cache = _teacher_cache(list(teachers), train, cfg, dev) if cfg.teacher_cache and teachers else None
    torch.manual_seed(cfg.seed)  # the recipe's connectors (e.g. TinyBERT's W_h) start from the run's seed too
    distiller = Distiller(list(students), list(teachers), recipe, example, num_examples=len(train), teacher_cache=cache)
    def evaluate() -> dict[str, float]:
        return {"accuracy": accuracy(students[0], evaluate_on, device=dev)}
    cfg = TrainConfig(**{**cfg.__dict__, "channels_last": False})
    try:
        return fit(distiller, train, cfg, out_dir, evaluate=evaluate if evaluate_on is not None else None, resume=resume, device=dev, deadline=deadline)
    finally:
        distiller.close()


def _teacher_cache(teachers: list[nn.Module], train: TextBatches, cfg: TrainConfig,
                   device: torch.device) -> ExampleOutputCache:
    """Per-example teacher outputs for this data and these teachers (text examples are the same every
    epoch): only the first epoch runs the teachers. Keyed by the teachers' weights, the token ids and
    labels, the process (rank, world size) and the autocast dtype."""
    from zoo.distributed import init_from_env

    rank, world, _ = init_from_env()  # under torchrun each process stores its own shard's rows
    data = hashlib.sha256(json.dumps(train.input_ids).encode() + train.labels.numpy().tobytes()).hexdigest()
    key = {"teachers": [weights_fingerprint(t) for t in teachers], "data": data, "rank": rank, "world": world,
           "amp": str(resolve_amp(cfg.amp, device)), "device": device.type}
    return ExampleOutputCache(cache_dir() / "teacher-outputs" / "examples", key, len(train))


def save_classifier(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """fp32 weights of a `TextClassifier` as safetensors, its config in the metadata (atomic)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    atomic_write(path, lambda f: f.write(save(state, metadata=meta)))
    return path


def load_classifier(path: str | os.PathLike) -> nn.Module:
    from safetensors import safe_open

    from .models import TextClassifier, encoder_from_config

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = TextClassifier(encoder_from_config(config["encoder"]), config["num_labels"])
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
