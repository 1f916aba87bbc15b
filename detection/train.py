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
from zoo.cli import add_time_budget, deadline_in, parse_overrides, require_run_identity, run_folder, torch_device
from zoo.distributed import init_from_env, is_main_process
from zoo.metrics import hardware_description
from zoo.registry import ModelCard, TeacherRef
from zoo.trainer import TrainConfig, fit, resolve_amp

from .data import SCENE_COUNTS, DetectionDataset, load_scenes
from .distill import DetectionDistiller
from .evaluate import evaluate
from .models import ARCHITECTURES, PRETRAINED_BACKBONES, build_detector, check_architecture
from .recipes import CHEN_2017, CHEN_PAPER, chen_recipe, recipe_dict_of

FASTER_RCNN_PAPER = "Ren et al. 2015, Faster R-CNN (torchvision's implementation) on a CIFAR ResNet backbone (He et al. 2016)"
DEFAULTS = TrainConfig(epochs=10, batch_size=32, lr=0.02, weight_decay=1e-4, nesterov=False, warmup_epochs=0.5,
                       amp="off", channels_last=False, log_every=10, checkpoint_every=50)


def load_teacher(ref: str | nn.Module) -> nn.Module:
    """A teacher from a run or checkpoint directory, or from the zoo by name. Raises ``ValueError`` for a
    model of another task (a classifier has no RPN or RoI head to distil)."""
    if isinstance(ref, nn.Module):
        model = ref
    elif Path(ref).is_dir():
        model = hub.load_dir(ref)
    else:
        import zoo

        model = zoo.load(ref)
    check_teacher_card(getattr(model, "card", None))
    return model


def check_teacher_card(card: Any) -> None:
    """Raises ``ValueError`` for the card of a model of another task (None: a module without a card passes)."""
    if card is not None and card.task != "detection":
        raise ValueError(f"teacher {card.name!r} is a {card.task} model, not a detection one")


def train_detector(arch: str, out_dir: str | Path, *, teacher: str | nn.Module | None = None,
                   cfg: TrainConfig = DEFAULTS, train_count: int | None = None, test_count: int | None = None,
                   resume: bool = False, device: str | torch.device = "cpu", command: str = "",
                   chen: dict[str, float] | None = None, recipe: Any = None,
                   deadline: float | None = None, raise_on_stop: bool = True) -> ModelCard | None:
    """Train ``arch`` on the scenes (distilled from ``teacher`` when given) and export it to ``out_dir``.

    Under ``torchrun`` every process trains its share of each batch (DDP); rank 0 exports and returns the
    card, the others return None. With a ``deadline`` (``time.monotonic()``) a run stopped by it returns
    None (resume it with ``resume=True``); without one, a run stopped early (``max_steps``) raises SystemExit
    unless ``raise_on_stop`` is False (then it returns None too)."""
    check_architecture(arch)
    out = Path(out_dir)
    train = load_scenes("train", train_count or SCENE_COUNTS["train"])
    test = load_scenes("test", test_count or SCENE_COUNTS["test"])
    torch.manual_seed(cfg.seed)
    student = build_detector(arch, num_classes=train.num_classes, image_size=train.image_size[0],
                             pretrained_backbone=arch in PRETRAINED_BACKBONES)
    teacher_model = load_teacher(teacher) if teacher is not None else None
    weights = {**CHEN_2017, **(chen or {})}
    if teacher_model is not None and recipe is None:
        recipe = chen_recipe(**weights)
    if teacher_model is None:
        recipe = None
    distiller = DetectionDistiller
    if getattr(student, "mm", None) is not None:  # an mmdet detector (the OpenMMLab bridge)
        from .mm import MMDetectionDistiller as distiller
    module = distiller(student, teacher_model, recipe, example_batch=train.batch(torch.arange(4)))
    _, world, own_device = init_from_env()  # under torchrun: join the group, one device per process
    if world > 1 and own_device is not None:
        device = own_device
    device = torch.device(device)
    result = fit(module, train, cfg, out, evaluate=lambda: evaluate(student, test, device=device), resume=resume,
                 device=device, deadline=deadline)
    if not result.finished and (deadline is not None or not raise_on_stop):
        return None
    if not result.finished:
        raise SystemExit(f"stopped at step {result.step} of {result.total_steps}; continue with --resume")
    if not is_main_process():
        return None
    return export_run(student, train, test, out, cfg=cfg, history=result.history, teacher=teacher_model,
                      chen=weights if teacher_model is not None else None, recipe=recipe, command=command,
                      wall_time_s=result.seconds, device=device)


def export_run(model: nn.Module, train: DetectionDataset, test: DetectionDataset, out_dir: Path, *,
               cfg: TrainConfig, history: list[dict[str, Any]], teacher: nn.Module | None,
               chen: dict[str, float] | None, command: str, wall_time_s: float, device: torch.device,
               recipe: Any = None) -> ModelCard:
    """Write the trained detector and its card (metrics measured now on the test scenes) through the one
    path of every task (`zoo.runner`: run record -> card -> checkpoint)."""
    from zoo.runner import RunRecord, make_card

    metrics = evaluate(model, test, device=device)
    teacher_card = getattr(teacher, "card", None)
    record = RunRecord(
        task="detection", model=model, architecture=model.architecture, config=dict(model.config),
        dataset=train.name, split=test.split, method="chen2017" if teacher is not None else "plain",
        paper=CHEN_PAPER if teacher is not None else FASTER_RCNN_PAPER,
        teachers=[TeacherRef.of_card(teacher_card)] if teacher_card else [],
        train_config=asdict(cfg), history=history, command=command, hardware=hardware_description(device),
        recipe=recipe_dict_of(recipe),
        wall_time_s=wall_time_s, preprocessing={"input_size": [3, *train.image_size],
                                                 "scale": "pixels / 255; the model normalises"},
        labels=list(train.classes),
        description=("Synthetic scenes of real parts: Fashion-MNIST items on crops of two real photographs "
                     f"({len(train)} train / {len(test)} test scenes, {train.image_size[0]} px); not a standard benchmark."),
        extra={"data": {"train": train.meta, "test": test.meta}, **({"chen2017": chen} if chen else {})})
    return hub.save(model, out_dir, make_card(record, metrics))


def run(arch: str, out: str | os.PathLike, *, teacher: str | nn.Module | None = None,
        settings: dict[str, Any] | None = None, chen: dict[str, float] | None = None, train_count: int | None = None,
        test_count: int | None = None, resume: bool = False, device: str | torch.device | None = None,
        deadline: float | None = None, raise_on_stop: bool = True) -> ModelCard | None:
    """One detection run as `zoo distill detection` and `zoo.distill` start it: the run's identity and settings
    are recorded (`zoo.runs`), a resume continues with the ones it was started with (only some may change),
    and ``chen`` (the paper's symbols, `CHEN_2017`) and ``--set``-style ``settings`` (TrainConfig fields and
    ``TERM.weight`` / ``TERM.PARAM`` of the ``chen2017`` recipe, e.g. ``rcn_soft.weight``) shape the loss.

    Returns the card once finished; None when stopped at ``deadline`` (resume with ``resume=True``) or on a
    process other than rank 0.

    Raises:
        ValueError: an unknown ``chen`` key or setting, distillation settings without a teacher, or a
            resume whose identity or settings differ from the recorded run.
    """
    from zoo import runs
    from zoo.recipes import override
    from zoo.trainer import STATE_FILE

    check_architecture(arch)
    runs.check_train_subset(train_count)  # 0 is not "all scenes"
    from .mm import check_two_stage, is_mm_architecture, load_model_config

    if is_mm_architecture(arch):  # the config read and checked before the run folder is written
        check_two_stage(load_model_config(arch), arch)
    chen = dict(chen or {})
    if set(chen) - set(CHEN_2017):
        raise ValueError(f"unknown --chen key(s) {sorted(set(chen) - set(CHEN_2017))}; known: {', '.join(CHEN_2017)}")
    teacher_id = teacher if teacher is None or isinstance(teacher, str) else f"module:{type(teacher).__name__}"
    identity = {"task": "detection", "arch": arch, "teacher": teacher_id, "train_count": train_count,
                "test_count": test_count}
    settings = {**(settings or {}), **{f"chen.{k}": v for k, v in chen.items()}}
    identity, settings = runs.resolve(out, identity, settings, resume)
    chen = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("chen.")}
    rest = {k: v for k, v in settings.items() if not k.startswith("chen.")}
    distilling = teacher is not None or identity.get("teacher") is not None
    if not distilling and (chen or any("." in k for k in rest)):
        raise ValueError("--chen and TERM.FIELD settings shape the distillation loss and need a teacher")
    recipe, cfg = override(chen_recipe(**{**CHEN_2017, **chen}), DEFAULTS, rest)
    resumed_at = runs.check_checkpoint_config(Path(out) / STATE_FILE, cfg) if resume else None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_amp(cfg.amp, torch.device(device))
    if is_mm_architecture(identity["arch"]) and torch.device(device).type == "cpu" and dtype is not None:
        raise ValueError(f"amp={cfg.amp} would run the mmdet detector in {str(dtype).replace('torch.', '')} on the CPU, "
                         "where mmcv's NMS takes float32 only; use --set amp=off (the default)")
    teacher_ref = teacher if teacher is not None else identity.get("teacher")
    if isinstance(teacher_ref, str):  # its card, before the run folder is written
        import zoo

        check_teacher_card(zoo.card(teacher_ref))
    record = {"started_with": settings, "changes": []}
    if os.environ.get("RANK", "0") == "0":  # (before torchrun's process group exists: the environment says)
        record = runs.commit(out, identity, settings, {"chen2017": recipe_dict_of(recipe)} if distilling else {},
                             step=resumed_at)
    command = ["python", "-m", "zoo.detection.train", "--arch", identity["arch"], "--out", str(out)]
    command += [a for k in ("teacher", "train_count", "test_count") if isinstance(identity.get(k), (str, int))
                and not str(identity.get(k)).startswith("module:") for a in (f"--{k.replace('_', '-')}", str(identity[k]))]
    command += [a for k, v in record["started_with"].items() if k not in runs.PER_CALL
                for a in (("--chen", f"{k[5:]}={v}") if k.startswith("chen.") else ("--set", f"{k}={v}"))]
    return train_detector(identity["arch"], out, teacher=teacher if teacher is not None else identity.get("teacher"),
                          cfg=cfg, train_count=identity.get("train_count"), test_count=identity.get("test_count"),
                          resume=resume, device=device, chen={**CHEN_2017, **chen}, recipe=recipe if distilling else None,
                          command=shlex.join(command), deadline=deadline, raise_on_stop=raise_on_stop)


def main(argv: list[str] | None = None, distil: bool = False) -> None:
    """``python -m zoo.detection.train ARGV``; ``distil``: as ``zoo distill detection``, which needs a teacher
    (given, or with ``--resume`` the run's)."""
    parser = argparse.ArgumentParser(prog="zoo distill detection" if distil else "python -m zoo.detection.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", help=f"{', '.join(sorted(ARCHITECTURES))}, or mmdet:<config> (an mmdet two-stage "
                        "detector through the OpenMMLab bridge, e.g. mmdet:kdzoo::frcnn_r18_c16_fpn.py; with --resume: "
                        "the run's)")
    parser.add_argument("--out", required=True, type=run_folder, help="run directory (checkpoints, log.csv, the exported model)")
    parser.add_argument("--teacher", help="distil from this run directory or zoo name (Chen et al. 2017)")
    parser.add_argument("--train-count", type=int, help=f"training scenes (default {SCENE_COUNTS['train']})")
    parser.add_argument("--test-count", type=int, help=f"test scenes (default {SCENE_COUNTS['test']})")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    add_time_budget(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", type=torch_device)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting (--set epochs=12, see zoo.trainer.TrainConfig) or a part of the "
                             "chen2017 recipe (--set rcn_soft.weight=0.8, see zoo.detection.recipes)")
    parser.add_argument("--chen", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a Chen et al. 2017 symbol, e.g. --chen gamma=1 (defaults: {CHEN_2017})")
    args = parser.parse_args(argv)
    require_run_identity(parser, args, {"arch": "arch", **({"teacher": "teacher"} if distil else {})})

    deadline = deadline_in(args.time_budget)
    try:
        card = run(args.arch, args.out, teacher=args.teacher, settings=parse_overrides(args.set),
                   chen=parse_overrides(args.chen), train_count=args.train_count, test_count=args.test_count,
                   resume=args.resume, device=args.device, deadline=deadline)
    except (ValueError, FileNotFoundError, ImportError) as e:  # a bad setting, config or install: one line
        parser.error(str(e))
    if card is not None:
        print(f"{card.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in card.metrics.items()) + f" -> {args.out}")
    elif deadline is not None and time.monotonic() >= deadline and os.environ.get("RANK", "0") == "0":
        print(f"stopped at the time budget; continue with the same command and --resume ({args.out})")


if __name__ == "__main__":
    main()
