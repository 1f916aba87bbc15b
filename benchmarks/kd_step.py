"""Time one ResNet-56 -> ResNet-20 KD step: kdzoo's trainer vs a minimal hand-written loop vs torchdistill.

All three do the same work on the same batch: teacher forward (no grad), student forward,
0.1*CE + 0.9*T^2*KL(T=4), backward, SGD step. kdzoo is timed through `zoo.trainer.fit` itself (the
loop users run, Distiller + `kd` recipe), as the difference between two runs of different length,
so its setup cancels out. torchdistill (PyPI) is timed with its own forward-hook manager and KDLoss.
Rounds alternate between the variants (at least 7); the table reports, for each, the minimum, median
and maximum per-step time over the rounds, the ratio of its minimum to the minimal loop's minimum
(noise on a shared machine only ever adds time, so the minima are the least disturbed figures), and
the median and range of its per-round ratios to the minimal loop (each ratio pairs two measurements
taken seconds apart). All in this one run.

    python benchmarks/kd_step.py [--batch-size 128] [--steps 20] [--rounds 9] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.classification.data import ImageDataset
from zoo.classification.models import build_model
from zoo.distiller import Distiller
from zoo.metrics import cpu_description
from zoo.recipes import get_recipe
from zoo.trainer import TrainConfig, fit


WARMUP = 3  # untimed steps before each measurement (allocator and kernel caches)


def make_models(in_channels: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    teacher = build_model("resnet56", in_channels=in_channels).eval().requires_grad_(False)
    student = build_model("resnet20", in_channels=in_channels)
    return teacher, student


def timed_loop(batch: dict, steps: int, teacher: torch.nn.Module, student: torch.nn.Module, loss_fn) -> float:
    """Seconds per step of: teacher forward (no grad), student forward, ``loss_fn``, backward, SGD step."""
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = batch["inputs"], batch["labels"]
    student.train()
    for i in range(WARMUP + steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        with torch.no_grad():
            t_logits = teacher(x)
        loss = loss_fn(student(x), t_logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def minimal_loop(batch: dict, steps: int, in_channels: int) -> float:
    def loss_fn(s_logits, t_logits, y):
        kd = F.kl_div(F.log_softmax(s_logits / 4, 1), F.softmax(t_logits / 4, 1), reduction="batchmean") * 16
        return 0.1 * F.cross_entropy(s_logits, y) + 0.9 * kd

    return timed_loop(batch, steps, *make_models(in_channels), loss_fn)


def torchdistill_loop(batch: dict, steps: int, in_channels: int) -> float:
    from torchdistill.core.forward_hook import ForwardHookManager
    from torchdistill.losses.mid_level import KDLoss

    teacher, student = make_models(in_channels)
    s_hooks, t_hooks = ForwardHookManager("cpu"), ForwardHookManager("cpu")
    s_hooks.add_hook(student, "fc", requires_input=False, requires_output=True)
    t_hooks.add_hook(teacher, "fc", requires_input=False, requires_output=True)
    criterion = KDLoss("fc", "output", "fc", "output", temperature=4.0, alpha=0.1, beta=0.9)

    def loss_fn(s_logits, t_logits, y):  # torchdistill reads both outputs from its hooks' io dicts
        return criterion(s_hooks.pop_io_dict(), t_hooks.pop_io_dict(), y)

    return timed_loop(batch, steps, teacher, student, loss_fn)


class FixedBatch:
    """A BatchSource that always yields the same batch (no data pipeline in the timing)."""

    def __init__(self, batch: dict, n: int) -> None:
        self._batch, self._n = batch, n

    def __len__(self) -> int:
        return self._n

    def batch(self, indices, generator=None, augment=False, device=None):
        return self._batch


def kdzoo_fit(batch: dict, steps: int, in_channels: int) -> float:
    def run(n: int) -> float:
        teacher, student = make_models(in_channels)
        example = {k: v[:8] for k, v in batch.items()}
        distiller = Distiller(student, teacher, get_recipe("kd"), example)
        cfg = TrainConfig(epochs=1, batch_size=len(batch["labels"]), max_steps=n, amp="off", channels_last=False,
                          progress=False, checkpoint_every=10**9, log_every=10**9)
        data = FixedBatch(batch, len(batch["labels"]) * (2 * steps + 2))
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            fit(distiller, data, cfg, out, device="cpu")
            return time.perf_counter() - t0

    short, long = run(WARMUP), run(WARMUP + steps)
    return (long - short) / steps


VARIANTS = {"minimal PyTorch loop": minimal_loop, "kdzoo (zoo.trainer.fit + Distiller)": kdzoo_fit,
            "torchdistill 1.1.5 (ForwardHookManager + KDLoss)": torchdistill_loop}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=9, help="alternating rounds (at least 7)")
    p.add_argument("--channels", type=int, default=1, help="1: Fashion-MNIST 28x28, 3: CIFAR 32x32")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    if args.rounds < 7:
        p.error("--rounds must be at least 7: with fewer, a 5% difference is inside the noise of a shared machine")
    size = 28 if args.channels == 1 else 32
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, args.channels, size, size), generator=g, dtype=torch.uint8)
    data = ImageDataset("bench", "train", images, torch.arange(args.batch_size) % 10, tuple("0123456789"),
                        (0.5,) * args.channels, (0.25,) * args.channels)
    batch = data.batch(torch.arange(args.batch_size))
    for fn in VARIANTS.values():  # one untimed pass of each: first-use costs (oneDNN, imports) go here
        fn(batch, 1, args.channels)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, fn in VARIANTS.items():
            times[name].append(fn(batch, args.steps, args.channels))
            print(f"round {r + 1}: {name}: {times[name][-1] * 1000:.1f} ms/step", flush=True)
    table, env, summary = summarize(times, f"{cpu_description()}, fp32, batch {args.batch_size}, {args.steps} steps "
                                           f"x {args.rounds} alternating rounds")
    print(f"\n{table}\n\n{env}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "kd_step-cpu.md").write_text(f"{table}\n\n{env}\n")
    (out / "kd_step-cpu.json").write_text(json.dumps({"env": env, "summary": summary, "raw_s": times}, indent=2) + "\n")


BASE = "minimal PyTorch loop"


def summarize(times: dict[str, list[float]], env: str) -> tuple[str, str, dict[str, dict[str, float]]]:
    """The markdown table, the environment line and per variant: min/median/max ms per step, the ratio of
    minima, and the median/min/max of the per-round ratios to the minimal loop."""
    base = times[BASE]
    summary = {}
    for name, values in times.items():
        paired = [v / b for v, b in zip(values, base)]
        summary[name] = {"min_ms": min(values) * 1000, "median_ms": statistics.median(values) * 1000,
                         "max_ms": max(values) * 1000, "ratio_of_min": min(values) / min(base),
                         "paired_ratio_median": statistics.median(paired), "paired_ratio_min": min(paired),
                         "paired_ratio_max": max(paired)}
    lines = ["| KD step (ResNet-56 -> ResNet-20) | ms/step min | median | max | ratio of minima | per-round ratio, median (range) |",
             "|---|---|---|---|---|---|"]
    for name, r in summary.items():
        lines.append(f"| {name} | {r['min_ms']:.1f} | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['ratio_of_min']:.3f}x "
                     f"| {r['paired_ratio_median']:.3f}x ({r['paired_ratio_min']:.3f}-{r['paired_ratio_max']:.3f}) |")
    return "\n".join(lines), env, summary

if __name__ == "__main__":
    main()
