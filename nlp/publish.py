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
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from zoo import hub
from zoo.io import atomic_write_text
from zoo.metrics import count_flops, count_params, cpu_description
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


def publish(run_dir: str | Path, name: str = "tinybert-kd", *, dest_root: str | Path | None = None,
            aliases: list[str] | None = None, notes: str = "") -> ModelCard:
    run = Path(run_dir)
    info = {stage: json.loads((run / f"{stage}.json").read_text()) for stage in ("teacher", "general", "task")}
    optional = {s: json.loads((run / f"{s}.json").read_text()) for s in ("plain", "baseline") if (run / f"{s}.json").exists()}
    teacher_name = info["teacher"]["pretrained"]
    tokenizer_dir = pretrained_path(teacher_name)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    max_length = int(info["task"].get("max_length", 64))
    student = load_classifier(run / "student.safetensors").half().float()  # the round trip the shipped weights make
    teacher = load_classifier(run / "teacher.safetensors")
    task_name = info["teacher"].get("task", "wordnet-topic")
    test_task = load_task(task_name, "test")
    test = TextBatches(encode(tokenizer, test_task.texts, max_length), test_task.labels, tokenizer.pad_token_id)
    student_acc = accuracy(student, test)
    teacher_acc = info["teacher"]["test_accuracy"]
    # latency on real test texts: the first 32 (batch 32) and the first one (batch 1)
    batch32 = test.batch(torch.arange(32))["inputs"]
    batch1 = test.batch(torch.arange(1))["inputs"]
    latency = _latency_pair({"teacher": teacher, "student": student}, {1: batch1, 32: batch32})
    params = {"teacher": count_params(teacher), "student": count_params(student)}
    # FLOPs of one text of the median test length (they grow with the length)
    lengths = sorted(len(ids) for ids in test.input_ids)
    median_len = lengths[len(lengths) // 2]
    example = {"input_ids": torch.full((1, median_len), 5, dtype=torch.long),
               "attention_mask": torch.ones(1, median_len, dtype=torch.long)}
    flops = {n: count_flops(m, example) for n, m in (("teacher", teacher), ("student", student))}
    rows = [
        {"model": f"teacher: {teacher_name} fine-tuned", "accuracy": teacher_acc, "params": params["teacher"],
         **latency["teacher"]},
        {"model": "student: TinyBERT-4L-312, TinyBERT KD (general + task)", "accuracy": student_acc,
         "params": params["student"], **latency["student"]},
    ]
    if "plain" in optional:
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
    stages = info["task"]["stages"]
    record = RunRecord(
        task="nlp", model=student, architecture="text-classifier", config=student.config, dataset=str(task_name),
        split="test", method="tinybert", paper=TINYBERT,
        teachers=[TeacherRef(name=f"{teacher_name} fine-tuned on {task_name}", metrics={"accuracy": round(teacher_acc, 6)},
                             params=params["teacher"])],
        train_config={"epochs": float(sum(s["config"]["epochs"] for s in stages.values())),
                      "seed": int(info["general"]["config"]["seed"]),
                      **{k: {**v["config"], **({"temperature": v["temperature"]} if v.get("temperature") else {})}
                         for k, v in stages.items()}},
        command=" && ".join(dict.fromkeys(info[s].get("command", f"python -m zoo.nlp.pipeline {s} --out {run}")
                                          for s in PIPELINE_STAGES)) + f" && python -m zoo.nlp.publish {run} --name {name}",
        hardware=info["task"].get("hardware") or f"CPU: {cpu_description()}",
        wall_time_s=float(sum(info[s].get("wall_seconds", 0.0) for s in PIPELINE_STAGES)),
        preprocessing={"max_length": max_length, "tokenizer": f"{teacher_name} (shipped with the weights)"},
        labels=list(test_task.classes), notes=notes,
        description=(f"TinyBERT-4L-312 student distilled from {teacher_name} on the {task_name} task, "
                     "TinyBERT's two stages through kdzoo's trainer."),
        extra={"benchmark": rows, "ratios": ratios, "teacher_latency_ms": latency["teacher"],
               "flops_per_text_of_tokens": median_len, "teacher_flops": flops["teacher"],
               "accuracy_fp32": info["task"]["test_accuracy"],
               "stages": {"teacher": {k: v for k, v in info["teacher"].items() if k != "history"},
                          "general": {k: v for k, v in info["general"].items() if k != "history"},
                          "task": {k: v for k, v in info["task"].items() if k != "stages"}}})
    card = make_card(record, {"accuracy": student_acc}, name)
    # what a text model's card has beyond make_card's: its tokenizer files, latency, FLOPs and licence
    card = replace(card, aliases=aliases or [], latency_ms=latency["student"], latency_env=cpu_description(),
                   flops=flops["student"], files=refs, license="Apache-2.0")
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
    p.add_argument("run_dir")
    p.add_argument("--name", default="tinybert-kd")
    p.add_argument("--dest", help="folder to publish into (default: the bundled weights/)")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--notes", default="")
    p.add_argument("--results", default="benchmarks/results", help="where the benchmark table (NAME.md) goes")
    args = p.parse_args(argv)
    card = publish(args.run_dir, args.name, dest_root=args.dest, aliases=args.alias, notes=args.notes)
    if args.results:
        out = Path(args.results)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"{card.name}.md", benchmark_markdown(card))
    print(f"published {card.name}: accuracy {card.metrics['accuracy']:.4f}; " + json.dumps(card.extra["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
