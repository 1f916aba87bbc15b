"""Distil a classifier with any recipe: teacher(s) from the zoo, student built from an architecture name."""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.distiller import Distiller
from zoo.recipes import Recipe, get_recipe, override, recipe_dict
from zoo.registry import TeacherRef
from zoo.teacher_cache import TeacherOutputCache, weights_fingerprint
from zoo.trainer import STATE_FILE, TrainConfig, check_one_batch, fit, resolve_amp

from .data import ImageDataset, load_dataset
from .evaluate import evaluate
from .folders import class_key
from .models import build_model, check_architecture, describe_model
from .multibranch import MultiBranchResNet


def _load_teachers(teachers: list[str | nn.Module], train: ImageDataset) -> tuple[list[nn.Module], list[Any]]:
    """Teachers by zoo name, folder or module, and the hooks to remove after the run. A teacher trained on
    another data set must predict the same classes (names compared without case and punctuation: a
    folder ``T-shirt-top`` is the class ``T-shirt/top``); when its order differs (an image folder's
    classes are sorted by name), a forward hook puts its outputs in the data's order for the run. Its
    inputs are converted to its own (`teacher_input`)."""
    import zoo

    loaded, hooks = [], []
    for t in teachers:
        model = zoo.load(t) if not isinstance(t, nn.Module) else t
        card = getattr(model, "card", None)
        if card is not None and card.task != "classification":  # a detector of the same classes, say
            raise ValueError(f"teacher {card.name!r} is a {card.task} model, not a classification one")
        if card is not None and card.dataset != train.name:
            theirs, ours = [class_key(c) for c in card.labels], [class_key(c) for c in train.classes]
            if sorted(theirs) != sorted(ours) or len(set(ours)) != len(ours):
                raise ValueError(f"teacher {card.name!r} was trained on {card.dataset!r} with classes {list(card.labels)}; "
                                 f"the data {train.name!r} has {list(train.classes)}: distillation needs the same classes "
                                 "(names compared without case and punctuation: a folder T-shirt-top is T-shirt/top)")
            if theirs != ours:
                order = torch.tensor([theirs.index(c) for c in ours])
                hooks.append(model.register_forward_hook(lambda m, i, out, order=order: out[:, order.to(out.device)]))
        loaded.append(model)
    return loaded, hooks


def _teacher_id(teacher: str | os.PathLike | nn.Module) -> str:
    """How a run records its teacher: the zoo name or folder as given, a zoo model's name, or another
    module's weights fingerprint."""
    if isinstance(teacher, nn.Module):
        card = getattr(teacher, "card", None)
        return card.name if card is not None else f"module:{weights_fingerprint(teacher)}"
    return str(teacher)


def _teacher_ref(model: nn.Module) -> dict[str, Any]:
    card = getattr(model, "card", None)
    if card is not None:
        return asdict(TeacherRef.of_card(card))
    return asdict(TeacherRef(type(model).__name__, {}, sum(p.numel() for p in model.parameters())))


def _teacher_cache(teachers: list[nn.Module], train: ImageDataset, cfg: TrainConfig,
                   device: torch.device) -> TeacherOutputCache:
    """The cache for this run's data stream and teachers (see zoo.teacher_cache)."""
    from zoo.distributed import init_from_env
    from zoo.hub import cache_dir

    rank, world, _ = init_from_env()
    data_hash = hashlib.sha256(train.images.cpu().numpy().tobytes() + train.labels.cpu().numpy().tobytes()).hexdigest()
    key = {"teachers": [weights_fingerprint(t) for t in teachers], "data": [train.name, train.split, len(train), data_hash,
           train.crop_padding], "seed": cfg.seed, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
           "world": world, "rank": rank, "amp": str(resolve_amp(cfg.amp, device)), "device": device.type,
           "channels_last": cfg.channels_last}
    return TeacherOutputCache(cache_dir() / "teacher-outputs", key)


class TeacherInput(nn.Module):
    """Re-express a batch normalised for the student's data as the input a teacher was trained on: undo the
    data's normalisation, convert grey <-> RGB (ITU-R 601-2 luma, as PIL), resize (bilinear), and apply
    the teacher's card normalisation. So a grey 28 px Fashion-MNIST teacher can teach an RGB student on
    your own 32 px image folder."""

    def __init__(self, data_mean: tuple[float, ...], data_std: tuple[float, ...], channels: int, size: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("data_mean", torch.tensor(data_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("data_std", torch.tensor(data_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.channels, self.size = channels, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x * self.data_std.to(x) + self.data_mean.to(x)  # in [0, 1]
        if pixels.shape[1] == 3 and self.channels == 1:
            pixels = (pixels * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
                      ).sum(1, keepdim=True)
        elif pixels.shape[1] == 1 and self.channels == 3:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.shape[-1] != self.size or pixels.shape[-2] != self.size:
            pixels = F.interpolate(pixels, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (pixels - self.mean.to(x)) / self.std.to(x)


def teacher_input(train: ImageDataset, teacher: nn.Module) -> TeacherInput | None:
    """The `TeacherInput` a teacher needs on ``train``'s batches (None when its card's preprocessing is
    the data's own, or when it has no card to say)."""
    card = getattr(teacher, "card", None)
    pre = getattr(card, "preprocessing", None) or {}
    if not {"input_size", "mean", "std"} <= set(pre):
        return None
    channels, size = int(pre["input_size"][0]), int(pre["input_size"][-1])
    same = (channels == train.in_channels and size == train.image_size
            and tuple(pre["mean"]) == tuple(train.mean) and tuple(pre["std"]) == tuple(train.std))
    return None if same else TeacherInput(train.mean, train.std, channels, size, tuple(pre["mean"]), tuple(pre["std"]))


def resolve_data(dataset: str | None, data: Any, data_root: str | None, download: bool
                 ) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) from a data set name, an image folder path (`zoo.classification.folders`), or ``data``:
    a (train, test) pair of `ImageDataset`s or torch Datasets of (image, label)."""
    from .folders import from_torch_dataset, load_image_folder

    if data is not None:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(f"data must be a (train, test) pair of datasets, got {type(data).__name__}"
                             + (f" of {len(data)}" if isinstance(data, (tuple, list)) else ""))
        train, test = data
        for part in (train, test):
            if not isinstance(part, ImageDataset) and not (hasattr(part, "__getitem__") and hasattr(part, "__len__")):
                raise ValueError(f"classification data is a (train, test) pair of ImageDatasets or torch Datasets of "
                                 f"(image, label), got a {type(part).__name__} (data of another task? its recipes go "
                                 "with its own data)")
        if not isinstance(train, ImageDataset):
            train = from_torch_dataset(train, getattr(train, "name", type(train).__name__), "train")
        if not isinstance(test, ImageDataset):
            test = from_torch_dataset(test, train.name, "test", channels=train.in_channels, size=train.image_size,
                                      mean=train.mean, std=train.std)
        if int(test.labels.max()) >= len(train.classes):
            raise ValueError(f"the test data has label {int(test.labels.max())}, outside the {len(train.classes)} "
                             "training classes")
        return train, test
    dataset = os.path.expanduser(dataset) if dataset is not None else None  # (--dataset=~/imgs: no shell expansion)
    if dataset is not None and os.path.isdir(dataset):
        train = load_image_folder(dataset, "train")
        return train, load_image_folder(dataset, "test", channels=train.in_channels, size=train.image_size,
                                        mean=train.mean, std=train.std)
    return load_dataset(dataset, "train", data_root, download), load_dataset(dataset, "test", data_root, download)


def _run_stage(recipe: Recipe, teachers: list[nn.Module], arch: str | nn.Module, train: ImageDataset, test: ImageDataset,
               cfg: TrainConfig, out_dir: Path, resume: bool, device: torch.device,
               eval_batch_size: int, deadline: float | None = None) -> tuple[list[nn.Module], Any]:
    """Build the students and the Distiller, and train through `zoo.trainer.fit`."""
    students = build_students(recipe, arch, train, cfg.seed)
    example = train.batch(torch.arange(min(8, len(train))))
    cache = _teacher_cache(teachers, train, cfg, device) if cfg.teacher_cache and teachers else None
    distiller = Distiller(students, teachers, recipe, example, num_examples=len(train),
                          example_labels=train.labels, teacher_cache=cache,
                          teacher_inputs=[teacher_input(train, t) for t in teachers])

    def epoch_eval() -> dict[str, float]:
        scores = [evaluate(s, test, batch_size=eval_batch_size, device=device)["top1"] for s in deployable(students)]
        metrics = {"top1": scores[0]}
        if len(scores) > 1:
            metrics.update({f"top1_{i}": v for i, v in enumerate(scores)})
        return metrics

    def snapshot(epoch: int, history: list[dict]) -> None:
        """Every ``snapshot_every`` epochs, export the (first) student as a checkpoint folder with its card."""
        if cfg.snapshot_every and epoch % cfg.snapshot_every == 0 and epoch < cfg.epochs:
            from .publish import export_run

            model = copy.deepcopy(deployable(students)[0]).to("cpu", memory_format=torch.contiguous_format).eval()
            info = {"history": list(history), "train_config": {**asdict(cfg), "epochs": epoch}, "dataset": train,
                    "test": test, "device": str(device), "recipe": recipe_dict(recipe),
                    "teachers": [_teacher_ref(t) for t in teachers]}
            export_run(model, info, out_dir / "snapshots" / f"epoch{epoch:03d}", name=f"{arch}.{train.name}.epoch{epoch}",
                       command=f"(snapshot at epoch {epoch} of a {cfg.epochs}-epoch run in {out_dir})")

    result = fit(distiller, train, cfg, out_dir, evaluate=epoch_eval, on_epoch_end=snapshot, resume=resume,
                 device=device, deadline=deadline)
    distiller.close()
    return [s.to("cpu", memory_format=torch.contiguous_format).eval() for s in deployable(students)], result


def build_students(recipe: Recipe, arch: str | nn.Module, train: ImageDataset, seed: int) -> list[nn.Module]:
    """The recipe's students (a cohort, or one multi-branch network), initialised from ``seed``; a module
    given as ``arch`` is the student itself (as initialised by its owner)."""
    if isinstance(arch, nn.Module):
        if recipe.cohort > 1 or recipe.branches:
            raise ValueError(f"recipe {recipe.name!r} trains {recipe.cohort} students or a multi-branch network built "
                             "from an architecture name; give the student as a name (e.g. torchvision:mobilenet_v3_small)")
        check_student(arch, train)
        return [arch]
    torch.manual_seed(seed)  # the students' initial weights are part of what the seed fixes
    config = {"num_classes": len(train.classes), "in_channels": train.in_channels}
    if recipe.branches:
        return [MultiBranchResNet(arch, branches=recipe.branches, gate=recipe.gate, **config)]
    return [build_model(arch, **config) for _ in range(recipe.cohort)]


@torch.no_grad()
def check_student(model: nn.Module, train: ImageDataset) -> None:
    """A student given as a module must take the data's images and predict its classes: ValueError
    naming the shapes otherwise (before anything trains)."""
    x = train.batch(torch.arange(min(2, len(train))))["inputs"]
    mode = model.training
    model.eval()
    try:
        out = model(x)
    except RuntimeError as e:
        raise ValueError(f"the student cannot take the data's images {tuple(x.shape)} (N, C, H, W): "
                         f"{str(e).splitlines()[0]}") from None
    finally:
        model.train(mode)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != len(train.classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the student's output is {shape}; the data has {len(train.classes)} classes: build it with "
                         f"num_classes={len(train.classes)}")


def deployable(students: list[nn.Module]) -> list[nn.Module]:
    """The plain networks a run delivers: each cohort member, or every branch of a multi-branch student
    (OKDDip's leader, the last branch, first)."""
    if len(students) == 1 and isinstance(students[0], MultiBranchResNet):
        mb = students[0]
        order = list(range(len(mb.branches)))
        if mb.gate is None:  # OKDDip: the group leader is the last branch
            order = order[-1:] + order[:-1]
        return [mb.single(i) for i in order]
    return students


def distill_classifier(
    recipe: str | Recipe,
    teacher: str | nn.Module | list[str | nn.Module] | None,
    student: str | nn.Module,
    dataset: str | None = None,
    out_dir: str | os.PathLike = "runs/distill",
    settings: dict[str, Any] | None = None,
    *,
    data_root: str | None = None,
    download: bool = False,
    train_subset: int | None = None,
    resume: bool = False,
    device: str | None = None,
    eval_batch_size: int = 1000,
    data: tuple[ImageDataset, ImageDataset] | None = None,
    deadline: float | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Distil ``student`` (an architecture name) from ``teacher`` (zoo names, folders or models) with ``recipe``.

    ``settings`` are ``--set`` overrides (training settings, recipe fields, ``T``, ``TERM.FIELD``).
    ``student`` is an architecture name (``resnet20``, ``torchvision:mobilenet_v3_small``) or a module
    (a torchvision classifier, or any module with ``architecture`` and ``config``). ``dataset`` is a data
    set name (default fashion-mnist) or an image folder (`zoo.classification.folders`); ``data`` = (train,
    test), `ImageDataset`s or torch Datasets of (image, label), replaces it (your own data). A teacher
    trained on other inputs (grey, another size) gets the batches converted to its own (`TeacherInput`). With ``resume`` the run in ``out_dir`` continues with the settings it was started
    with; ``dataset``, ``train_subset`` and the teachers default to the run's, and a setting or identity
    that differs from the run's is refused unless it may change on resume (`zoo.runs`).
    ``deadline`` (``time.monotonic()``) stops the run resumably, as ``max_steps`` does.
    Returns the (first) student in eval mode on the CPU and an ``info`` dict for its card. With a
    teacher-assistant recipe (TAKD) the assistant is distilled first into ``out_dir/assistant``.
    """
    from zoo import runs

    teachers_in = [] if teacher is None else teacher if isinstance(teacher, list) else [teacher]
    if not resume:
        dataset = dataset or "fashion-mnist"
    if dataset is not None and os.path.isdir(dataset):  # an image folder: recorded by its full path
        dataset = os.path.abspath(dataset)
    identity = {"task": "classification", "recipe": recipe if isinstance(recipe, str) else recipe_dict(recipe),
                "student": student if isinstance(student, str) else describe_model(student)[0],
                "teachers": [_teacher_id(t) for t in teachers_in] or None,
                "dataset": dataset if data is None else f"{getattr(data[0], 'name', type(data[0]).__name__)} "
                                                        f"({len(data[0])} training examples, given)",
                "train_subset": train_subset}
    runs.check_train_subset(train_subset)
    identity, settings = runs.resolve(out_dir, identity, dict(settings or {}), resume)
    if not teachers_in and identity.get("teachers"):  # resumed without --teacher: the run's own
        if any(t.startswith("module:") for t in identity["teachers"]):
            raise ValueError("--resume: this run distils from teacher modules given in code; pass them again")
        teachers_in = list(identity["teachers"])
    dataset = identity.get("dataset") or dataset or "fashion-mnist"
    train_subset = identity.get("train_subset")
    base = get_recipe(recipe, "classification") if isinstance(recipe, str) else recipe
    if base.task != "classification":
        raise ValueError(f"recipe {base.name!r} is for {base.task} models, not for image classifiers "
                         f"(zoo distill {base.task} --help)")
    recipe_obj, cfg = override(base, TrainConfig(), settings)
    effective = {"recipe": recipe_dict(recipe_obj)}
    runs.check_effective(out_dir, effective, resume)
    resumed_at = None
    if resume:  # refuse other training settings before anything is written
        for stage_dir in (Path(out_dir) / "assistant", Path(out_dir)):
            resumed_at = runs.check_checkpoint_config(stage_dir / STATE_FILE, cfg) or resumed_at
    if recipe_obj.teachers == 0 and teachers_in:
        raise ValueError(f"recipe {recipe_obj.name!r} is online distillation and takes no teacher")
    if recipe_obj.teachers and len(teachers_in) != recipe_obj.teachers:
        raise ValueError(f"recipe {recipe_obj.name!r} needs {recipe_obj.teachers} teacher(s) (--teacher), got {len(teachers_in)}")
    train, test = resolve_data(dataset, data, data_root, download)
    if train_subset:
        train = train.subset(train_subset)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teachers, class_order_hooks = _load_teachers(teachers_in, train)
    try:
        check_one_batch(len(train), cfg)  # before the run record is written
        if isinstance(student, str):
            check_architecture(student)
        teacher_refs = [_teacher_ref(t) for t in teachers]
        from zoo.distributed import is_main_process

        record = {"started_with": settings, "changes": []}
        if is_main_process():
            record = runs.commit(out_dir, identity, settings, effective, step=resumed_at)
        out = Path(out_dir)
        chain: list[dict[str, Any]] = []
        if recipe_obj.assistant:
            stage = replace(recipe_obj, assistant=None)
            resume_assistant = resume and (out / "assistant" / STATE_FILE).exists()
            if resume and not resume_assistant and not (out / STATE_FILE).exists():
                raise FileNotFoundError(f"--resume: no checkpoint under {out}")
            assistants, stage_result = _run_stage(stage, teachers, recipe_obj.assistant, train, test, cfg,
                                                  out / "assistant", resume_assistant, dev, eval_batch_size, deadline)
            if not stage_result.finished:
                return assistants[0], {"finished": False, "step": stage_result.step, "total_steps": stage_result.total_steps * 2,
                                       "stage": "assistant"}
            assistant = assistants[0]
            chain.append({"name": f"{recipe_obj.assistant} (assistant)", "params": sum(p.numel() for p in assistant.parameters()),
                          "metrics": {"top1": stage_result.history[-1]["top1"]} if stage_result.history else {}})
            assistant.requires_grad_(False)
            teachers = [assistant.to(dev)]
            resume = resume and (out / STATE_FILE).exists()
        students, result = _run_stage(recipe_obj, teachers, student, train, test, cfg, out, resume, dev, eval_batch_size,
                                      deadline)
        info = {
            "finished": result.finished, "step": result.step, "total_steps": result.total_steps,
            "history": result.history, "train_config": asdict(cfg), "dataset": train, "test": test, "device": str(dev),
            "recipe": recipe_dict(recipe_obj), "teachers": teacher_refs, "assistant_chain": chain,
            "cohort": students, "command": reproduce_command(identity, record["started_with"], out),
            "notes": runs.describe_changes(record["changes"]),
        }
        return students[0], info
    finally:
        for hook in class_order_hooks:  # the teachers are the caller's again
            hook.remove()


def reproduce_command(identity: dict[str, Any], settings: dict[str, Any], out: str | os.PathLike) -> str:
    """The ``zoo train|distill classification ...`` command that runs this run from the start (the whole
    run's settings, as `zoo.runs` records them; ``max_steps`` and ``progress`` left out)."""
    import shlex

    from zoo.runs import PER_CALL

    plain = identity["recipe"] == "plain"
    argv = ["zoo", "train" if plain else "distill", "classification"]
    argv += ["--arch", identity["student"]] if plain else ["--recipe", str(identity["recipe"]), "--student", identity["student"]]
    argv += ["--dataset", str(identity["dataset"]), "--out", str(out)]
    argv += [a for t in identity.get("teachers") or [] for a in ("--teacher", t)]
    if identity.get("train_subset"):
        argv += ["--train-subset", str(identity["train_subset"])]
    argv += [a for k, v in settings.items() if k not in PER_CALL
             for a in ("--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]
    return shlex.join(argv)


def train_classifier(arch: str, dataset: str | None = None, out_dir: str | os.PathLike = "runs/classifier",
                     cfg: TrainConfig | None = None, settings: dict[str, Any] | None = None,
                     **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``arch`` from scratch with cross-entropy only: the ``plain`` recipe through the same trainer.

    Give either ``settings`` (only what differs from the defaults) or a whole ``cfg``."""
    if cfg is not None and settings is not None:
        raise ValueError("give either cfg or settings")
    return distill_classifier("plain", None, arch, dataset, out_dir,
                              asdict(cfg) if cfg is not None else settings, **kwargs)
