"""``zoo train classification ...`` and ``zoo distill classification ...`` (the task's command line)."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from zoo.cli import add_time_budget, deadline_in, parse_overrides, require_run_identity, run_folder, torch_device
from zoo.runner import flag_settings


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None,
                   help="fashion-mnist (default) | cifar10 | cifar100 | an image folder (ImageFolder layout); "
                        "with --resume, the run's own data set is used")
    p.add_argument("--data-root", default=None, help="dataset directory (default: standard locations)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR (needs network)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (resumable)")
    p.add_argument("--train-subset", type=int, default=None, help="train on the first N training images")
    p.add_argument("--device", default=None, type=torch_device, help="torch device (default: cuda when there is one, else cpu)")
    p.add_argument("--out", required=True, type=run_folder, help="output directory (checkpoint, card, logs)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    add_time_budget(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, a recipe field, T, or TERM.FIELD (e.g. kd.weight=0.9)")


def parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"zoo {command} classification",
                                description="train a classifier from scratch with the plain (no-KD) recipe"
                                if command == "train" else "distil a classifier from zoo teacher(s) with a recipe")
    _add_run_args(p)
    if command == "train":
        p.add_argument("--arch", help="architecture, e.g. resnet56 or torchvision:mobilenet_v3_small (with --resume: the run's)")
    else:
        p.add_argument("--recipe", help="recipe name (`zoo recipes` lists them; with --resume: the run's)")
        p.add_argument("--teacher", action="append", default=[],
                       help="teacher: zoo name or checkpoint folder (repeat for several; with --resume: the run's)")
        p.add_argument("--student", help="student architecture, e.g. resnet20 (with --resume: the run's)")
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """--set pairs plus the dedicated flags (--epochs, --seed, ...); a flag and a --set that disagree are a
    ValueError (`zoo.runner.flag_settings`)."""
    return flag_settings(args, parse_overrides(args.set), ("epochs", "seed", "max_steps", "batch_size", "lr"))


def _device(args: argparse.Namespace) -> str | None:
    """--device, or this process's device under torchrun."""
    from zoo.distributed import init_from_env

    _, world, device = init_from_env()
    if world > 1 and args.device is not None:
        raise ValueError("under torchrun each process picks its own device; drop --device")
    return str(device) if device is not None else args.device


def main(command: str, argv: Sequence[str]) -> int:
    """Run ``zoo train|distill classification ARGV``; the exit code."""
    from zoo.distributed import is_main_process

    from .distill import distill_classifier
    from .publish import export_run

    p = parser(command)
    args = p.parse_args(list(argv))
    require_run_identity(p, args, {"arch": "student"} if command == "train" else {"recipe": "recipe", "student": "student"})
    if command == "train":
        recipe, teachers, student = "plain", None, args.arch
    else:
        recipe, teachers, student = args.recipe, args.teacher or None, args.student
    model, info = distill_classifier(recipe, teachers, student, args.dataset, args.out, _settings(args),
                                     data_root=args.data_root, download=args.download,
                                     train_subset=args.train_subset, resume=args.resume, device=_device(args),
                                     deadline=deadline_in(args.time_budget))
    if not is_main_process():
        return 0
    if not info["finished"]:
        print(f"stopped at step {info['step']}/{info['total_steps']} (max_steps or the time budget); continue with "
              "--resume (and a larger --max-steps, or none to run to the end, when max_steps stopped it)")
        return 0
    print(f"saved {export_run(model, info, args.out, command=info['command'])}")
    return 0
