"""Seconds per student per 50k-image epoch of ResNet-56 -> ResNet-20 KD, through the trainer users run.

    python benchmarks/kd_epoch_gpu.py [--batch-size 512] [--steps 60] [--pack 4] [--out benchmarks/results]

Modes, each `zoo.trainer.fit` on Fashion-MNIST held on the device (augmented there):

- ``eager``: one student, the ``kd`` recipe (what ``zoo distill`` runs);
- ``packed``: ``--pack`` students (kd, at, fitnet, rkd, ...) sharing one teacher forward per step
  (`zoo.pack.DistillerPack`, as benchmarks/table1 trains them);
- ``compiled`` and ``compiled + packed``: the same with ``TrainConfig.compile`` (`--compile auto`:
  ``reduce-overhead`` on a GPU, i.e. each compiled forward and backward replayed as CUDA graphs;
  inductor's ``default`` on the CPU);
- ``eager, NaN check every step``: the eager mode with ``finite_check_every=1``, the trainer's behaviour
  before its checks were deferred on a GPU (`zoo.trainer.finite_check_interval`), side by side.

On a GPU the table also counts the host syncs per timed step (``torch.cuda.set_sync_debug_mode``):
each one stops the host from queueing work while the GPU runs.

Each mode is timed from the end of step ``--warmup`` to the end of step ``--steps`` of one run, so setup,
compilation and checkpoint writing fall outside; the table reports the median of ``--rounds``.
It says which device it ran on (a GPU's name, or the CPU).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from zoo.classification.data import load_dataset
from zoo.classification.models import build_model
from zoo.classification.pack import PackMember, distill_pack
from zoo.io import atomic_write_text
from zoo.metrics import hardware_description
from zoo.trainer import COMPILE_MODES, TrainConfig

PACK_RECIPES = ["kd", "at", "fitnet", "rkd", "spkd", "crd", "fsp", "irg"]
EPOCH_IMAGES = 50_000  # the survey's CIFAR-10 epoch, the unit of the targets


def time_mode(members: list[PackMember], teacher: torch.nn.Module, train, test, cfg: TrainConfig, steps: int,
              warmup: int, device: torch.device) -> tuple[float, float]:
    """Seconds per optimizer step of the pack, and host syncs per step (GPU only; 0 on the CPU): the clock is
    read (after a device sync) at the end of step ``warmup`` and of step ``steps`` of one run, so setup,
    compilation, CUDA-graph capture and the final checkpoint fall outside it."""
    marks: dict[int, float] = {}
    syncs = warnings.catch_warnings(record=True)

    def on_step_end(step: int) -> None:
        if step in (warmup, steps):
            if device.type == "cuda":
                if step == steps:
                    torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
                if step == warmup:
                    torch.cuda.set_sync_debug_mode(1)  # warn at each synchronizing call
            marks[step] = time.perf_counter()

    if cfg.compile != "off":
        torch._dynamo.reset()  # every round compiles afresh, outside the timed steps
    with tempfile.TemporaryDirectory() as out, syncs as seen:
        warnings.simplefilter("always")
        try:
            distill_pack(members, [teacher], train, test, TrainConfig(**{**cfg.__dict__, "max_steps": steps}), out,
                         device=device, on_step_end=on_step_end)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    sync_warnings = [w for w in seen if "synchronizing" in str(w.message)]
    for w in seen:  # pass the run's other warnings on
        if w not in sync_warnings:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    n_syncs = len(sync_warnings)
    return (marks[steps] - marks[warmup]) / (steps - warmup), n_syncs / (steps - warmup)


def write_results(out: Path, device: torch.device, args: argparse.Namespace, students: dict[str, int],
                  times: dict[str, list[float]], syncs: dict[str, list[float]]) -> tuple[str, str]:
    """Write the table (median over the rounds each mode has finished) as markdown and JSON; return both texts."""
    steps_per_epoch = EPOCH_IMAGES / args.batch_size
    rows = []
    for name, seconds in times.items():
        if seconds:
            step = statistics.median(seconds)
            rows.append((name, step * 1000, step * steps_per_epoch / students[name], max(syncs[name])))
    where = hardware_description(device)
    rounds = sorted({len(t) for t in times.values()})
    done = f"{rounds[-1]} rounds" if len(rounds) == 1 else f"1 to {rounds[-1]} rounds (cut short)"
    env = f"{where}, {args.amp}, batch {args.batch_size}, data on the device, {args.steps - args.warmup} timed steps x {done}"
    counted = device.type == "cuda"  # set_sync_debug_mode exists for CUDA only
    table = "\n".join(["| mode | ms/step (median) | s per student per 50k-image epoch | host syncs/step |",
                       "|---|---|---|---|"]
                      + [f"| {n} | {ms:.1f} | {sec:.2f} | {f'{sy:.2f}' if counted else 'n/a (GPU only)'} |"
                         for n, ms, sec, sy in rows])
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if device.type == "cuda" else "cpu"
    atomic_write_text(out / f"kd_epoch-{tag}.md", f"{table}\n\n{env}\n")
    atomic_write_text(out / f"kd_epoch-{tag}.json", json.dumps({"env": env, "device": where, "rows": rows,
                                                                "raw_s": times, "host_syncs_per_step": syncs},
                                                               indent=2) + "\n")
    return table, env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pack", type=int, default=4, help="students in the packed mode")
    p.add_argument("--amp", default="bf16")
    p.add_argument("--device")
    p.add_argument("--compile", default="auto", choices=["auto", *COMPILE_MODES],
                   help="mode of the compiled rows (auto: reduce-overhead on a GPU, default on the CPU; off: none)")
    p.add_argument("--train-subset", type=int, help="fewer training images (the epoch math still uses 50k)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    if not 1 <= args.pack <= len(PACK_RECIPES) or args.steps <= args.warmup or args.warmup < 1 or args.rounds < 1:
        raise SystemExit(f"--pack must be 1..{len(PACK_RECIPES)}, --warmup >= 1, --steps > --warmup and --rounds >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train = load_dataset("fashion-mnist", "train")
    if args.train_subset:
        train = train.subset(args.train_subset)
    train = train.to(device)
    test = load_dataset("fashion-mnist", "test").subset(args.batch_size)
    torch.manual_seed(0)
    teacher = build_model("resnet56", in_channels=1).to(device).eval()
    epochs_needed = (args.steps * args.batch_size) // len(train) + 1
    cfg = TrainConfig(epochs=epochs_needed, batch_size=args.batch_size, amp=args.amp, progress=False,
                      checkpoint_every=10**9)  # logged every log_every steps, as users' runs are
    single = [PackMember("kd", "kd", "resnet20", (0,))]
    packed = [PackMember(r, r, "resnet20", (0,)) for r in PACK_RECIPES[:args.pack]]
    # cheapest first: a run cut short by a lease's end has written the rows it finished (write_results)
    modes = {"eager (1 student)": (single, cfg),
             "eager (1 student), NaN check every step": (single, TrainConfig(**{**cfg.__dict__, "finite_check_every": 1})),
             f"packed ({args.pack} students, one teacher forward)": (packed, cfg)}
    compile_mode = ("reduce-overhead" if device.type == "cuda" else "default") if args.compile == "auto" else args.compile
    if compile_mode != "off":
        compiled = TrainConfig(**{**cfg.__dict__, "compile": compile_mode})
        modes[f"compiled {compile_mode} (1 student)"] = (single, compiled)
        modes[f"compiled {compile_mode} + packed ({args.pack} students)"] = (packed, compiled)
    times: dict[str, list[float]] = {m: [] for m in modes}
    syncs: dict[str, list[float]] = {m: [] for m in modes}
    students = {name: len(members) for name, (members, _) in modes.items()}
    for r in range(args.rounds):
        for name, (members, mode_cfg) in modes.items():
            seconds, per_step = time_mode(members, teacher, train, test, mode_cfg, args.steps, args.warmup, device)
            times[name].append(seconds)
            syncs[name].append(per_step)
            print(f"round {r + 1}: {name}: {seconds * 1000:.1f} ms/step, {per_step:.2f} host syncs/step", flush=True)
            table, env = write_results(Path(args.out), device, args, students, times, syncs)
    print(f"\n{table}\n\n{env}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
