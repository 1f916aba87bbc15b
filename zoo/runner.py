"""One path for every task from a recipe to a published checkpoint.

    run = zoo.runner.distill(adapter, teacher, "resnet8", "kd", data="fashion-mnist", out="runs/kd")
    run.card                      # measured on the task's test split, saved with the student in runs/kd

`distill` records the run (`zoo.runs`: resume continues it as started), builds the students through the
task's adapter, trains the `zoo.distiller.Distiller` through `zoo.trainer.fit`, and, once finished, hands a
typed `RunRecord` to `export_run`: the adapter measures the card's metrics, `make_card` writes the
card, `zoo.hub.save` the checkpoint. The run's command (no absolute paths unless the user gave them)
is the ``zoo distill TASK ...`` / ``zoo train TASK ...`` line of `cli` that reproduces it.

What a task supplies for this (`zoo.tasks.TaskAdapter`): ``datasets(data, train_subset)`` -> (train,
test) batch sources with ``name`` and ``split``; ``build_student(architecture, train)``;
``evaluate_model(model, test, device)`` -> metrics; ``card_fields(train)`` -> preprocessing and labels;
optionally ``task_loss(logits, batch)`` (default: cross-entropy). A task whose runs need more (cohorts of
multi-branch students, detection's proposal sampling) keeps its own `distill` and still ends in
`export_run`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import hub, runs
from .metrics import count_params, hardware_description
from .registry import ModelCard, TeacherRef, TrainingRecord


@dataclass
class RunRecord:
    """Everything a finished run tells its card (what `make_card` turns into a `ModelCard`)."""

    task: str
    model: nn.Module
    architecture: str
    config: dict[str, Any]
    dataset: str
    split: str
    method: str = "plain"
    paper: str = ""
    teachers: list[TeacherRef] = field(default_factory=list)
    train_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""
    hardware: str = ""
    wall_time_s: float = 0.0
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    notes: str = ""  # e.g. the settings changed on resume (`zoo.runs.describe_changes`)

    @property
    def default_name(self) -> str:
        return default_name(self.architecture, self.method, self.dataset)


def architecture_slug(architecture: str) -> str:
    """A zoo-name-safe form of an architecture: ``resnet8`` stays, a bridged config
    ``mmseg:kdzoo::fcn_r18_c16.py`` becomes ``mmseg-fcn-r18-c16`` (family and config file stem, ``_`` as
    ``-``); otherwise each ``:``, ``::`` or ``/`` becomes ``-`` (``timm:resnet18`` -> ``timm-resnet18``)."""
    family, sep, rest = architecture.partition(":")
    if sep and rest.endswith(".py"):
        stem = Path(rest.split("::")[-1]).name[:-3]
        return f"{family}-{stem.replace('_', '-')}"
    return architecture.replace("::", "-").replace(":", "-").replace("/", "-")


def default_name(architecture: str, method: str, dataset: str) -> str:
    """A run's default zoo name: ``resnet8-kd.fashion-mnist``, ``resnet8.fashion-mnist`` for a plain
    model; an image folder's base name stands for its path; the architecture via `architecture_slug`."""
    data = Path(dataset).name if os.path.isdir(dataset) else dataset
    arch = architecture_slug(architecture)
    return f"{arch}-{method}.{data}" if method != "plain" else f"{arch}.{data}"


def make_card(record: RunRecord, metrics: dict[str, float], name: str | None = None) -> ModelCard:
    """The card of a finished run; ``metrics`` are what the task's evaluation measured."""
    cfg = record.train_config
    return ModelCard(
        name=name or record.default_name, task=record.task, architecture=record.architecture,
        config=dict(record.config), dataset=record.dataset, split=record.split,
        metrics={k: round(float(v), 6) for k, v in metrics.items()}, params=count_params(record.model),
        method=record.method, paper=record.paper, teacher=record.teachers[0] if record.teachers else None,
        preprocessing=dict(record.preprocessing), labels=list(record.labels), description=record.description,
        training=TrainingRecord(command=record.command, hardware=record.hardware, epochs=cfg.get("epochs", 0),
                                seeds=[cfg.get("seed", 0)], wall_time_s=round(record.wall_time_s, 1),
                                date=_dt.date.today().isoformat(), config=cfg, notes=record.notes),
        extra={"history": [dict(h) for h in record.history],
               **({"recipe": record.recipe, "teachers": [asdict(t) for t in record.teachers]} if record.recipe else {}),
               **record.extra},
    )


def export_run(adapter: Any, record: RunRecord, out_dir: str | os.PathLike, test: Any, *, name: str | None = None,
               device: str = "cpu") -> ModelCard:
    """Measure ``record.model`` on ``test`` with the task's evaluation, then save it with its card."""
    model = record.model.to(device).eval()
    measured = adapter.evaluate_model(model, test, device=device)
    metrics = {k: v for k, v in measured.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"}
    return hub.save(model.to("cpu"), out_dir, make_card(record, metrics, name))


def _teacher_id(teacher: Any) -> str:
    if isinstance(teacher, nn.Module):
        from .teacher_cache import weights_fingerprint

        return f"module:{weights_fingerprint(teacher)}"
    if os.path.isdir(str(teacher)):  # one folder, however it is written: runs/t, ./runs/t/, runs/x/../t
        return os.path.normpath(str(teacher))
    return str(teacher)


def _teacher_weights(ref: Any) -> str | None:
    """The sha256 of a teacher's weights (a module's fingerprint, a checkpoint's safetensors file)."""
    from .teacher_cache import weights_fingerprint

    if isinstance(ref, nn.Module):
        return weights_fingerprint(ref)
    import zoo

    card = hub.read_card(ref) if Path(str(ref)).is_dir() else zoo.card(str(ref))
    return next((f.sha256 for f in card.files if f.name.endswith(".safetensors")), None)


def _load_teacher(ref: Any) -> nn.Module:
    if isinstance(ref, nn.Module):
        return ref
    import zoo

    return zoo.load(ref)


def reproduce_command(task: str, identity: dict[str, Any], settings: dict[str, Any], out: str | os.PathLike) -> str:
    """The ``zoo train|distill TASK ...`` line (`cli`) that runs this run from the start."""
    plain = identity.get("recipe") in (None, "plain")
    argv = ["zoo", "train" if plain else "distill", task]
    argv += ["--arch", identity["student"]] if plain else ["--recipe", str(identity["recipe"]), "--student", identity["student"]]
    argv += [a for t in identity.get("teachers") or [] for a in ("--teacher", t)]
    if identity.get("data") is not None:
        argv += ["--data", str(identity["data"])]
    if identity.get("train_subset"):
        argv += ["--train-subset", str(identity["train_subset"])]
    argv += ["--out", str(out)]
    argv += [a for k, v in settings.items() if k not in runs.PER_CALL for a in ("--set", f"{k}={v}")]
    return shlex.join(argv)


def distill(adapter: Any, teacher: Any, student: str, recipe: str | None, *, data: Any = None,
            out: str | os.PathLike, settings: dict[str, Any] | None = None, train_subset: int | None = None,
            resume: bool = False, device: str | None = None, deadline: float | None = None) -> Any:
    """Train ``student`` (an architecture of the task) with ``recipe`` (None: the task loss only) from
    ``teacher`` (zoo names, folders or modules; a list for several), on ``data`` (the task's default
    when None); the run folder ``out`` receives checkpoints, logs, ``run.json`` and, once finished, the
    student with its measured card. ``deadline`` (``time.monotonic()``) stops resumably. Returns a
    `zoo.api.DistillRun`.

    Raises ValueError for a recipe of another task, a wrong number of teachers, or (with ``resume``) a
    run started otherwise (`zoo.runs`)."""
    from .api import DistillRun
    from .distiller import Distiller
    from .distributed import is_main_process
    from .recipes import Recipe, get_recipe, override, recipe_dict
    from .trainer import STATE_FILE, TrainConfig, check_one_batch, fit

    task = adapter.task
    runs.check_train_subset(train_subset)
    base = Recipe("plain", [], task_weight=1.0, teachers=0, task=task,
                  description="the task loss only") if recipe in (None, "plain") else get_recipe(recipe, task)
    if base.task != task:
        raise ValueError(f"recipe {base.name!r} is for task {base.task!r}, not {task!r}")
    teachers_in = [] if teacher is None else list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    identity = {"task": task, "recipe": base.name, "student": student, "data": data if data is None or isinstance(data, str)
                else f"{type(data).__name__} (given)", "train_subset": train_subset,
                "teachers": [_teacher_id(t) for t in teachers_in] or None}
    identity, settings = runs.resolve(out, identity, dict(settings or {}), resume)  # (a changed identity: refused)
    if resume and (Path(out) / hub.CARD_FILE).exists():  # finished: nothing to resume, and its card stays as it is
        card = hub.read_card(out)
        print(f"{out}: this run has finished (its card is unchanged); start a new run in another folder to train again")
        return DistillRun(hub.load_dir(out, card), Path(out), True, card.extra.get("history", []), card)
    if not teachers_in and identity.get("teachers"):
        teachers_in = list(identity["teachers"])
    # the teachers' weights, not only their names or folders: a resume from changed weights is refused
    weights = [_teacher_weights(t) for t in teachers_in] or None
    if resume and identity.get("teacher_weights") is not None and weights != identity["teacher_weights"]:
        raise runs.ResumeMismatchError(f"--resume: the teacher's weights changed since {out} was started "
                                       f"(sha256 {identity['teacher_weights']} -> {weights}); start a new run")
    identity["teacher_weights"] = weights
    recipe_obj, cfg = override(base, replace(TrainConfig(), **adapter.train_defaults), settings)
    effective = {"recipe": recipe_dict(recipe_obj)}
    runs.check_effective(out, effective, resume)
    resumed_at = runs.check_checkpoint_config(Path(out) / STATE_FILE, cfg) if resume else None
    if len(teachers_in) != recipe_obj.teachers:
        raise ValueError(f"recipe {recipe_obj.name!r} takes {recipe_obj.teachers} teacher(s), got {len(teachers_in)}")
    train, test = adapter.datasets(data if isinstance(data, str) or data is None else data,
                                   train_subset=identity.get("train_subset"))
    check_one_batch(len(train), cfg)  # before the run folder is written
    teachers = [_load_teacher(t) for t in teachers_in]
    card_fields = adapter.card_fields(train)
    labels = list(card_fields.get("labels") or [])
    for t in teachers:
        card = getattr(t, "card", None)
        if card is not None and card.task != task:
            raise ValueError(f"teacher {card.name!r} is a {card.task} model, not a {task} one")
        if card is not None and card.labels and labels and list(card.labels) != labels:
            raise ValueError(f"teacher {card.name!r} predicts {len(card.labels)} classes ({', '.join(card.labels[:4])}, ...), "
                             f"the data has {len(labels)} ({', '.join(labels[:4])}, ...)")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    students = [adapter.build_student(student, train) for _ in range(recipe_obj.cohort)]
    example = train.batch(torch.arange(min(8, len(train))))
    distiller = Distiller(students, teachers, recipe_obj, example, num_examples=len(train),
                          example_labels=getattr(train, "labels", None), task_loss=getattr(adapter, "task_loss", None))
    record_ = {"started_with": settings, "changes": []}
    if is_main_process():
        record_ = runs.commit(out, identity, settings, effective, step=resumed_at)
    try:
        result = fit(distiller, train, cfg, out, evaluate=lambda: adapter.evaluate_model(students[0], test, device=dev),
                     resume=resume, device=dev, deadline=deadline)
    finally:
        distiller.close()
    model = students[0].to("cpu").eval()
    run = DistillRun(model, Path(out), result.finished, result.history)
    if not result.finished and is_main_process():  # max_steps or the deadline: a Python caller is told too
        print(f"{out}: stopped at step {result.step} of {result.total_steps} (max_steps or the time budget); no model "
              f"is exported yet: it continues from the checkpoint with resume=True (the command line: the same command "
              f"with --resume, or --out {out} --resume alone)", flush=True)
    if result.finished and is_main_process():
        record = RunRecord(
            task=task, model=model, architecture=student, config=adapter.model_config(model),
            dataset=train.name, split=test.split, method=recipe_obj.name, paper=recipe_obj.paper,
            teachers=[TeacherRef.of_card(t.card) if getattr(t, "card", None)
                      else TeacherRef(type(t).__name__, {}, count_params(t)) for t in teachers],
            train_config=asdict(cfg), history=result.history,
            command=reproduce_command(task, identity, record_["started_with"], out), hardware=hardware_description(dev),
            notes=runs.describe_changes(record_["changes"]),
            wall_time_s=result.seconds, recipe=recipe_dict(recipe_obj) if recipe_obj.terms else None,
            **card_fields)
        run.card = export_run(adapter, record, out, test)
    return run


def parser(task: str, command: str) -> argparse.ArgumentParser:
    """The generic ``zoo train|distill TASK`` options."""
    from .cli import add_time_budget, run_folder, torch_device

    p = argparse.ArgumentParser(prog=f"zoo {command} {task}")
    if command == "train":
        p.add_argument("--arch", help="the architecture to train (with --resume: the run's)")
    else:
        p.add_argument("--recipe", help="recipe name (`zoo recipes`; with --resume: the run's)")
        p.add_argument("--student", help="the student architecture (with --resume: the run's)")
        p.add_argument("--teacher", action="append", default=[],
                       help="teacher: zoo name or folder (repeat for several; with --resume: the run's)")
    p.add_argument("--data", default=None, help="the task's data set (default: its own)")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--out", required=True, type=run_folder, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out as it was started")
    p.add_argument("--device", default=None, type=torch_device, help="torch device (default: cuda when there is one, else cpu)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (= --set epochs=N)")
    p.add_argument("--seed", type=int, default=None, help="seed (= --set seed=S)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after N optimizer steps, resumably (= --set max_steps=N; the schedule is still the one "
                        "the epochs define)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting, recipe field, T or TERM.FIELD")
    add_time_budget(p)
    return p


def flag_settings(args: argparse.Namespace, settings: dict[str, Any],
                  keys: Sequence[str] = ("epochs", "seed", "max_steps")) -> dict[str, Any]:
    """``settings`` (the ``--set`` pairs) with the dedicated flags ``keys`` (``--epochs``, ``--seed``, ...) that
    were given. Raises ValueError when a flag and ``--set`` give the same setting two values."""
    for key in keys:
        value = getattr(args, key)
        if value is None:
            continue
        if key in settings and (settings[key] != value or isinstance(settings[key], bool)):  # (True == 1 in Python)
            raise ValueError(f"--{key.replace('_', '-')} {value!r} and --set {key}={settings[key]!r} disagree; give one")
        settings[key] = value
    return settings


def cli(adapter: Any, command: str, argv: Sequence[str]) -> int:
    """``zoo train|distill TASK ARGV`` for a task that uses the generic runner; the exit code."""
    from .cli import deadline_in, parse_overrides, require_run_identity

    p = parser(adapter.task, command)
    args = p.parse_args(list(argv))
    require_run_identity(p, args, {"arch": "student"} if command == "train" else {"recipe": "recipe", "student": "student"})
    recipe = None if command == "train" else args.recipe
    student = args.arch if command == "train" else args.student
    finished_before = args.resume and (Path(args.out) / hub.CARD_FILE).exists()  # (then nothing is saved)
    run = distill(adapter, args.teacher if command == "distill" and args.teacher else None, student, recipe,
                  data=args.data, out=args.out, settings=flag_settings(args, parse_overrides(args.set)),
                  train_subset=args.train_subset, resume=args.resume, device=args.device,
                  deadline=deadline_in(args.time_budget))
    if run.finished and run.card is not None and not finished_before:  # (a run that stopped early said so)
        print(f"saved {args.out}: " + ", ".join(f"{k}={v:.4f}" for k, v in run.card.metrics.items()))
    return 0
