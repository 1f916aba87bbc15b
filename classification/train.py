"""Plain supervised training of a classifier (the no-KD recipe) through the shared trainer."""
from __future__ import annotations

import copy
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.train import TrainConfig, fit

from .data import load_dataset
from .evaluate import evaluate
from .models import build_model


class Supervised(nn.Module):
    """Cross-entropy on the labels: the plain-student baseline of every KD table."""

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.model(batch["inputs"])
        return {"loss": F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)}


def train_classifier(
    arch: str,
    dataset: str = "fashion-mnist",
    out_dir: str | os.PathLike = "runs/classifier",
    cfg: TrainConfig | None = None,
    *,
    data_root: str | None = None,
    download: bool = False,
    train_subset: int | None = None,
    resume: bool = False,
    device: str | None = None,
    eval_batch_size: int = 1000,
) -> tuple[nn.Module, dict]:
    """Train ``arch`` from scratch on ``dataset`` with cross-entropy; returns (model, info).

    ``info`` holds the final test metrics, the per-epoch history and what the card's training
    record needs. The model is returned in eval mode on the CPU.
    """
    cfg = cfg or TrainConfig()
    train = load_dataset(dataset, "train", data_root, download)
    test = load_dataset(dataset, "test", data_root, download)
    if train_subset:
        train = train.subset(train_subset)
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed fixes
    model = build_model(arch, num_classes=len(train.classes), in_channels=train.in_channels)
    module = Supervised(model)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def epoch_eval() -> dict[str, float]:
        return {"top1": evaluate(model, test, batch_size=eval_batch_size, device=dev)["top1"]}

    def snapshot(epoch: int, history: list[dict]) -> None:
        """Every ``snapshot_every`` epochs, export the model as a checkpoint folder with its card."""
        if cfg.snapshot_every and epoch % cfg.snapshot_every == 0 and epoch < cfg.epochs:
            from .publish import export_run

            snap = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format).eval()
            info = {"history": list(history), "train_config": {**asdict(cfg), "epochs": epoch}, "dataset": train,
                    "test": test, "device": str(dev)}
            export_run(snap, info, Path(out_dir) / "snapshots" / f"epoch{epoch:03d}",
                       command=f"(snapshot at epoch {epoch} of a {cfg.epochs}-epoch run in {out_dir})",
                       name=f"{arch}.{train.name}.epoch{epoch}")

    result = fit(module, train, cfg, out_dir, evaluate=epoch_eval, on_epoch_end=snapshot, resume=resume, device=dev)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    info = {
        "finished": result.finished,
        "step": result.step,
        "total_steps": result.total_steps,
        "history": result.history,
        "train_config": asdict(cfg),
        "dataset": train,
        "test": test,
        "device": str(dev),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return model, info
