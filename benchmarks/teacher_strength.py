"""Table 1's methods with a fully trained teacher: does the teacher's strength decide whether KD pays?

    python benchmarks/teacher_strength.py --out runs/teacher-strength --results benchmarks/results

The reduced CPU run of benchmarks/table1.py trains its ResNet-56 teacher on the same short schedule as
the students, and at that budget the teacher is no better than the plain ResNet-20 (README, Table 1).
In the survey's setting the teacher is trained to convergence first. This runs some of the table's
methods (default ``kd at fsp``) with a zoo teacher (default ``resnet56.fmnist``: 30 epochs on all 60k
images) and everything else exactly as the table ran them: its settings, seeds and data stream are read
from the table's JSON, and each seed is one pack (`zoo.pack.DistillerPack`) with the plain ResNet-20
beside the distilled students. It writes ``teacher-strength.md`` and ``.json``: per method, the mean ±
std over the seeds with the strong teacher, beside the table's numbers with its own short-trained
teacher. Each seed's job resumes where it stopped (``--time-budget`` minutes per call).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import zoo
from zoo.classification.data import load_dataset
from zoo.classification.pack import PackMember
from zoo.io import atomic_write_text
from zoo.train import TrainConfig

_spec = importlib.util.spec_from_file_location("table1", Path(__file__).with_name("table1.py"))
table1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table1)


def job(seed: int, methods: list[str], teacher_name: str) -> dict:
    members = [PackMember("resnet20", "plain", "resnet20")] + [PackMember(m, m, "resnet20", (0,)) for m in methods]
    return {"name": f"strong-teacher-s{seed}", "seed": seed, "teachers": [teacher_name], "members": members}


def table_numbers(table: dict, methods: list[str]) -> dict[str, dict[int, float]]:
    """method -> seed -> top-1 % in the Table 1 run (its own short-trained teacher)."""
    out: dict[str, dict[int, float]] = {}
    for r in table["jobs"]:
        for member, scores in r["top1"].items():
            if member in ["resnet56", "resnet20", *methods]:
                out.setdefault(member, {})[r["seed"]] = scores[0] * 100
    return out


def mean_std(values: list[float]) -> str:
    if not values:
        return "(not run yet)"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f} ({len(values)})"


def markdown(ours: dict[str, dict[int, float]], theirs: dict[str, dict[int, float]], methods: list[str],
             teacher_label: str, table_teacher: str) -> str:
    base_ours = statistics.mean(ours["resnet20"].values()) if ours.get("resnet20") else float("nan")
    base_table = statistics.mean(theirs["resnet20"].values())
    lines = [f"| method | with {teacher_label} (mean ± std, n) | vs ResNet-20 | with the table's own teacher | vs ResNet-20 |",
             "|---|---|---|---|---|"]
    for m in ["resnet20", *methods]:
        mine, table = list(ours.get(m, {}).values()), list(theirs.get(m, {}).values())
        gain = f"{statistics.mean(mine) - base_ours:+.2f}" if mine and m != "resnet20" else ""
        table_gain = f"{statistics.mean(table) - base_table:+.2f}" if m != "resnet20" else ""
        lines.append(f"| {m} | {mean_std(mine)} | {gain} | {mean_std(table)} | {table_gain} |")
    return "\n".join(lines) + f"\n\nThe table's own teacher: {table_teacher}.\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (checkpoints, job results)")
    p.add_argument("--results", help="where teacher-strength.md/.json go (default: --out)")
    p.add_argument("--table", default="benchmarks/results/table1-fmnist.json", help="the Table 1 run to match")
    p.add_argument("--teacher", default="resnet56.fmnist", help="zoo name or folder of the strong teacher")
    p.add_argument("--methods", nargs="+", default=["kd", "at", "fsp"], choices=table1.SINGLE_TEACHER)
    p.add_argument("--seeds", type=int, nargs="+", help="default: the table's seeds")
    p.add_argument("--time-budget", type=float, help="minutes; stop resumably when spent")
    p.add_argument("--device")
    args = p.parse_args(argv)

    table = json.loads(Path(args.table).read_text())
    config = table["config"]
    if config["dataset"] != "fashion-mnist":
        raise SystemExit(f"{args.table} is a {config['dataset']} table; this benchmark uses fashion-mnist teachers")
    seeds = args.seeds or config["seeds"]
    cfg = TrainConfig(**{**config["train"], "progress": False})
    train = load_dataset(config["dataset"], "train")
    if config.get("train_subset"):
        train = train.subset(config["train_subset"])
    test = load_dataset(config["dataset"], "test")
    if config.get("test_subset"):
        test = test.subset(config["test_subset"])

    out = Path(args.out)
    teacher = zoo.load(args.teacher)
    teacher_label = f"{teacher.card.name} ({teacher.card.metrics['top1'] * 100:.2f}%)"
    teacher_file = out / "models" / "strong-teacher.safetensors"
    if not teacher_file.exists():
        table1.save_model(teacher.float(), teacher_file)
    settings = json.loads(json.dumps({"table": args.table, "teacher": teacher.card.name, "methods": args.methods,
                                      "seeds": seeds, "train": asdict(cfg)}))  # as it reads back
    settings_path = out / "settings.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != settings:
        raise SystemExit(f"{out} holds a run with other settings ({settings_path}); use a new --out")
    atomic_write_text(settings_path, json.dumps(settings, indent=2) + "\n")

    deadline = time.monotonic() + 60 * args.time_budget if args.time_budget is not None else None
    results = []
    for seed in seeds:
        result = table1.run_job(job(seed, args.methods, "strong-teacher"), out, train, test, cfg, args.device, deadline)
        if result is None:
            break
        results.append(result)

    ours: dict[str, dict[int, float]] = {}
    for r in results:
        for member, scores in r["top1"].items():
            ours.setdefault(member, {})[r["seed"]] = scores[0] * 100
    table_teacher = mean_std(list(table_numbers(table, []).get("resnet56", {}).values()))
    md = markdown(ours, table_numbers(table, args.methods), args.methods, teacher_label,
                  f"ResNet-56 trained like the students, {table_teacher}")
    results_dir = Path(args.results or out)
    results_dir.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/teacher_strength.py", *(argv if argv is not None else sys.argv[1:])])
    md += f"\n{table['settings_line']}\nReproduce: `{command}`\n"
    atomic_write_text(results_dir / "teacher-strength.md", md)
    atomic_write_text(results_dir / "teacher-strength.json",
                      json.dumps({"settings": settings, "teacher": teacher_label, "command": command,
                                  "jobs": results}, indent=2) + "\n")
    print(md)
    done = len(results) == len(seeds)
    print(f"{len(results)}/{len(seeds)} seeds done" + ("" if done else "; run the same command again to continue"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
