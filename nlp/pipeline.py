"""The tinybert-kd pipeline, stage by stage, each resumable (``python -m zoo.nlp.pipeline --help``).

    teacher    fine-tune the pretrained teacher (all-mpnet-base-v2) on the task     -> OUT/teacher.safetensors
    general    TinyBERT general distillation on the GCIDE corpus (intermediate layers) -> OUT/general.safetensors
    task       TinyBERT task distillation: intermediate layers, then the prediction layer -> OUT/student.safetensors
    plain      the same student shape fine-tuned without distillation (the benchmark's no-KD row)
    baseline   TF-IDF + logistic regression and the majority class (the benchmark's linear rows)

From Python, `run` takes the same options and also a Hugging Face `datasets.DatasetDict` as the task.

Each stage trains through `zoo.trainer.fit` in ``OUT/<stage>/`` and resumes there exactly after an
interruption (run the same command again); ``--time-budget`` minutes stops it cleanly. Settings are
recorded in ``OUT/<stage>.json`` with the measured accuracies.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from zoo.cli import add_time_budget, deadline_in, run_folder
from zoo.io import atomic_write_text
from zoo.metrics import hardware_description
from zoo.recipes import get_recipe
from zoo.trainer import AMP_MODES, STATE_FILE, TrainConfig

from .data import TextBatches, encode, load_corpus, load_task
from .models import TextClassifier, load_encoder, load_tokenizer_and_config, student_encoder
from .recipes import recipe as nlp_recipe
from .train import accuracy, load_classifier, save_classifier, train_text, write_json

STAGES = ("teacher", "general", "task", "plain", "baseline")


def _cfg(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    base = dict(batch_size=args.batch_size, optimizer="adamw", weight_decay=0.01, warmup_epochs=0.1,
                schedule="cosine", amp=args.amp, channels_last=False, checkpoint_every=args.checkpoint_every,
                log_every=10, seed=args.seed, progress=not args.quiet)
    base.update(overrides)
    return TrainConfig(**base)


def _data(args: argparse.Namespace, tokenizer: Any, train_subset: int | None = None
          ) -> tuple[TextBatches, TextBatches, TextBatches, Any]:
    tasks = {s: load_task(args.task, s) for s in ("train", "validation", "test")}
    limit = train_subset or args.train_subset
    if limit:
        tasks["train"] = tasks["train"].subset(limit)
    batches = {s: TextBatches(encode(tokenizer, t.texts, args.max_length), t.labels, tokenizer.pad_token_id)
               for s, t in tasks.items()}
    return batches["train"], batches["validation"], batches["test"], tasks["train"]


def run_teacher(args: argparse.Namespace, deadline: float | None) -> bool:
    out = Path(args.out)
    encoder, tokenizer = load_encoder(args.teacher)
    train, val, test, task = _data(args, tokenizer, args.teacher_subset)
    if args.teacher_freeze:  # partial fine-tuning: embeddings and the lowest layers stay pretrained
        encoder.embeddings.requires_grad_(False)
        for layer in encoder.encoder.layer[:args.teacher_freeze]:
            layer.requires_grad_(False)
    torch.manual_seed(args.seed)
    model = TextClassifier(encoder, len(task.classes))
    cfg = _cfg(args, epochs=args.teacher_epochs, lr=args.teacher_lr)
    result = train_text(get_recipe("plain"), [model], [], train, cfg, out / "teacher",
                        evaluate_on=val if args.eval_every_epoch else None,
                        resume=(out / "teacher" / STATE_FILE).exists(), deadline=deadline)
    if not result.finished:
        return False
    save_classifier(model, out / "teacher.safetensors", {"task": args.task, "pretrained": args.teacher})
    write_json(out / "teacher.json", {
        "stage": "teacher", "pretrained": args.teacher, "train_examples": len(train),
        "frozen": f"embeddings + layers 1-{args.teacher_freeze}" if args.teacher_freeze else "none",
        "config": asdict(cfg), "history": result.history, "test_accuracy": accuracy(model, test)})
    return True


def _student(args: argparse.Namespace, teacher_config: Any, num_labels: int) -> TextClassifier:
    torch.manual_seed(args.seed)
    return TextClassifier(student_encoder(teacher_config, args.student_layers, args.student_hidden,
                                          args.student_ffn, args.student_heads), num_labels)


def run_general(args: argparse.Namespace, deadline: float | None) -> bool:
    """TinyBERT general distillation: the pretrained (not fine-tuned) teacher, a plain-text corpus."""
    out = Path(args.out)
    encoder, tokenizer = load_encoder(args.teacher)
    num_labels = len(load_task(args.task, "validation").classes)
    teacher = TextClassifier(encoder, num_labels).eval()
    corpus = load_corpus(args.corpus)
    random.Random(args.seed).shuffle(corpus)
    corpus = corpus[:args.general_examples] if args.general_examples else corpus
    data = TextBatches(encode(tokenizer, corpus, args.max_length), None, tokenizer.pad_token_id)
    student = _student(args, encoder.config, num_labels)
    rec = nlp_recipe("tinybert-general", args.student_layers, encoder.config.num_hidden_layers)
    cfg = _cfg(args, epochs=args.general_epochs, lr=args.general_lr)
    result = train_text(rec, [student], [teacher], data, cfg, out / "general",
                        resume=(out / "general" / STATE_FILE).exists(), deadline=deadline)
    if not result.finished:
        return False
    save_classifier(student, out / "general.safetensors", {"stage": "general"})
    write_json(out / "general.json", {"stage": "general", "corpus": args.corpus, "examples": len(data),
                                      "config": asdict(cfg), "recipe": rec.name, "history": result.history})
    return True


def run_task(args: argparse.Namespace, deadline: float | None) -> bool:
    """TinyBERT task distillation from the fine-tuned teacher: intermediate layers, then the prediction layer."""
    out = Path(args.out)
    teacher = load_classifier(out / "teacher.safetensors")
    tokenizer, _ = load_tokenizer_and_config(args.teacher)
    train, val, test, task = _data(args, tokenizer)
    if args.augment:
        from .augment import Synonyms, augment

        texts, labels = augment(task.texts, task.labels, Synonyms.from_wordnet(), n=args.augment, seed=args.seed)
        train = TextBatches(encode(tokenizer, texts, args.max_length), labels, tokenizer.pad_token_id)
    n_teacher = teacher.encoder.config.num_hidden_layers
    history = {}
    for step, (rec_name, epochs, lr) in enumerate([("tinybert-intermediate", args.task_epochs, args.task_lr),
                                                  ("tinybert-prediction", args.pred_epochs, args.pred_lr)]):
        stage_dir = out / f"task-{rec_name.split('-')[1]}"
        done = stage_dir / "student.safetensors"
        if done.exists():
            history[rec_name] = json.loads((stage_dir / "stage.json").read_text())
            continue
        student = load_classifier(out / ("general.safetensors" if step == 0 else "task-intermediate/student.safetensors"))
        student.train()
        prediction = rec_name == "tinybert-prediction"
        rec = nlp_recipe(rec_name, student.encoder.config.num_hidden_layers, n_teacher,
                         temperature=args.pred_temperature if prediction else None)
        # the prediction stage taps only the teacher's logits: they are stored per example in the first
        # epoch and read back in the later ones (zoo.teacher_cache.ExampleOutputCache)
        cfg = _cfg(args, epochs=epochs, lr=lr, teacher_cache=prediction)
        result = train_text(rec, [student], [teacher], train, cfg, stage_dir, evaluate_on=None,
                            resume=(stage_dir / STATE_FILE).exists(), deadline=deadline)
        if not result.finished:
            return False
        history[rec_name] = {"config": asdict(cfg), "temperature": args.pred_temperature if prediction else None,
                             "steps": result.step, "history": result.history}
        write_json(stage_dir / "stage.json", history[rec_name])
        save_classifier(student, done, {"stage": rec_name})
    student = load_classifier(out / "task-prediction" / "student.safetensors")
    save_classifier(student, out / "student.safetensors", {"stage": "task"})
    write_json(out / "task.json", {"stage": "task", "train_examples": len(train), "augment": args.augment,
                                   "stages": history, "validation_accuracy": accuracy(student, val),
                                   "test_accuracy": accuracy(student, test)})
    return True


def run_plain(args: argparse.Namespace, deadline: float | None) -> bool:
    """The same student shape fine-tuned on the labels alone, from random weights (no distillation at all)."""
    out = Path(args.out)
    tokenizer, teacher_config = load_tokenizer_and_config(args.teacher)
    train, val, test, task = _data(args, tokenizer)
    student = _student(args, teacher_config, len(task.classes))
    cfg = _cfg(args, epochs=args.task_epochs + args.pred_epochs, lr=args.task_lr)
    result = train_text(nlp_recipe("finetune"), [student], [], train, cfg, out / "plain",
                        resume=(out / "plain" / STATE_FILE).exists(), deadline=deadline)
    if not result.finished:
        return False
    save_classifier(student, out / "plain.safetensors", {"stage": "plain"})
    write_json(out / "plain.json", {"stage": "plain", "train_examples": len(train), "config": asdict(cfg),
                                    "steps": result.step, "history": result.history,
                                    "validation_accuracy": accuracy(student, val), "test_accuracy": accuracy(student, test)})
    return True


def run_baseline(args: argparse.Namespace, deadline: float | None) -> bool:
    """TF-IDF (word 1-2 grams) + logistic regression, and the majority class, on the same splits."""
    from .baseline import tfidf_logreg

    tasks = {s: load_task(args.task, s) for s in ("train", "validation", "test")}
    if args.train_subset:
        tasks["train"] = tasks["train"].subset(args.train_subset)
    result = tfidf_logreg(tasks["train"], tasks["test"])
    write_json(Path(args.out) / "baseline.json", {"stage": "baseline", **result})
    return True


PER_CALL_ARGS = ("stages", "out", "time_budget", "quiet")
DATASET_DIR = "hf-dataset"  # where run() saves a datasets.DatasetDict given as the data


def check_stage_settings(out: Path, stage: str, args: argparse.Namespace) -> None:
    """A stage continues with the settings it was started with: they are recorded in ``OUT/<stage>.args.json``
    when it starts, and a later call that would resume it with other ones stops with both values named."""
    path = out / f"{stage}.args.json"
    now = {k: v for k, v in vars(args).items() if k not in PER_CALL_ARGS}
    if not path.exists():
        atomic_write_text(path, json.dumps(now, indent=2) + "\n")
        return
    saved = json.loads(path.read_text())
    parser = build_parser()  # an option added since the stage started counts as its default then
    saved = {**{k: parser.get_default(k) for k in now if k not in saved}, **saved}
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if differ:
        raise SystemExit(f"{stage}: this stage was started with other settings ("
                         + "; ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} then, {now.get(k)!r} now" for k in differ)
                         + f"); rerun with the settings in {path} to resume it, or delete {path} and the stage's "
                         "folder to start it again")


def build_parser() -> argparse.ArgumentParser:
    """The pipeline's command line (``python -m zoo.nlp.pipeline --help``)."""
    p = argparse.ArgumentParser(prog="python -m zoo.nlp.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="+", choices=STAGES + ("all",), help="the stages to run, in this order (all: every one)")
    p.add_argument("--out", required=True, type=run_folder, help="the run folder: each stage writes OUT/<stage>/ and OUT/<stage>.json")
    p.add_argument("--task", default="wordnet-topic",
                   help="wordnet-topic, fortunes, glue/<name>, or a folder saved by datasets' save_to_disk")
    p.add_argument("--teacher", default="all-mpnet-base-v2", help="pretrained encoder name or folder")
    p.add_argument("--train-subset", type=int, help="train the students on the first N training examples (default: all)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per example, truncated (default 64)")
    p.add_argument("--batch-size", type=int, default=32, help="examples per optimizer step, every stage (default 32)")
    p.add_argument("--teacher-epochs", type=int, default=3, help="teacher fine-tuning epochs (default 3)")
    p.add_argument("--teacher-lr", type=float, default=3e-5, help="teacher fine-tuning learning rate (default 3e-5)")
    p.add_argument("--teacher-subset", type=int, help="fine-tune the teacher on the first N training examples")
    p.add_argument("--corpus", default="gcide", help="general distillation's unlabelled text (default gcide, offline)")
    p.add_argument("--general-examples", type=int, help="use N corpus paragraphs (seeded shuffle)")
    p.add_argument("--general-epochs", type=int, default=1, help="general distillation epochs (default 1)")
    p.add_argument("--general-lr", type=float, default=3e-4, help="general distillation learning rate (default 3e-4)")
    p.add_argument("--task-epochs", type=int, default=1, help="intermediate-layer distillation epochs")
    p.add_argument("--task-lr", type=float, default=1e-4, help="intermediate-layer distillation learning rate (default 1e-4)")
    p.add_argument("--pred-epochs", type=int, default=1, help="prediction-layer distillation epochs")
    p.add_argument("--pred-lr", type=float, default=5e-5, help="prediction-layer distillation learning rate (default 5e-5)")
    p.add_argument("--pred-temperature", type=float, default=1.0, help="temperature t of the prediction-layer soft CE")
    p.add_argument("--augment", type=int, default=0, help="TinyBERT data augmentation: N copies per example (paper: 20)")
    p.add_argument("--student-layers", type=int, default=4, help="student transformer layers (default 4, TinyBERT-4)")
    p.add_argument("--student-hidden", type=int, default=312, help="student hidden size (default 312)")
    p.add_argument("--student-ffn", type=int, default=1200, help="student feed-forward size (default 1200)")
    p.add_argument("--student-heads", type=int, default=12, help="student attention heads (default 12)")
    p.add_argument("--teacher-freeze", type=int, default=0, help="freeze the embeddings and this many lowest layers")
    p.add_argument("--amp", choices=AMP_MODES, default="auto",
                   help="mixed precision of every stage's training steps (zoo.trainer.TrainConfig.amp; auto: bf16 on a "
                        "GPU or a CPU with AMX). On a CPU with AVX512-BF16 but no AMX, bf16 made an MPNet-base "
                        "fine-tuning step 1.9x faster than fp32 (benchmarks/amp_cpu.py); accuracies are always "
                        "measured in fp32")
    p.add_argument("--eval-every-epoch", action="store_true", help="validation accuracy after each epoch")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=300, help="optimizer steps between resumable checkpoints (default 300)")
    add_time_budget(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(stages: str | Sequence[str], out: str | os.PathLike, *, data: Any = "wordnet-topic",
        **options: Any) -> dict[str, dict[str, Any]]:
    """The pipeline from Python: ``run(["teacher", "general", "task"], "runs/tb", data=my_dataset_dict,
    task_epochs=3)`` is ``python -m zoo.nlp.pipeline teacher general task --out runs/tb --task ... --task-epochs 3``.

    ``data`` is a task name (see `zoo.nlp.data.load_task`), a folder saved by `datasets`, or a Hugging Face
    `datasets.DatasetDict`/`Dataset` (``text`` and ``label`` columns; see `zoo.nlp.data.hf_task` for the
    splits), which is checked, then saved once into ``OUT/hf-dataset`` so that every stage and a resumed
    run read the same examples. Options are the command line's, with underscores (``True`` turns a flag on).

    Returns:
        Each finished stage's record (``OUT/<stage>.json``: settings, history, measured accuracies); a
        stage stopped by ``time_budget`` is absent (call again to resume it).

    Raises:
        ValueError: an unknown stage or option, a dataset that cannot form its splits (`zoo.nlp.data.hf_task`),
            or ``OUT/hf-dataset`` holds another dataset than ``data`` or is not kdzoo's.
    """
    stages = [stages] if isinstance(stages, str) else list(stages)
    parser = build_parser()
    known = {a.dest: a for a in parser._actions if a.option_strings}
    unknown = sorted(set(options) - set(known) - {"task"})
    if unknown:
        raise ValueError(f"unknown pipeline option(s) {unknown}; known: {', '.join(sorted(k for k in known if k != 'help'))}")
    bad = [s for s in stages if s not in STAGES + ("all",)]
    if not stages:
        raise ValueError(f"no stage given; the stages are {', '.join(STAGES)} (or all)")
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; the stages are {', '.join(STAGES)} (or all)")
    out = Path(out)
    if not isinstance(data, (str, os.PathLike)):
        from .data import hf_task

        for split in ("train", "validation", "test"):  # refuse a dataset that cannot run before saving anything
            hf_task(data, split)
        data = _save_dataset(data, out / DATASET_DIR)
    argv = [*stages, "--out", str(out), "--task", str(data)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(known[key], argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    if main(argv) != 0:
        raise RuntimeError(f"the pipeline stopped: {shlex.join(argv)}")
    return {s: json.loads((out / f"{s}.json").read_text()) for s in (STAGES if "all" in stages else stages)
            if (out / f"{s}.json").exists()}


def _save_dataset(data: Any, target: Path) -> str:
    """Save a `datasets` dataset into ``target`` once (atomically); a later call must pass the same one."""
    import shutil

    import datasets

    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    if not isinstance(data, datasets.DatasetDict):
        raise TypeError(f"data must be a task name, a folder, or a datasets.DatasetDict/Dataset, got {type(data).__name__}")
    fingerprint = json.dumps({k: _content_hash(d) for k, d in sorted(data.items())}, sort_keys=True)
    stamp = target / "kdzoo_fingerprint.json"
    if target.exists() and not stamp.exists():
        raise ValueError(f"{target} exists and was not written by kdzoo (no {stamp.name}); it is left as it is: "
                         "move it away or use another out folder")
    if stamp.exists():
        if stamp.read_text() != fingerprint:
            raise ValueError(f"{target} holds another dataset (fingerprints {stamp.read_text()} then, {fingerprint} now); "
                             "resume with the same data, or use another out folder")
        return str(target)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    data.save_to_disk(str(partial))
    atomic_write_text(partial / stamp.name, fingerprint)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return str(target)


def _content_hash(dataset: Any) -> str:
    """sha256 of a `datasets.Dataset`'s rows (its Arrow table in IPC form), the same for equal contents."""
    import hashlib

    import pyarrow as pa

    table = dataset.flatten_indices().data.table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def main(argv: list[str] | None = None, *, deadline: float | None = None) -> int:
    """The command line; ``deadline`` (``time.monotonic()``) stops it like ``--time-budget`` (the earlier wins)."""
    args = build_parser().parse_args(argv)
    deadlines = [d for d in (deadline, deadline_in(args.time_budget)) if d is not None]
    deadline = min(deadlines) if deadlines else None
    stages = STAGES if "all" in args.stages else args.stages
    Path(args.out).mkdir(parents=True, exist_ok=True)
    runners = {"teacher": run_teacher, "general": run_general, "task": run_task, "plain": run_plain,
               "baseline": run_baseline}
    command = "python -m zoo.nlp.pipeline " + shlex.join(sys.argv[1:] if argv is None else argv)
    for stage in stages:
        out = Path(args.out)
        if (out / f"{stage}.json").exists():
            print(f"{stage}: done already ({out / f'{stage}.json'})")
            continue
        check_stage_settings(out, stage, args)
        wall_path = out / f"{stage}.wall_seconds"  # summed over the calls that ran this stage
        wall = float(wall_path.read_text()) if wall_path.exists() else 0.0
        t0 = time.perf_counter()
        finished = runners[stage](args, deadline)
        wall += time.perf_counter() - t0
        atomic_write_text(wall_path, f"{wall:.1f}\n")
        if not finished:
            print(f"{stage}: stopped at the time budget; run the same command again to resume")
            return 0
        record = json.loads((out / f"{stage}.json").read_text())
        record.update({"wall_seconds": round(wall, 1), "command": command, "hardware": hardware_description(),
                       "max_length": args.max_length, "task": args.task})
        write_json(out / f"{stage}.json", record)
        print(f"{stage}: done: " + json.dumps({k: v for k, v in json.loads((Path(args.out) / f'{stage}.json').read_text()).items()
                                               if "accuracy" in k}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
