"""Train a detector on the scenes, alone or distilled from a teacher (Chen et al. 2017), and export the run.

    python -m zoo.detection.train --arch frcnn-resnet56 --out runs/det/teacher
    python -m zoo.detection.train --arch frcnn-resnet20 --out runs/det/student
    python -m zoo.detection.train --arch frcnn-resnet20 --teacher runs/det/teacher --out runs/det/chen2017
    torchrun --nproc_per_node 4 -m zoo.detection.train ...   # DDP, one process per GPU

``--teacher`` takes a finished run directory or a zoo name. The run resumes exactly with ``--resume``
(`zoo.trainer.fit`), evaluates box mAP on the test scenes after every epoch, and ends by writing the
student as a kdzoo checkpoint (safetensors + model card with the measured metrics) in ``--out``.
"""
from __future__ import annotations

import argparse
import os
import shlex
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import hub
from zoo.distributed import init_from_env, is_main_process
from zoo.metrics import hardware_description
from zoo.registry import ModelCard, TeacherRef
from zoo.trainer import TrainConfig, config_from_overrides, fit

from .data import SCENE_COUNTS, DetectionDataset, load_scenes
from .distill import CHEN_2017, DetectionDistiller
from .evaluate import evaluate
from .models import ARCHITECTURES, PRETRAINED_BACKBONES, build_detector

CHEN_PAPER = "Chen et al. 2017, Learning Efficient Object Detection Models with Knowledge Distillation (NeurIPS)"
FASTER_RCNN_PAPER = "Ren et al. 2015, Faster R-CNN (torchvision's implementation) on a CIFAR ResNet backbone (He et al. 2016)"
DEFAULTS = TrainConfig(epochs=10, batch_size=32, lr=0.02, weight_decay=1e-4, nesterov=False, warmup_epochs=0.5,
                       amp="off", channels_last=False, log_every=10, checkpoint_every=50)


def load_teacher(ref: str | nn.Module) -> nn.Module:
    """A teacher from a run or checkpoint directory, or from the zoo by name."""
    if isinstance(ref, nn.Module):
        return ref
    if Path(ref).is_dir():
        return hub.load_dir(ref)
    import zoo

    return zoo.load(ref)


def train_detector(arch: str, out_dir: str | Path, *, teacher: str | nn.Module | None = None,
                   cfg: TrainConfig = DEFAULTS, train_count: int | None = None, test_count: int | None = None,
                   resume: bool = False, device: str | torch.device = "cpu", command: str = "",
                   chen: dict[str, float] | None = None, deadline: float | None = None) -> ModelCard | None:
    """Train ``arch`` on the scenes (distilled from ``teacher`` when given) and export it to ``out_dir``.

    Under ``torchrun`` every process trains its share of each batch (DDP); rank 0 exports and returns the
    card, the others return None. With a ``deadline`` (``time.monotonic()``) a run stopped by it returns
    None (resume it with ``resume=True``); without one, a stopped run raises SystemExit."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown detection architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    out = Path(out_dir)
    train = load_scenes("train", train_count or SCENE_COUNTS["train"])
    test = load_scenes("test", test_count or SCENE_COUNTS["test"])
    torch.manual_seed(cfg.seed)
    student = build_detector(arch, num_classes=train.num_classes, image_size=train.image_size[0],
                             pretrained_backbone=arch in PRETRAINED_BACKBONES)
    teacher_model = load_teacher(teacher) if teacher is not None else None
    weights = {**CHEN_2017, **(chen or {})}
    module = DetectionDistiller(student, teacher_model, example_batch=train.batch(torch.arange(4)), **weights)
    _, world, own_device = init_from_env()  # under torchrun: join the group, one device per process
    if world > 1 and own_device is not None:
        device = own_device
    device = torch.device(device)
    started = time.perf_counter()
    result = fit(module, train, cfg, out, evaluate=lambda: evaluate(student, test, device=device), resume=resume,
                 device=device, deadline=deadline)
    if not result.finished and deadline is not None:
        return None
    if not result.finished:
        raise SystemExit(f"stopped at step {result.step} of {result.total_steps}; continue with --resume")
    if not is_main_process():
        return None
    return export_run(student, train, test, out, cfg=cfg, history=result.history, teacher=teacher_model,
                      chen=weights if teacher_model is not None else None, command=command,
                      wall_time_s=time.perf_counter() - started, device=device)


def export_run(model: nn.Module, train: DetectionDataset, test: DetectionDataset, out_dir: Path, *,
               cfg: TrainConfig, history: list[dict[str, Any]], teacher: nn.Module | None,
               chen: dict[str, float] | None, command: str, wall_time_s: float, device: torch.device) -> ModelCard:
    """Write the trained detector and its card (metrics measured now on the test scenes) through the one
    path of every task (`zoo.runner`: run record -> card -> checkpoint)."""
    from zoo.runner import RunRecord, make_card

    metrics = evaluate(model, test, device=device)
    teacher_card = getattr(teacher, "card", None)
    record = RunRecord(
        task="detection", model=model, architecture=model.architecture, config=dict(model.config),
        dataset=train.name, split=test.split, method="chen2017" if teacher is not None else "plain",
        paper=CHEN_PAPER if teacher is not None else FASTER_RCNN_PAPER,
        teachers=[TeacherRef(teacher_card.name, dict(teacher_card.metrics), teacher_card.params)] if teacher_card else [],
        train_config=asdict(cfg), history=history, command=command, hardware=hardware_description(device),
        wall_time_s=wall_time_s, preprocessing={"input_size": [3, *train.image_size],
                                                 "scale": "pixels / 255; the model normalises"},
        labels=list(train.classes),
        description=("Synthetic scenes of real parts: Fashion-MNIST items on crops of two real photographs "
                     f"({len(train)} train / {len(test)} test scenes, {train.image_size[0]} px); not a standard benchmark."),
        extra={"data": {"train": train.meta, "test": test.meta}, **({"chen2017": chen} if chen else {})})
    return hub.save(model, out_dir, make_card(record, metrics))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo.detection.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(ARCHITECTURES))
    parser.add_argument("--out", required=True, help="run directory (checkpoints, log.csv, the exported model)")
    parser.add_argument("--teacher", help="distil from this run directory or zoo name (Chen et al. 2017)")
    parser.add_argument("--train-count", type=int, help=f"training scenes (default {SCENE_COUNTS['train']})")
    parser.add_argument("--test-count", type=int, help=f"test scenes (default {SCENE_COUNTS['test']})")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting, e.g. --set epochs=12 (see zoo.trainer.TrainConfig)")
    parser.add_argument("--chen", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a Chen et al. 2017 weight, e.g. --chen gamma=1 (defaults: {CHEN_2017})")
    args = parser.parse_args(argv)
    from zoo import runs
    from zoo.cli import parse_overrides
    from zoo.trainer import STATE_FILE

    chen = parse_overrides(args.chen)
    if set(chen) - set(CHEN_2017):
        parser.error(f"unknown --chen key(s) {sorted(set(chen) - set(CHEN_2017))}; known: {', '.join(CHEN_2017)}")
    # --resume continues the run as it was started (zoo.runs): its identity, --set and --chen settings
    identity = {"task": "detection", "arch": args.arch, "teacher": args.teacher, "train_count": args.train_count,
                "test_count": args.test_count}
    settings = {**parse_overrides(args.set), **{f"chen.{k}": v for k, v in chen.items()}}
    try:
        identity, settings = runs.resolve(args.out, identity, settings, args.resume)
        chen = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("chen.")}
        cfg = config_from_overrides(DEFAULTS, {k: v for k, v in settings.items() if not k.startswith("chen.")})
        resumed_at = runs.check_checkpoint_config(Path(args.out) / STATE_FILE, cfg) if args.resume else None
    except ValueError as e:
        parser.error(str(e))
    if chen and not identity.get("teacher"):
        parser.error("--chen sets distillation weights and needs --teacher")
    record = {"started_with": settings, "changes": []}
    if os.environ.get("RANK", "0") == "0":  # (before torchrun's process group exists: the environment says)
        record = runs.commit(args.out, identity, settings,
                             {"chen2017": {**CHEN_2017, **chen}} if identity.get("teacher") else {}, step=resumed_at)
    command = ["python", "-m", "zoo.detection.train", "--arch", identity["arch"], "--out", str(args.out)]
    command += [a for k in ("teacher", "train_count", "test_count") if identity.get(k) is not None
                for a in (f"--{k.replace('_', '-')}", str(identity[k]))]
    command += [a for k, v in record["started_with"].items() if k not in runs.PER_CALL
                for a in (("--chen", f"{k[5:]}={v}") if k.startswith("chen.") else ("--set", f"{k}={v}"))]
    card = train_detector(identity["arch"], args.out, teacher=identity.get("teacher"), cfg=cfg,
                          train_count=identity.get("train_count"), test_count=identity.get("test_count"),
                          resume=args.resume, device=args.device, chen=chen, command=shlex.join(command))
    if card is not None:
        print(f"{card.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in card.metrics.items()) + f" -> {args.out}")


if __name__ == "__main__":
    main()
