"""Short sweep of TinyBERT's prediction-layer stage (learning rate, temperature t of eq. 10).

Each setting starts from the same intermediate-distilled student of a `zoo.nlp.pipeline` run
(``RUN/task-intermediate/student.safetensors``), trains ``--steps`` steps of the prediction stage on the
run's training subset with the run's fine-tuned teacher, and reports validation accuracy on the first
``--val`` validation glosses. A spec ``LR,T`` is soft CE at temperature T; ``ftLR`` is the same steps on
the labels alone (cross-entropy, no teacher) for reference. All settings share the data order (same
seed), so the teacher's logits are computed once and read from the per-example cache afterwards;
the seconds column shows that.

    python benchmarks/nlp_prediction_sweep.py runs/nlp 1e-4,1 3e-4,1 3e-4,0.5 1e-3,1 3e-4,0.25 ft3e-4
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from zoo.io import atomic_write_text
from zoo.metrics import cpu_description
from zoo.nlp.data import TextBatches, encode, load_task
from zoo.nlp.models import load_tokenizer_and_config
from zoo.nlp.recipes import recipe
from zoo.nlp.train import accuracy, load_classifier, train_text
from zoo.trainer import TrainConfig


def parse_spec(spec: str) -> tuple[bool, float, float | None]:
    """``"3e-4,0.5"`` -> (False, 3e-4, 0.5); ``"ft3e-4"`` -> (True, 3e-4, None)."""
    if spec.startswith("ft"):
        return True, float(spec[2:].split(",")[0]), None
    lr, temperature = spec.split(",")
    return False, float(lr), float(temperature)


@torch.no_grad()
def mean_entropy(model: torch.nn.Module, data: TextBatches) -> float:
    """Mean entropy (nats) of the model's softmax over ``data``: how flat its soft targets are."""
    total, count = 0.0, 0
    for batch in data.loader(128):
        p = model(**batch["inputs"]).float().softmax(-1)
        total += float(-(p * p.clamp_min(1e-12).log()).sum(-1).sum())
        count += len(p)
    return total / max(1, count)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Prediction-stage sweep: {meta['steps']} steps (batch {meta['batch_size']}, AdamW, cosine over "
             f"{meta['epochs']} epochs, 10% warmup) on the first {meta['train_examples']} training glosses, from "
             f"`{meta['student']}`; validation accuracy on the first {meta['val_examples']} validation glosses. "
             f"{meta['hardware']}. The teacher's mean softmax entropy on those glosses: "
             f"{meta['teacher_val_entropy']:.2f} nats (uniform over {meta['classes']} classes: "
             f"{math.log(meta['classes']):.2f}).", "",
             "| setting | lr | t | val accuracy | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        setting = "labels only (CE)" if r["labels_only"] else "soft CE (eq. 10)"
        temperature = "-" if r["T"] is None else f"{r['T']:g}"
        lines.append(f"| {setting} | {r['lr']:g} | {temperature} | "
                     f"{100 * r['val_accuracy']:.2f}% | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("specs", nargs="+", help="LR,T (soft CE at temperature T) or ftLR (labels only)")
    p.add_argument("--teacher", default="all-mpnet-base-v2", help="the run's pretrained teacher (for its tokenizer)")
    p.add_argument("--train-subset", type=int, default=40000)
    p.add_argument("--val", type=int, default=3000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--epochs", type=int, default=2, help="the cosine schedule's length")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    run = Path(args.run_dir)
    tokenizer, _ = load_tokenizer_and_config(args.teacher)
    train_task = load_task("wordnet-topic", "train").subset(args.train_subset)
    val_task = load_task("wordnet-topic", "validation").subset(args.val)
    train = TextBatches(encode(tokenizer, train_task.texts, args.max_length), train_task.labels, tokenizer.pad_token_id)
    val = TextBatches(encode(tokenizer, val_task.texts, args.max_length), val_task.labels, tokenizer.pad_token_id)
    teacher = load_classifier(run / "teacher.safetensors")
    start = run / "task-intermediate" / "student.safetensors"
    rows = []
    for spec in args.specs:
        labels_only, lr, temperature = parse_spec(spec)
        student = load_classifier(start).train()
        layers = student.encoder.config.num_hidden_layers
        rec = recipe("finetune" if labels_only else "tinybert-prediction", layers, teacher.encoder.config.num_hidden_layers,
                     temperature=temperature)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=lr, optimizer="adamw", weight_decay=0.01,
                          warmup_epochs=0.1, schedule="cosine", amp="auto", channels_last=False,
                          checkpoint_every=10**9, log_every=50, seed=0, progress=False, max_steps=args.steps,
                          teacher_cache=not labels_only)
        t0 = time.perf_counter()
        train_text(rec, [student], [] if labels_only else [teacher], train, cfg, run / "sweep" / spec)
        seconds = time.perf_counter() - t0
        rows.append({"spec": spec, "labels_only": labels_only, "lr": lr, "T": temperature,
                     "val_accuracy": round(accuracy(student, val), 4), "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    meta = {"steps": args.steps, "batch_size": args.batch_size, "epochs": args.epochs,
            "train_examples": len(train), "val_examples": len(val), "student": str(start),
            "hardware": f"CPU: {cpu_description()}", "classes": len(val_task.classes),
            "teacher_val_entropy": round(mean_entropy(teacher, val), 3)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "nlp-prediction-sweep.json", json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(out / "nlp-prediction-sweep.md", markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
