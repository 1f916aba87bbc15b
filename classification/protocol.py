"""The twin protocol (`zoo.protocol`) for image classifiers: one pack per seed.

Every arm of a seed (the plain twin and each recipe's student) is a member of one `DistillerPack`:
they see the same batches with the same augmentation for the same number of optimizer steps, each
student starts from the weights its seed gives, and the teacher runs once per step for all of them.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from zoo.metrics import hardware_description
from zoo.protocol import TWIN, ProtocolSpec, SeedResult, check_term_settings, is_term_setting, settings_for
from zoo.recipes import RECIPE_SETTINGS, get_recipe, override, recipe_dict
from zoo.registry import ModelCard, TeacherRef
from zoo.trainer import STATE_FILE, TrainConfig

from .data import ImageDataset, load_dataset
from .models import load_weights, save_weights
from .pack import PackMember, distill_pack


def _config(spec: ProtocolSpec, seed: int) -> TrainConfig:
    """The pack's training settings (a term's setting goes to its arms only, `_members`)."""
    plain = get_recipe("plain")
    _, cfg = override(plain, TrainConfig(), {**settings_for(spec.settings, plain), "seed": seed, "progress": False})
    return cfg


def _data(spec: ProtocolSpec) -> tuple[ImageDataset, ImageDataset]:
    train = load_dataset(spec.dataset, "train")
    if spec.train_subset:
        train = train.subset(spec.train_subset)
    return train, load_dataset(spec.dataset, "test")


def _members(spec: ProtocolSpec) -> list[PackMember]:
    members = [PackMember(TWIN, "plain", spec.student)]
    for name in spec.recipes:
        recipe = get_recipe(name)
        if recipe.task != "classification":
            raise ValueError(f"recipe {name!r} is for {recipe.task} models, not image classifiers")
        if recipe.teachers != 1 or recipe.assistant:
            why = ("learns without a teacher (online distillation)" if recipe.teachers == 0 else
                   f"takes {recipe.teachers} teachers" if recipe.teachers > 1 else "distils through an assistant")
            raise ValueError(f"recipe {name!r} {why}; the protocol compares students distilled from one teacher "
                             "with their twin")
        term_settings = {k: v for k, v in settings_for(spec.settings, recipe).items() if is_term_setting(k)}
        members.append(PackMember(name, name, spec.student, (0,), term_settings))
    return members


class ClassificationProtocol:
    """`zoo.protocol.ProtocolTask` for the classification adapter: top-1 on the dataset's test split."""

    metric = "top1"
    higher_is_better = True
    default_dataset = "fashion-mnist"
    arms_note = "all arms of a seed trained as one pack (one teacher forward per step)"

    def teacher_metric(self, spec: ProtocolSpec) -> float:
        import zoo

        card = zoo.card(spec.teacher)
        if card.dataset != spec.dataset or card.split != "test":
            raise ValueError(f"teacher {card.name!r} was measured on {card.dataset}/{card.split}, "
                             f"not on the {spec.dataset} test split the arms are evaluated on")
        return card.metrics[self.metric]

    def validate(self, spec: ProtocolSpec) -> None:
        """Every recipe, the teacher and the settings are checked before the run records anything."""
        import zoo
        from zoo.classification.models import ARCHITECTURES

        _members(spec)
        if spec.student not in ARCHITECTURES:
            raise ValueError(f"unknown student architecture {spec.student!r}; known: {', '.join(ARCHITECTURES)}")
        card = zoo.card(spec.teacher)
        if card.task != "classification":
            raise ValueError(f"teacher {card.name!r} is a {card.task} model, not an image classifier")
        if card.metrics_source == "reported":
            raise ValueError(f"teacher {card.name!r} is another project's published student (its numbers reported, "
                             "not measured here); the protocol distils from a teacher kdzoo loads and measured")
        self.teacher_metric(spec)  # measured on the data set's test split the arms are evaluated on
        recipe_fields = sorted(k for k in spec.settings if k in RECIPE_SETTINGS)
        if recipe_fields:  # the pack trains each arm as its recipe defines it: they would be recorded, not used
            raise ValueError(f"{', '.join(recipe_fields)}: a recipe's own fields, not a budget setting; the "
                             "classification protocol trains each arm as its recipe defines it (register a recipe "
                             "with other fields to compare it)")
        recipes = {name: get_recipe(name) for name in spec.recipes}
        for recipe in recipes.values():  # unknown keys and bad values
            override(recipe, TrainConfig(), settings_for(spec.settings, recipe))
        check_term_settings(spec.settings, recipes)
        cfg = _config(spec, spec.seeds[0])
        n = len(_data(spec)[0])  # the data loads, and a subset larger than the split is refused
        if n < cfg.batch_size:
            raise ValueError(f"the first {n} training images are fewer than one batch of {cfg.batch_size}")

    def run_seed(self, spec: ProtocolSpec, seed: int, out_dir: Path, deadline: float | None,
                 device: str | None) -> SeedResult | None:
        import zoo

        teacher = zoo.load(spec.teacher)
        if teacher.card.dataset != spec.dataset:
            raise ValueError(f"teacher {teacher.card.name!r} was trained on {teacher.card.dataset!r}, not {spec.dataset!r}")
        train, test = _data(spec)
        cfg = _config(spec, seed)
        wall_path = out_dir / "wall_seconds.json"  # training time summed over the calls that ran this seed
        wall = json.loads(wall_path.read_text())["seconds"] if wall_path.exists() else 0.0
        from zoo.io import atomic_write_text

        t0 = time.perf_counter()
        try:
            res = distill_pack(_members(spec), [teacher], train, test, cfg, out_dir,
                               resume=(out_dir / STATE_FILE).exists(), device=device, deadline=deadline,
                               eval_every_epoch=True)
        finally:  # an interrupted call (Ctrl-C) counts its time too
            wall += time.perf_counter() - t0
            atomic_write_text(wall_path, json.dumps({"seconds": round(wall, 1)}) + "\n")
        if not res.finished:
            print(f"seed {seed}: stopped at step {res.step}/{res.total_steps} (time budget); run again to resume",
                  flush=True)
            return None
        for arm, students in res.students.items():
            save_weights(students[0], out_dir / "models" / f"{arm}.safetensors")
        history = {arm: [{"epoch": h["epoch"], "step": h["step"], self.metric: h[f"{arm}/top1"]}
                         for h in res.history if f"{arm}/top1" in h] for arm in res.students}
        metrics = {arm: float("nan") if arm in res.failed else values[0] for arm, values in res.top1.items()}
        print(f"seed {seed}: " + ", ".join(f"{a}={v * 100:.2f}" for a, v in metrics.items()), flush=True)
        return SeedResult(seed, metrics, res.total_steps, round(wall, 1), hardware_description(device), history)

    def publish(self, spec: ProtocolSpec, seed: int, arm: str, out_dir: Path, name: str, *,
                baseline: dict[str, Any] | None, teacher: str | None, command: str, notes: str,
                description: str, dest: Path | None) -> ModelCard:
        import zoo
        from zoo.publish import publish

        from .publish import export_run

        model = load_weights(out_dir / "models" / f"{arm}.safetensors")
        train, test = _data(spec)
        result = json.loads((out_dir / "result.json").read_text())
        teachers = []
        if teacher is not None:
            teachers = [asdict(TeacherRef.of_card(zoo.card(teacher)))]
        info = {"dataset": train, "test": test, "device": "cpu", "hardware": result["hardware"],
                "wall_time_s": result["wall_seconds"], "history": result["history"].get(arm, []),
                "train_config": asdict(_config(spec, seed)),
                "recipe": None if arm == TWIN else recipe_dict(get_recipe(arm)), "teachers": teachers}
        with tempfile.TemporaryDirectory() as tmp:
            export_run(model, info, Path(tmp) / name, name=name, command=command)
            return publish(Path(tmp) / name, name, dest_root=dest, command=command, notes=notes,
                           description=description, baseline=baseline)


PROTOCOL = ClassificationProtocol()
