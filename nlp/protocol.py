"""The twin protocol for text (`zoo.protocol`): TinyBERT task distillation against its plain twin, over seeds.

    python benchmarks/twins.py --task nlp --teacher runs/nlp --student tinybert-4l-312 --recipes tinybert \\
        --seeds 0 1 --train-subset 40000 --set task_epochs=1 --set pred_epochs=3 --set task_lr=1e-4 \\
        --set pred_lr=3e-4 --set pred_temperature=0.5 --out runs/nlp-twins --results benchmarks/results

The teacher is a `zoo.nlp.pipeline` run folder that has finished its ``teacher`` stage (the fine-tuned
teacher) and its ``general`` stage (TinyBERT general distillation, the student's starting point). Each seed
trains, in ``seed-<n>/``, with the pipeline's own stages:

- ``twin``: the student shape from random weights on the labels alone (stage ``plain``): ``task_epochs +
  pred_epochs`` epochs at ``task_lr``;
- ``tinybert``: TinyBERT task distillation (stage ``task``, Jiao et al. 2020, eqs. 7-10) from the run's
  general-distilled student: ``task_epochs`` epochs of intermediate-layer distillation, then ``pred_epochs``
  of prediction-layer distillation.

Both arms read the same labelled training examples and take the same number of optimizer steps (the
protocol checks it). TinyBERT's data augmentation is not offered here: it multiplies the distilled arm's
examples and so its steps, which the twin's budget would have to match. General distillation reads no
labels; it is shared by the seeds (trained once, with the run's seed) and counted as part of the method.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from zoo.protocol import TWIN, ProtocolSpec, SeedResult

RECIPE = "tinybert"  # the one distilled arm: the pipeline's task stage
# the budget a protocol run may set (pipeline options), with its type; every arm shares them
SETTINGS: dict[str, type] = {"task_epochs": int, "pred_epochs": int, "task_lr": float, "pred_lr": float,
                             "pred_temperature": float, "batch_size": int, "max_length": int, "amp": str}
SHARED_FILES = ("teacher.safetensors", "teacher.json", "general.safetensors", "general.json")
STUDENT_SHAPE = ("student_layers", "student_hidden", "student_ffn", "student_heads")


class NlpProtocol:
    """The `zoo.protocol.ProtocolTask` of the nlp task (see the module docstring)."""

    metric = "accuracy"
    higher_is_better = True
    default_dataset = "wordnet-topic"
    arms_note = ("the twin is the pipeline's plain stage, the distilled arm its task stage from the teacher run's "
                 "general-distilled student; both on the same labelled examples and number of steps")

    # ------------------------------------------------------------------ the teacher run
    @staticmethod
    def _path(spec: ProtocolSpec, name: str) -> Path:
        """``name`` in the teacher run; FileNotFoundError, with the command that makes it, when it is missing."""
        path = Path(spec.teacher) / name
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: the nlp protocol's teacher is a pipeline run folder that finished the teacher "
                f"and general stages (python -m zoo.nlp.pipeline teacher general --out {spec.teacher} ...)")
        return path

    def _record(self, spec: ProtocolSpec, name: str) -> dict[str, Any]:
        return json.loads(self._path(spec, name).read_text())

    def student_name(self, spec: ProtocolSpec) -> str:
        """``tinybert-<layers>l-<hidden>``: the student shape the teacher run's general stage trained."""
        args = self._record(spec, "general.args.json")
        return f"tinybert-{args['student_layers']}l-{args['student_hidden']}"

    def teacher_name(self, spec: ProtocolSpec) -> str:
        """What the cards call the teacher: the pretrained encoder and the task it was fine-tuned on."""
        from .publish import short_name

        teacher = self._record(spec, "teacher.json")
        return f"{short_name(teacher['pretrained'])} fine-tuned on {short_name(teacher.get('task', spec.dataset))}"

    def _task(self, spec: ProtocolSpec) -> str:
        """The data set the teacher run was made on (a task name, or the folder as the run recorded it)."""
        return self._record(spec, "teacher.args.json")["task"]

    def teacher_metric(self, spec: ProtocolSpec) -> float:
        """The fine-tuned teacher's test accuracy (a fraction), as its pipeline stage measured it."""
        return float(self._record(spec, "teacher.json")["test_accuracy"])

    def validate(self, spec: ProtocolSpec) -> None:
        """Raise ValueError (FileNotFoundError for a missing teacher run) before anything is recorded."""
        for name in SHARED_FILES:
            self._path(spec, name)
        unknown = [r for r in spec.recipes if r != RECIPE]
        if unknown:
            raise ValueError(f"nlp recipes under the protocol: {RECIPE} (TinyBERT task distillation); got {unknown}")
        bad = sorted(set(spec.settings) - set(SETTINGS))
        if bad:
            why = " (augmentation changes the distilled arm's step count)" if "augment" in bad else ""
            raise ValueError(f"unknown nlp protocol setting(s) {bad}{why}; known: {', '.join(SETTINGS)}")
        for key, value in spec.settings.items():
            kind = SETTINGS[key]
            if kind is str:
                from zoo.trainer import AMP_MODES

                if value not in AMP_MODES:
                    raise ValueError(f"{key} must be one of {', '.join(AMP_MODES)}, got {value!r}")
                continue
            number = (int,) if kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
                raise ValueError(f"{key} must be a{'n integer' if kind is int else ' finite number'}, got {value!r}")
            if value <= 0:  # every stage trains at least one epoch (zoo.trainer.TrainConfig)
                raise ValueError(f"{key} must be {'>= 1' if kind is int else '> 0'}, got {value!r}")
        expected = self.student_name(spec)
        if spec.student != expected:
            raise ValueError(f"the teacher run {spec.teacher} distilled a {expected} student in its general stage; "
                             f"give --student {expected}")
        task = self._task(spec)
        same = spec.dataset == task or (Path(spec.dataset).exists() and Path(task).exists()
                                        and Path(spec.dataset).resolve() == Path(task).resolve())
        if not same:
            raise ValueError(f"the teacher run {spec.teacher} was fine-tuned on {task!r}, not {spec.dataset!r}; "
                             f"give --dataset {task}")
        from .pipeline import build_parser

        batch = spec.settings.get("batch_size", build_parser().get_default("batch_size"))
        if spec.train_subset is not None and spec.train_subset < batch:
            raise ValueError(f"train_subset must be at least one batch ({batch} examples), got {spec.train_subset}")
        if spec.train_subset is not None:
            from .data import load_task

            load_task(task, "train").subset(spec.train_subset)  # raises for more examples than the split has

    # ------------------------------------------------------------------ one seed
    def pipeline_argv(self, spec: ProtocolSpec, seed: int, out_dir: Path) -> list[str]:
        """The pipeline command line of one seed's arms (``task`` and ``plain`` stages in ``out_dir``)."""
        general = self._record(spec, "general.args.json")
        argv = ["task", "plain", "--out", str(out_dir), "--task", self._task(spec), "--teacher", general["teacher"],
                "--seed", str(seed), "--quiet"]
        for key in STUDENT_SHAPE:
            argv += [f"--{key.replace('_', '-')}", str(general[key])]
        if spec.train_subset:
            argv += ["--train-subset", str(spec.train_subset)]
        for key, value in sorted(spec.settings.items()):
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv

    def run_seed(self, spec: ProtocolSpec, seed: int, out_dir: Path, deadline: float | None,
                 device: str | None) -> SeedResult | None:
        """Train (or resume) both arms of ``seed`` in ``out_dir``; None when stopped at ``deadline``.

        Raises ValueError for a ``device`` (the pipeline trains on CUDA when there is one, else the CPU) or a
        seed folder whose stages recorded no step counts, and RuntimeError when the arms took different
        numbers of optimizer steps."""
        from zoo.metrics import hardware_description

        from .pipeline import main

        if device is not None:
            raise ValueError("the nlp pipeline picks its device itself (CUDA when there is one); leave --device out")
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in SHARED_FILES:  # the seed's run folder reads the teacher run's stages (links, not copies)
            link, target = out_dir / name, (Path(spec.teacher) / name).resolve()
            if link.is_symlink() and link.resolve() != target:  # the teacher run was moved: follow it
                link.unlink()
            if not link.is_symlink():
                os.symlink(target, link)
        main(self.pipeline_argv(spec, seed, out_dir), deadline=deadline)
        if not ((out_dir / "task.json").exists() and (out_dir / "plain.json").exists()):
            print(f"seed {seed}: stopped (time budget); run again to resume", flush=True)
            return None
        task = json.loads((out_dir / "task.json").read_text())
        plain = json.loads((out_dir / "plain.json").read_text())
        try:
            steps = {RECIPE: sum(s["steps"] for s in task["stages"].values()), TWIN: plain["steps"]}
        except KeyError:
            raise ValueError(f"{out_dir}: its stages were trained by a kdzoo that did not record their step "
                             "counts; train the seed again in a new run folder") from None
        if len(set(steps.values())) > 1:
            raise RuntimeError(f"seed {seed}: the arms took different numbers of steps {steps}")
        metrics = {TWIN: plain["test_accuracy"], RECIPE: task["test_accuracy"]}
        history = {TWIN: plain["history"], RECIPE: [{"stage": name, **h} for name, s in task["stages"].items()
                                                     for h in s["history"]]}
        wall = float(plain.get("wall_seconds", 0.0)) + float(task.get("wall_seconds", 0.0))
        print(f"seed {seed}: " + ", ".join(f"{a}={v:.4f}" for a, v in metrics.items()), flush=True)
        return SeedResult(seed, metrics, steps[TWIN], round(wall, 1), hardware_description(), history)

    def publish(self, spec: ProtocolSpec, seed: int, arm: str, out_dir: Path, name: str, *,
                baseline: dict[str, Any] | None, teacher: str | None, command: str, notes: str,
                description: str, dest: Path | None) -> Any:
        """Publish ``arm`` of ``seed`` (`zoo.nlp.publish.publish`: the task stage's student, or the plain
        stage's for the twin) as zoo entry ``name``; returns its card. The card's benchmark rows include the
        TF-IDF and majority-class baselines on the same labelled examples: the seed folder's ``baseline``
        stage (a minute or two on the CPU) runs first when it has not."""
        from .pipeline import main
        from .publish import publish

        if not (out_dir / "baseline.json").exists():
            argv = ["baseline", "--out", str(out_dir), "--task", self._task(spec), "--quiet"]
            main(argv + (["--train-subset", str(spec.train_subset)] if spec.train_subset else []))

        return publish(out_dir, name, dest_root=dest, notes=notes, stage="plain" if arm == TWIN else "task",
                       baseline=baseline, description=description, command=command)

