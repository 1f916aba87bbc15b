"""Train several classification distillations in one process on one data stream (`zoo.pack`).

    members = [PackMember("kd", "kd", "resnet20", teachers=(0,)),
               PackMember("fitnet", "fitnet", "resnet20", teachers=(0,)),
               PackMember("dml", "dml", "resnet20")]
    result = distill_pack(members, [teacher], train, test, TrainConfig(epochs=30), "runs/pack")

Every member sees the same batches with the same augmentation, each distinct teacher runs once per
step, and each member's students start from the weights their recipe would get alone with the same
seed. All members share the training settings (``cfg``); a member's ``settings`` may only change
its recipe (``T``, ``TERM.FIELD``, recipe fields).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from zoo.distiller import Distiller
from zoo.pack import DistillerPack
from zoo.recipes import Recipe, get_recipe, override
from zoo.trainer import TrainConfig, fit

from .data import ImageDataset
from .distill import build_students, deployable
from .evaluate import evaluate


@dataclass
class PackMember:
    """One distillation in a pack: its name, recipe, student architecture and teachers.

    ``teachers`` are indices into the pack's teacher list, in the order the recipe takes them.
    """

    name: str
    recipe: str | Recipe
    student: str
    teachers: tuple[int, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class PackResult:
    finished: bool
    step: int
    total_steps: int
    students: dict[str, list[nn.Module]]  # member -> deployable students (eval mode, CPU)
    top1: dict[str, list[float]]  # member -> test top-1 of each deployable student (after the last epoch; NaN: failed)
    history: list[dict]
    failed: dict[str, int] = field(default_factory=dict)  # member -> step at which its loss became NaN/inf


def _member_recipe(member: PackMember, cfg: TrainConfig, n_teachers: int) -> Recipe:
    base = get_recipe(member.recipe) if isinstance(member.recipe, str) else member.recipe
    recipe, member_cfg = override(base, cfg, dict(member.settings))
    if asdict(member_cfg) != asdict(cfg):
        changed = sorted(k for k, v in asdict(member_cfg).items() if asdict(cfg)[k] != v)
        raise ValueError(f"pack member {member.name!r}: training settings {changed} must be the same for the whole pack")
    if recipe.assistant:
        raise ValueError(f"pack member {member.name!r}: a teacher-assistant chain is two runs; "
                         "pack the assistant and the student as members of two packs")
    if len(member.teachers) != recipe.teachers:
        raise ValueError(f"pack member {member.name!r}: recipe {recipe.name!r} takes {recipe.teachers} teacher(s), "
                         f"got {len(member.teachers)}")
    bad = [i for i in member.teachers if not 0 <= i < n_teachers]
    if bad:
        raise ValueError(f"pack member {member.name!r}: teacher index {bad} out of range (the pack has {n_teachers})")
    return recipe


def distill_pack(members: Sequence[PackMember], teachers: Sequence[nn.Module], train: ImageDataset,
                 test: ImageDataset, cfg: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 device: str | torch.device | None = None, deadline: float | None = None,
                 eval_batch_size: int = 1000, eval_every_epoch: bool = False,
                 on_step_end: Callable[[int], None] | None = None) -> PackResult:
    """Train ``members`` together through `zoo.trainer.fit`; test top-1 after the last epoch (every epoch
    with ``eval_every_epoch``). Stops resumably at ``deadline`` (``time.monotonic()``); ``on_step_end``
    goes to `fit`."""
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"pack member names must be unique: {names}")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for t in teachers:
        t.eval().requires_grad_(False)
    example = train.batch(torch.arange(min(8, len(train))))
    distillers, cohorts = {}, {}
    for member in members:
        recipe = _member_recipe(member, cfg, len(teachers))
        cohorts[member.name] = build_students(recipe, member.student, train, cfg.seed)
        distillers[member.name] = Distiller(cohorts[member.name], [teachers[i] for i in member.teachers], recipe,
                                            example, num_examples=len(train), example_labels=train.labels)
    pack = DistillerPack(distillers)

    def scores() -> dict[str, list[float]]:
        failed = pack.failed
        return {name: [math.nan if name in failed else evaluate(s, test, batch_size=eval_batch_size, device=dev)["top1"]
                       for s in deployable(cohort)] for name, cohort in cohorts.items()}

    def flat(per_member: dict[str, list[float]]) -> dict[str, float]:
        return {f"{name}/top1" + (f"_{i}" if i else ""): v for name, vs in per_member.items() for i, v in enumerate(vs)}

    def on_epoch_end(epoch: int, history: list[dict]) -> None:
        if epoch == cfg.epochs and not eval_every_epoch:
            history[-1].update(flat(scores()))  # saved with the checkpoint that follows

    result = fit(pack, train, cfg, Path(out_dir), evaluate=(lambda: flat(scores())) if eval_every_epoch else dict,
                 on_epoch_end=on_epoch_end, on_step_end=on_step_end, resume=resume, device=dev, deadline=deadline)
    pack.close()
    top1: dict[str, list[float]] = {}
    if result.finished:
        last = result.history[-1] if result.history else {}
        for name, cohort in cohorts.items():
            top1[name] = [last[f"{name}/top1" + (f"_{i}" if i else "")] for i in range(len(deployable(cohort)))]
    students = {name: [s.to("cpu", memory_format=torch.contiguous_format).eval() for s in deployable(cohort)]
                for name, cohort in cohorts.items()}
    return PackResult(result.finished, result.step, result.total_steps, students, top1, result.history, pack.failed)
