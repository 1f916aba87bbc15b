"""Publish a finished `zoo.nlp.pipeline` run as a zoo entry, with the benchmark measured side by side.

    python -m zoo.nlp.publish RUN_DIR --name tinybert-kd [--dest weights]

The run becomes a card the way every task's does (a `zoo.runner.RunRecord` -> `zoo.runner.make_card`),
plus what a text model's card has besides: its tokenizer files, latency, FLOPs and licence. The student
is saved in float16 with its tokenizer files (all sha256-recorded on the card). The card's
accuracy is measured again on the cast weights, exactly as `zoo eval` loads them. Teacher and student
CPU latency (batch 1 and 32, real test texts) are measured in one interleaved run, so their ratio is
fair on a noisy machine; parameters are counted for both.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo import hub
from zoo.io import atomic_write_text
from zoo.metrics import count_flops, count_params, cpu_description
from zoo.publish import check_destination
from zoo.registry import FileRef, ModelCard, TeacherRef
from zoo.runner import RunRecord, make_card

from .adapter import TOKENIZER_FILES
from .data import TextBatches, encode, load_task
from .models import pretrained_path
from .recipes import TINYBERT
from .train import accuracy, load_classifier

PIPELINE_STAGES = ("general", "teacher", "task")  # the pipeline commands whose runs make one student


def _latency_pair(models: dict[str, nn.Module], batches: dict[int, dict[str, torch.Tensor]], repeats: int = 15,
                  rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median forward time (ms) of each model at each batch size, the models interleaved round by round."""
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
            for inputs in batches.values():
                m(**inputs)  # warm-up
        for _ in range(rounds):
            for bs, inputs in batches.items():
                for name, m in models.items():
                    for _ in range(repeats):
                        t0 = time.perf_counter()
                        m(**inputs)
                        times[name][bs].append((time.perf_counter() - t0) * 1000)
    return {n: {f"cpu_bs{b}": round(statistics.median(v), 3) for b, v in per.items()} for n, per in times.items()}


def _file_ref(path: Path) -> FileRef:
    blob = path.read_bytes()
    return FileRef(path.name, hashlib.sha256(blob).hexdigest(), len(blob))


STUDENT_ROWS = {"task": "student: {shape}, TinyBERT KD (general + task)",
                "plain": "student: {shape}, no distillation (labels only, from random init)"}


def short_name(ref: str) -> str:
    """A pretrained encoder or data set as a card names it: a local folder by its own name (where it lies on
    this machine means nothing elsewhere), a registered name as it is."""
    return Path(ref).name if ("/" in ref or os.sep in ref) else ref


def publish(run_dir: str | Path, name: str = "tinybert-kd", *, dest_root: str | Path | None = None,
            aliases: list[str] | None = None, notes: str = "", stage: str = "task",
            baseline: dict[str, Any] | None = None, description: str | None = None,
            command: str | None = None) -> ModelCard:
    """Publish a finished pipeline run's student as zoo entry ``name`` (fp16, with its tokenizer files).

    ``stage`` picks the student: ``task`` (TinyBERT-distilled, ``OUT/student.safetensors``; needs the
    teacher, general and task stages) or ``plain`` (the no-KD twin, ``OUT/plain.safetensors``; needs the
    teacher and plain stages, the teacher for the latency and parameter ratios only). ``baseline`` is the
    card's twin record (`zoo.protocol.baseline_record`); ``description`` and ``command`` replace the
    defaults (the pipeline commands that made the run).

    Raises FileNotFoundError when a stage the student needs has not finished, ValueError for another ``stage``.
    """
    if stage not in STUDENT_ROWS:
        raise ValueError(f"stage must be one of {sorted(STUDENT_ROWS)}, got {stage!r}")
    run = Path(run_dir)
    needed = ("teacher", "general", "task") if stage == "task" else ("teacher", "plain")
    missing = [s for s in needed if not (run / f"{s}.json").exists()]
    if missing:
        raise FileNotFoundError(f"{run}: stage(s) {missing} have not finished (no {missing[0]}.json); "
                                f"run python -m zoo.nlp.pipeline {' '.join(missing)} --out {run} first")
    info = {s: json.loads((run / f"{s}.json").read_text()) for s in needed}
    optional = {s: json.loads((run / f"{s}.json").read_text()) for s in ("plain", "baseline") if (run / f"{s}.json").exists()}
    tokenizer_dir = pretrained_path(info["teacher"]["pretrained"])
    teacher_name = short_name(info["teacher"]["pretrained"])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    max_length = int(info[stage].get("max_length", 64))
    weights = run / ("student.safetensors" if stage == "task" else "plain.safetensors")
    student = load_classifier(weights).half().float()  # the round trip the shipped weights make
    teacher = load_classifier(run / "teacher.safetensors")
    task_name = info["teacher"].get("task", "wordnet-topic")
    task_label = short_name(str(task_name))
    test_task = load_task(task_name, "test")
    test = TextBatches(encode(tokenizer, test_task.texts, max_length), test_task.labels, tokenizer.pad_token_id)
    student_acc = accuracy(student, test)
    teacher_acc = info["teacher"]["test_accuracy"]
    # latency on real test texts: the first 32 (batch 32) and the first one (batch 1)
    batch32 = test.batch(torch.arange(min(32, len(test))))["inputs"]
    batch1 = test.batch(torch.arange(1))["inputs"]
    latency = _latency_pair({"teacher": teacher, "student": student}, {1: batch1, 32: batch32})
    params = {"teacher": count_params(teacher), "student": count_params(student)}
    # FLOPs of one text of the median test length (they grow with the length)
    lengths = sorted(len(ids) for ids in test.input_ids)
    median_len = lengths[len(lengths) // 2]
    example = {"input_ids": torch.full((1, median_len), 5, dtype=torch.long),
               "attention_mask": torch.ones(1, median_len, dtype=torch.long)}
    flops = {n: count_flops(m, example) for n, m in (("teacher", teacher), ("student", student))}
    encoder = student.encoder.config
    shape = f"TinyBERT-{encoder.num_hidden_layers}L-{encoder.hidden_size}"
    rows = [
        {"model": f"teacher: {teacher_name} fine-tuned", "accuracy": teacher_acc, "params": params["teacher"],
         **latency["teacher"]},
        {"model": STUDENT_ROWS[stage].format(shape=shape), "accuracy": student_acc, "params": params["student"],
         **latency["student"]},
    ]
    if "plain" in optional and stage == "task":
        rows.append({"model": "same student, no distillation (fine-tuned from random init)",
                     "accuracy": optional["plain"]["test_accuracy"], "params": params["student"]})
    if "baseline" in optional:
        rows.append({"model": "TF-IDF + logistic regression", "accuracy": optional["baseline"]["tfidf_logreg_test_accuracy"]})
        rows.append({"model": f"majority class ({optional['baseline']['majority_class']})",
                     "accuracy": optional["baseline"]["majority_test_accuracy"]})
    ratios = {"accuracy_share_of_teacher": round(student_acc / teacher_acc, 4),
              "params_ratio": round(params["teacher"] / params["student"], 2),
              "latency_ratio_bs1": round(latency["teacher"]["cpu_bs1"] / latency["student"]["cpu_bs1"], 2),
              "latency_ratio_bs32": round(latency["teacher"]["cpu_bs32"] / latency["student"]["cpu_bs32"], 2)}
    dest = (Path(dest_root) if dest_root is not None else hub.bundled_dir()) / name
    dest.mkdir(parents=True, exist_ok=True)
    refs = []
    for fname in TOKENIZER_FILES:
        if (tokenizer_dir / fname).exists():
            shutil.copyfile(tokenizer_dir / fname, dest / fname)
            refs.append(_file_ref(dest / fname))
    teacher_ref = TeacherRef(name=f"{teacher_name} fine-tuned on {task_label}",
                             metrics={"accuracy": round(teacher_acc, 6)}, params=params["teacher"])
    if stage == "task":
        stages = info["task"]["stages"]
        train_config = {"epochs": float(sum(s["config"]["epochs"] for s in stages.values())),
                        "seed": int(stages["tinybert-intermediate"]["config"]["seed"]),
                        **{k: {**v["config"], **({"temperature": v["temperature"]} if v.get("temperature") else {})}
                           for k, v in stages.items()}}
        made_by = PIPELINE_STAGES
        method, paper, teachers = "tinybert", TINYBERT, [teacher_ref]
        default_description = (f"{shape} student distilled from {teacher_name} on the {task_label} task, "
                               "TinyBERT's two stages through kdzoo's trainer.")
        stage_records = {s: {k: v for k, v in info[s].items() if k not in ("history", "stages")} for s in needed}
    else:
        cfg = info["plain"]["config"]
        train_config = {"epochs": float(cfg["epochs"]), "seed": int(cfg["seed"]), "plain": cfg}
        made_by = ("plain",)
        method, paper, teachers = "plain", "", []
        default_description = (f"{shape} shape trained on the {task_label} labels alone from random weights "
                               f"(no distillation): the plain twin of the students distilled from {teacher_name}.")
        stage_records = {"plain": {k: v for k, v in info["plain"].items() if k != "history"}}
    pipeline_command = " && ".join(dict.fromkeys(info[s].get("command", f"python -m zoo.nlp.pipeline {s} --out {run}")
                                                 for s in made_by)) + f" && python -m zoo.nlp.publish {run} --name {name}"
    record = RunRecord(
        task="nlp", model=student, architecture="text-classifier", config=student.config, dataset=str(task_name),
        split="test", method=method, paper=paper, teachers=teachers, train_config=train_config,
        command=command or pipeline_command,
        hardware=info[stage].get("hardware") or f"CPU: {cpu_description()}",
        wall_time_s=float(sum(info[s].get("wall_seconds", 0.0) for s in made_by)),
        preprocessing={"max_length": max_length, "tokenizer": f"{teacher_name} (shipped with the weights)"},
        labels=list(test_task.classes), notes=notes, description=description or default_description,
        extra={"benchmark": rows, "ratios": ratios, "teacher_latency_ms": latency["teacher"],
               "flops_per_text_of_tokens": median_len, "teacher_flops": flops["teacher"],
               "accuracy_fp32": info[stage]["test_accuracy"], "stages": stage_records})
    card = make_card(record, {"accuracy": student_acc}, name)
    # what a text model's card has beyond make_card's: its tokenizer files, latency, FLOPs, licence and twin
    card = replace(card, aliases=aliases or [], latency_ms=latency["student"], latency_env=cpu_description(),
                   flops=flops["student"], files=refs, license="Apache-2.0", baseline=baseline)
    return hub.save(student, dest, card, dtype=torch.float16)


def benchmark_markdown(card: ModelCard) -> str:
    """The card's benchmark as a markdown table (the README's copy), ratios underneath."""
    lines = ["| model | test accuracy | params | CPU latency bs1 / bs32 |", "|---|---|---|---|"]
    for row in card.extra["benchmark"]:
        params = f"{row['params'] / 1e6:.1f}M" if row.get("params") else "-"
        latency = f"{row['cpu_bs1']:.1f} / {row['cpu_bs32']:.1f} ms" if "cpu_bs1" in row else "-"
        lines.append(f"| {row['model']} | {row['accuracy'] * 100:.2f}% | {params} | {latency} |")
    r = card.extra["ratios"]
    lines.append("")
    lines.append(f"Student vs teacher: {r['accuracy_share_of_teacher'] * 100:.1f}% of its accuracy, "
                 f"{r['params_ratio']:.2f}x fewer parameters, {r['latency_ratio_bs1']:.2f}x faster at batch 1 and "
                 f"{r['latency_ratio_bs32']:.2f}x at batch 32 (CPU: {card.latency_env}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="a finished pipeline run folder (not with --table-of)")
    p.add_argument("--name", default="tinybert-kd")
    p.add_argument("--table-of", metavar="ENTRY",
                   help="only write ENTRY's benchmark table (RESULTS/ENTRY.md) from its published card: for an entry "
                        "that benchmarks/twins.py --publish made")
    p.add_argument("--dest", help="folder to publish into (default: the bundled weights/)")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--overwrite", action="store_true", help="replace DEST/NAME if it exists (default: refuse)")
    p.add_argument("--notes", default="")
    p.add_argument("--results", default="benchmarks/results", help="where the benchmark table (NAME.md) goes")
    args = p.parse_args(argv)
    if (args.run_dir is None) == (args.table_of is None):
        p.error("give a run folder to publish, or --table-of ENTRY (not both)")
    if args.table_of:
        import zoo
        from zoo.registry import UnknownModelError

        try:
            card = zoo.card(args.table_of)
        except UnknownModelError as e:
            p.error(str(e))
        if card.task != "nlp" or "benchmark" not in card.extra:
            p.error(f"{args.table_of} is not a text entry published by kdzoo (its card has no benchmark rows)")
    else:
        try:
            check_destination(args.name, args.alias, args.dest, overwrite=args.overwrite)
        except ValueError as e:
            p.error(str(e))
        card = publish(args.run_dir, args.name, dest_root=args.dest, aliases=args.alias, notes=args.notes)
        print(f"published {card.name}: accuracy {card.metrics['accuracy']:.4f}; " + json.dumps(card.extra["ratios"]))
    if args.results:
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"{card.name}.md", benchmark_markdown(card))
        print(f"wrote {out / (card.name + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
