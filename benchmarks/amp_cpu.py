"""bf16 autocast against fp32 on this CPU: the time of one training step of kdzoo's models, side by side.

`zoo.trainer.TrainConfig.amp` chooses the autocast dtype of a training step; ``auto`` resolves to bf16 on a
GPU or on a CPU with AMX tiles, and to fp32 on any other CPU (`zoo.trainer.resolve_amp`). This benchmark
measures what ``amp=bf16`` (``--set amp=bf16``, or the nlp pipeline's ``--amp bf16``) changes on the CPU it
runs on, for the step each task trains:

- classification: a ResNet-56 -> ResNet-8 KD step (teacher forward without grad, student forward and
  backward, 0.1 CE + 0.9 T^2 KL at T = 4, SGD), batch 128 of 1x28x28;
- gan: a CycleGAN ResNet-9 ngf-64 teacher -> ngf-16 student step (L1 to the teacher's image, Adam), batch 4
  of 3x128x128;
- nlp: an MPNet-base fine-tuning step (the text teacher stage) and a TinyBERT-4L-312 step (CE), batch 32 of
  32 tokens, AdamW; random weights of the same shapes (the time does not depend on the values).

Each case alternates fp32 and bf16 rounds (``--rounds`` of each) of ``--steps`` steps after warm-up steps, from
the same initial weights and batch; the table gives the per-step minimum and median of each dtype, the
ratio of the minima (noise on a shared machine only adds time) and how far bf16's loss after the first
round is from fp32's (relative), as a check that the faster steps still train the same way. All in one run:

    python benchmarks/amp_cpu.py [--steps 3] [--rounds 3] [--only TEXT] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import copy
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from zoo.io import atomic_write_text
from zoo.metrics import cpu_description

WARMUP = 2  # untimed steps at the start of each round (allocator and kernel caches)
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def _step_fn(student: torch.nn.Module, teacher: torch.nn.Module | None, batch: dict, loss_fn: Callable,
             opt: torch.optim.Optimizer, dtype: torch.dtype | None) -> Callable[[], float]:
    """One training step as `zoo.trainer.fit` runs it: the forwards under autocast, the loss in fp32."""
    def step() -> float:
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            with torch.no_grad():
                target = teacher(**batch["inputs"]) if teacher is not None else None
            out = student(**batch["inputs"])
        loss = loss_fn(_float(out), _float(target), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def _float(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.float()


def _cases() -> dict[str, Callable[[], tuple[torch.nn.Module, torch.nn.Module | None, dict, Callable, Callable]]]:
    """name -> a builder of (student, teacher or None, batch, loss, optimizer factory), seeded."""
    def classification():
        from zoo.classification.models import build_model

        torch.manual_seed(0)
        teacher = build_model("resnet56", in_channels=1).eval()
        student = build_model("resnet8", in_channels=1)
        g = torch.Generator().manual_seed(1)
        batch = {"inputs": {"x": torch.randn(128, 1, 28, 28, generator=g)},
                 "labels": torch.randint(0, 10, (128,), generator=g)}

        def loss(s, t, b):
            kl = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean")
            return 0.1 * F.cross_entropy(s, b["labels"]) + 0.9 * 16 * kl
        return (_Kw(student), _Kw(teacher), batch, loss,
                lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))

    def gan():
        from zoo.gan.models import build_generator

        torch.manual_seed(0)
        teacher = build_generator("cyclegan-resnet9-ngf64").eval()
        student = build_generator("cyclegan-resnet9-ngf16")
        batch = {"inputs": {"x": torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1}}
        return (_Kw(student), _Kw(teacher), batch, lambda s, t, b: (s - t).abs().mean(),
                lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999)))

    def text(layers: int, hidden: int, ffn: int):
        def build():
            from transformers import AutoModel, MPNetConfig

            torch.manual_seed(0)
            cfg = MPNetConfig(num_hidden_layers=layers, hidden_size=hidden, intermediate_size=ffn,
                              num_attention_heads=12)
            encoder = AutoModel.from_config(cfg, add_pooling_layer=False)
            head = torch.nn.Linear(hidden, 45)
            g = torch.Generator().manual_seed(1)
            batch = {"inputs": {"input_ids": torch.randint(3, cfg.vocab_size, (32, 32), generator=g),
                                "attention_mask": torch.ones(32, 32, dtype=torch.long)},
                     "labels": torch.randint(0, 45, (32,), generator=g)}
            model = _Pooled(encoder, head)
            return (model, None, batch, lambda s, t, b: F.cross_entropy(s, b["labels"]),
                    lambda p: torch.optim.AdamW(p, lr=3e-5, weight_decay=0.01))
        return build

    return {"classification: ResNet-56 -> ResNet-8 KD, batch 128, 28x28": classification,
            "gan: CycleGAN ngf-64 -> ngf-16, L1, batch 4, 128x128": gan,
            "nlp: MPNet-base fine-tuning, batch 32 x 32 tokens": text(12, 768, 3072),
            "nlp: TinyBERT-4L-312, batch 32 x 32 tokens": text(4, 312, 1200)}


class _Kw(torch.nn.Module):
    """A model called with ``x=`` (the batch's inputs as keywords)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Pooled(torch.nn.Module):
    """Encoder + mean over tokens + linear head (the shape of `zoo.nlp.models.TextClassifier`'s step)."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden.mean(1))


def measure(build: Callable, steps: int, rounds: int) -> dict:
    """Per-step seconds of each dtype over alternating rounds, and the relative loss difference."""
    student0, teacher, batch, loss_fn, make_opt = build()
    if teacher is not None:
        teacher.requires_grad_(False)
    times: dict[str, list[float]] = {k: [] for k in DTYPES}
    first_loss: dict[str, float] = {}
    for r in range(rounds):
        for name, dtype in DTYPES.items():
            student = copy.deepcopy(student0).train()
            step = _step_fn(student, teacher, batch, loss_fn, make_opt(student.parameters()), dtype)
            for _ in range(WARMUP):
                step()
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = step()
            times[name].append((time.perf_counter() - t0) / steps)
            first_loss.setdefault(name, loss)
    row = {f"{k}_ms_min": round(min(v) * 1e3, 2) for k, v in times.items()}
    row.update({f"{k}_ms_median": round(statistics.median(v) * 1e3, 2) for k, v in times.items()})
    row["speedup"] = round(min(times["fp32"]) / min(times["bf16"]), 2)
    row["loss_fp32"] = round(first_loss["fp32"], 5)
    row["loss_bf16"] = round(first_loss["bf16"], 5)
    row["loss_rel_diff"] = round(abs(first_loss["bf16"] - first_loss["fp32"]) / max(abs(first_loss["fp32"]), 1e-12), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per dtype, alternating (default 3)")
    p.add_argument("--only", help="run only the cases whose name contains this text")
    p.add_argument("--out", help="folder for amp-cpu.{md,json} (default benchmarks/results; give one with --only, "
                                 "whose table has only some cases)")
    given = sys.argv[1:] if argv is None else argv
    args = p.parse_args(given)
    command = shlex.join(["python", "benchmarks/amp_cpu.py", *given])
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be >= 1")
    cases = {k: v for k, v in _cases().items() if not args.only or args.only in k}
    if not cases:
        p.error(f"--only {args.only!r} matches no case; cases: {', '.join(_cases())}")
    if args.only and args.out is None:
        p.error("--only writes a table of some cases: give --out (the default folder holds the whole table)")
    out = Path(args.out or "benchmarks/results")
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} is a file, not a folder")
    hardware = f"CPU: {cpu_description()}"
    rows = []
    for name, build in cases.items():
        row = {"case": name, **measure(build, args.steps, args.rounds)}
        print(f"{name}: fp32 {row['fp32_ms_min']} ms, bf16 {row['bf16_ms_min']} ms, {row['speedup']}x", flush=True)
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "hardware": hardware, "steps": args.steps, "rounds": args.rounds, "warmup": WARMUP, "rows": rows}
    atomic_write_text(out / "amp-cpu.json", json.dumps(record, indent=2) + "\n")
    lines = [f"Training step time, fp32 against bf16 autocast, on {hardware}; {args.rounds} alternating rounds of "
             f"{args.steps} steps per dtype (after {WARMUP} warm-up steps each), `{command}`.",
             "", "| step | fp32 ms (min / median) | bf16 ms (min / median) | speed-up (minima) | "
             "loss after one round, fp32 / bf16 (relative difference) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['fp32_ms_min']} / {r['fp32_ms_median']} | {r['bf16_ms_min']} / "
                     f"{r['bf16_ms_median']} | {r['speedup']}x | {r['loss_fp32']} / {r['loss_bf16']} "
                     f"({r['loss_rel_diff']:.2%}) |")
    atomic_write_text(out / "amp-cpu.md", "\n".join(lines) + "\n")
    print(f"wrote {out / 'amp-cpu.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
