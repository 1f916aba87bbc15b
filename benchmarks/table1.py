"""Reproduce Table 1 of the survey (14 KD methods, ResNet-56 -> ResNet-20, 3 runs each) on Fashion-MNIST.

    python benchmarks/table1.py --out runs/table1 --results benchmarks/results            # the full table
    python benchmarks/table1.py --out $OUT/table1 --time-budget 9                          # a 9-minute chunk
    python benchmarks/table1.py --dataset cifar10 --download --out runs/table1-cifar10    # CIFAR-10, online

Every row is trained with the same settings (``--epochs``, ``--batch-size``, ``--lr``, ``--set``) and
the recipe's published loss weights, through `zoo.trainer.fit`. Work is split in jobs, each a pack of
runs trained in one process on one data stream (`zoo.pack`), so that a teacher's forward is shared by
every method distilling from it and small CNNs keep a GPU busy:

1. ``teachers-s{seed}``: ResNet-56 and ResNet-20 trained with cross-entropy (rows ``resnet56``, ``resnet20``).
2. ``methods-s{seed}``: KD, CRD, FitNet, AT, AFD, FSP, RKD, IRG, SPKD from the seed-0 ResNet-56; DML (3
   students), ONE (3 branches), OKDDip (3 peers, leader deployed); ALTKD from the three ResNet-56 of
   seeds 0, 1, 2; and TAKD's assistant, a ResNet-32 distilled (KD) from the seed-0 ResNet-56.
3. ``takd-s{seed}``: TAKD's student, a ResNet-20 distilled (KD) from that seed's assistant.

Each job checkpoints as it trains and stops cleanly at ``--time-budget`` minutes; running the same
command again resumes where it stopped (exactly) and skips finished jobs. Results go to
``--results`` (default: ``--out``): ``table1-<dataset>.csv`` (``method,seed,top1``, top-1 in % on the
whole test split, deployed student of online methods), ``.md`` (mean +- std beside the survey's
CIFAR-10 numbers), ``.png`` and ``.json`` (every cohort member, job timings, hardware, settings).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from zoo.classification.data import ImageDataset, load_dataset
from zoo.classification.models import load_weights, save_weights
from zoo.classification.pack import PackMember, distill_pack
from zoo.io import atomic_write, atomic_write_text
from zoo.metrics import hardware_description
from zoo.cli import add_time_budget, deadline_in, parse_overrides
from zoo.recipes import get_recipe, override
from zoo.trainer import STATE_FILE, TrainConfig

# Table 1 of the survey: top-1 (%) on CIFAR-10, ResNet-56 -> ResNet-20, mean of 3 runs.
SURVEY_CIFAR10 = {
    "resnet56": 94.01, "resnet20": 92.36, "kd": 92.43, "crd": 92.69, "takd": 92.83, "fitnet": 92.86,
    "at": 92.89, "afd": 92.90, "fsp": 92.48, "rkd": 92.89, "irg": 92.95, "spkd": 93.14, "dml": 92.93,
    "one": 93.08, "okddip": 93.24, "altkd": 92.53,
}
CATEGORY = {
    "resnet56": "trained directly", "resnet20": "trained directly", "kd": "logits", "crd": "logits",
    "takd": "logits", "fitnet": "feature fitting", "at": "features from maps", "afd": "features from maps",
    "fsp": "features from maps", "rkd": "structural", "irg": "structural", "spkd": "structural",
    "dml": "online", "one": "online", "okddip": "online", "altkd": "multi-teacher",
}
NOTES = {"takd": "ResNet-32 assistant", "dml": "3 students", "one": "3 branches", "okddip": "3 students (peers + leader)",
         "altkd": "3 teachers (ResNet-56 seeds 0-2)"}
METHODS = list(SURVEY_CIFAR10)
SINGLE_TEACHER = ["kd", "crd", "fitnet", "at", "afd", "fsp", "rkd", "irg", "spkd"]
ONLINE = ["dml", "one", "okddip"]
SHORT_NAMES = {"fashion-mnist": "fmnist"}


PRETRAINED = "pretrained-teacher"  # the model --teacher names, saved under this name in the run's models/


def jobs(seeds: list[int], pretrained_teacher: bool = False) -> list[dict[str, Any]]:
    """The table's jobs in the order they run; each lists the models it needs from earlier jobs.

    Every teacher-based row distils from the table's own seed-0 ResNet-56, or with ``pretrained_teacher``
    from the model ``--teacher`` named; ALTKD's other two teachers are the table's ResNet-56 seeds 1 and 2."""
    out = [{"name": f"teachers-s{s}", "seed": s, "teachers": [],
            "members": [PackMember("resnet56", "plain", "resnet56"), PackMember("resnet20", "plain", "resnet20")]}
           for s in seeds]
    altkd_teachers = [f"resnet56-s{s}" for s in (seeds * 3)[:3]]
    for s in seeds:
        teachers = [PRETRAINED if pretrained_teacher else f"resnet56-s{seeds[0]}"] + altkd_teachers[1:]
        members = [PackMember(m, m, "resnet20", (0,)) for m in SINGLE_TEACHER]
        members += [PackMember(m, m, "resnet20") for m in ONLINE]
        members += [PackMember("altkd", "altkd", "resnet20", (0, 1, 2)),
                    PackMember("takd_assistant", "kd", "resnet32", (0,))]
        out.append({"name": f"methods-s{s}", "seed": s, "teachers": teachers, "members": members})
    for s in seeds:
        out.append({"name": f"takd-s{s}", "seed": s, "teachers": [f"takd_assistant-s{s}"],
                    "members": [PackMember("takd", "kd", "resnet20", (0,))]})
    return out


def run_job(job: dict[str, Any], out: Path, train: ImageDataset, test: ImageDataset, cfg: TrainConfig,
            device: str | None, deadline: float | None) -> dict[str, Any] | None:
    """Train (or resume) one job; returns its result, or None when it stopped at the deadline."""
    job_dir = out / "jobs" / job["name"]
    result_path = job_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    teachers = [load_weights(out / "models" / f"{name}.safetensors") for name in job["teachers"]]
    job_cfg = TrainConfig(**{**asdict(cfg), "seed": job["seed"]})
    t0 = time.perf_counter()
    res = distill_pack(job["members"], teachers, train, test, job_cfg, job_dir,
                       resume=(job_dir / STATE_FILE).exists(), device=device, deadline=deadline)
    wall_path = job_dir / "wall_seconds.json"  # training wall time summed over the calls that ran this job
    wall = json.loads(wall_path.read_text())["seconds"] if wall_path.exists() else 0.0
    wall += time.perf_counter() - t0
    atomic_write_text(wall_path, json.dumps({"seconds": round(wall, 1)}) + "\n")
    if not res.finished:
        print(f"{job['name']}: stopped at step {res.step}/{res.total_steps} (time budget); rerun to resume", flush=True)
        return None
    for name, students in res.students.items():
        save_weights(students[0], out / "models" / f"{name}-s{job['seed']}.safetensors")
    result = {"job": job["name"], "seed": job["seed"], "top1": res.top1, "steps": res.total_steps,
              "wall_seconds": round(wall, 1), "teachers": job["teachers"], "hardware": hardware_description(device)}
    atomic_write_text(result_path, json.dumps(result, indent=2) + "\n")
    print(f"{job['name']}: done: " + ", ".join(f"{k}={v[0] * 100:.2f}" for k, v in res.top1.items()), flush=True)
    return result


def collect(results: list[dict[str, Any]]) -> list[tuple[str, int, float]]:
    """CSV rows (method, seed, top-1 %) from finished jobs, in the table's order."""
    rows = []
    for r in results:
        for member, scores in r["top1"].items():
            if member in SURVEY_CIFAR10:
                rows.append((member, r["seed"], round(scores[0] * 100, 2)))
    return sorted(rows, key=lambda row: (METHODS.index(row[0]), row[1]))


def summarize(rows: list[tuple[str, int, float]]) -> dict[str, tuple[float, float, int, int]]:
    """method -> (mean, sample std, runs that finished, runs that diverged (NaN)); mean/std over finished runs."""
    by_method: dict[str, list[float]] = {}
    for method, _, top1 in rows:
        by_method.setdefault(method, []).append(top1)
    summary = {}
    for m, values in by_method.items():
        ok = [v for v in values if math.isfinite(v)]
        mean = statistics.mean(ok) if ok else math.nan
        summary[m] = (mean, statistics.stdev(ok) if len(ok) > 1 else 0.0, len(ok), len(values) - len(ok))
    return summary


def markdown(summary: dict[str, tuple[float, float, int, int]], dataset: str, settings: str,
             notes: dict[str, str] = NOTES) -> str:
    base = summary.get("resnet20", (math.nan, 0, 0))[0]
    lines = [f"| method | kind | {dataset} top-1 % (mean ± std, n) | vs ResNet-20 | survey CIFAR-10 % | survey vs ResNet-20 | note |",
             "|---|---|---|---|---|---|---|"]
    for m in METHODS:
        if m not in summary:
            lines.append(f"| {m} | {CATEGORY[m]} | (not run yet) | | {SURVEY_CIFAR10[m]:.2f} | | {notes.get(m, '')} |")
            continue
        mean, std, n, diverged = summary[m]
        delta = "" if m == "resnet20" else f"{mean - base:+.2f}"
        survey_delta = "" if m == "resnet20" else f"{SURVEY_CIFAR10[m] - SURVEY_CIFAR10['resnet20']:+.2f}"
        note = "; ".join(x for x in [notes.get(m, ""), f"**diverged (NaN loss) in {diverged} run(s)**" if diverged else ""] if x)
        lines.append(f"| {m} | {CATEGORY[m]} | {mean:.2f} ± {std:.2f} ({n}) | {delta} | {SURVEY_CIFAR10[m]:.2f} "
                     f"| {survey_delta} | {note} |")
    return "\n".join(lines) + f"\n\n{settings}\n"


def plot(summary: dict[str, tuple[float, float, int, int]], path: Path, dataset: str,
         teacher: tuple[str, float] | None = None) -> None:
    """Gain over the plain ResNet-20: ours (error bar = std over seeds) beside the survey's CIFAR-10.
    ``teacher``: (name, top-1 %) of the trained teacher the KD rows learnt from (``--teacher``), if any."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'kdzoo[plot]')", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m not in ("resnet56", "resnet20") and m in summary and summary[m][2]]
    if "resnet20" not in summary or not methods:
        return
    base = summary["resnet20"][0]
    y = range(len(methods))
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(methods) + 1.5))
    ax.barh([i - 0.2 for i in y], [summary[m][0] - base for m in methods], height=0.4,
            xerr=[summary[m][1] for m in methods], label=f"kdzoo, {dataset} (mean ± std)", color="tab:blue")
    ax.barh([i + 0.2 for i in y], [SURVEY_CIFAR10[m] - SURVEY_CIFAR10["resnet20"] for m in methods], height=0.4,
            label="survey, CIFAR-10 (mean of 3)", color="tab:gray")
    if "resnet56" in summary:
        ax.axvline(summary["resnet56"][0] - base, color="tab:blue", linestyle="--", linewidth=1,
                   label="the table's own ResNet-56 (kdzoo)" if teacher else "ResNet-56 teacher (kdzoo)")
    if teacher:
        ax.axvline(teacher[1] - base, color="tab:green", linestyle="--", linewidth=1,
                   label=f"teacher of the KD rows: {teacher[0]}")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(list(y), methods)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 gain over plain ResNet-20 (percentage points)")
    ax.set_title("Table 1: ResNet-56 -> ResNet-20" + (f" (teacher {teacher[0]})" if teacher else ""))
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def results_stem(dataset: str, teacher: str | None) -> str:
    """``table1-fmnist``; with ``--teacher resnet56.fmnist``: ``table1-fmnist-teacher-resnet56-fmnist``."""
    stem = f"table1-{SHORT_NAMES.get(dataset, dataset)}"
    return stem + f"-teacher-{re.sub(r'[^A-Za-z0-9]+', '-', teacher).strip('-')}" if teacher else stem


def write_results(results: list[dict[str, Any]], results_dir: Path, dataset: str, meta: dict[str, Any]) -> Path:
    stem = results_stem(dataset, meta["config"].get("teacher"))
    rows = collect(results)
    results_dir.mkdir(parents=True, exist_ok=True)
    lines = ["method,seed,top1"] + [f"{m},{s},{t:.2f}" for m, s, t in rows]
    atomic_write_text(results_dir / f"{stem}.csv", "\n".join(lines) + "\n")
    summary = summarize(rows)
    atomic_write_text(results_dir / f"{stem}.md", markdown(summary, dataset, meta["settings_line"], meta["notes"]))
    atomic_write_text(results_dir / f"{stem}.json", json.dumps({**meta, "jobs": results}, indent=2) + "\n")
    plot(summary, results_dir / f"{stem}.png", dataset, meta.get("teacher"))
    return results_dir / f"{stem}.csv"


TEACHER_OF = {"takd": "takd_assistant", "takd_assistant": "resnet56"}  # whose model each shipped student learnt from


def publish_models(out: Path, results: list[dict[str, Any]], names: list[str], train: ImageDataset,
                   test: ImageDataset, cfg: TrainConfig, dataset: str, dest: Path | None, device: str | None,
                   command: str, settings_line: str, table: str, pretrained: torch.nn.Module | None = None) -> None:
    """Publish the best seed of each method in ``names`` (``takd_assistant``: TAKD's ResNet-32) as a zoo
    entry whose card carries its Table 1 row (mean +- std over the seeds, and the seed shipped), the
    hardware and wall time of the packed job that trained it, and ``command`` to reproduce it.
    ``table`` (the results' file stem) is recorded in the row; ``pretrained``: the zoo model ``--teacher``
    named, the teacher on the cards of the rows it taught."""
    import tempfile

    from zoo.classification.publish import export_run
    from zoo.publish import publish
    from zoo.recipes import recipe_dict

    per_seed: dict[str, dict[int, float]] = {}
    for r in results:
        for member, scores in r["top1"].items():
            per_seed.setdefault(member, {})[r["seed"]] = scores[0] * 100
    short = SHORT_NAMES.get(dataset, dataset)
    for method in names:
        seeds = {s: v for s, v in per_seed.get(method, {}).items() if math.isfinite(v)}
        if not seeds:
            raise SystemExit(f"--publish {method}: no finished run of it in {out}")
        seed = max(seeds, key=seeds.get)
        model = load_weights(out / "models" / f"{method}-s{seed}.safetensors")
        values = list(seeds.values())
        row = {"method": method, "mean": round(statistics.mean(values), 2),
               "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0, "runs": len(values),
               "shipped_seed": seed, "shipped_top1": round(seeds[seed], 2),
               "survey_cifar10": SURVEY_CIFAR10.get(method), "table": table}
        recipe = "kd" if method in ("takd", "takd_assistant") else method
        teacher = TEACHER_OF.get(method, "resnet56")
        teacher_seed = seed if method == "takd" else 0
        teacher_top1 = per_seed.get(teacher, {}).get(teacher_seed)
        teacher_name = f"{teacher} (Table 1 run, seed {teacher_seed})"
        if pretrained is not None and teacher == "resnet56":
            teacher_name, teacher_top1 = pretrained.card.name, pretrained.card.metrics["top1"] * 100
        arch = f"resnet{model.config['depth']}"
        name = f"{arch}-{'takd-assistant' if method == 'takd_assistant' else method}.{short}"
        job = next(r for r in results if r["seed"] == seed and method in r["top1"])
        pack_size = len(job["top1"])
        info = {"dataset": train, "test": test, "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
                "hardware": job.get("hardware"), "wall_time_s": job["wall_seconds"],
                "history": [], "train_config": {**asdict(cfg), "seed": seed},
                "recipe": recipe_dict(get_recipe(recipe)) if method not in ("resnet56", "resnet20") else None,
                "teachers": [{"name": teacher_name,
                              "metrics": {"top1": round(teacher_top1 / 100, 6)} if teacher_top1 is not None else {},
                              "params": None}] if method not in ("resnet56", "resnet20", "dml", "one", "okddip") else []}
        with tempfile.TemporaryDirectory() as tmp:
            export_run(model, info, Path(tmp) / name, name=name, command=command)
            source = pretrained.card.name if pretrained is not None else "ResNet-56"
            what = (f"ResNet-32 teacher assistant of TAKD, distilled (KD) from {source}" if method == "takd_assistant"
                    else f"ResNet-20 trained with {method.upper()} ({CATEGORY[method]})")
            card = publish(Path(tmp) / name, name, dest_root=dest, extra={"table1": row}, command=command,
                           description=f"{what}: a student of the survey's Table 1 reproduced on {dataset}.",
                           notes=f"Table 1 row: {row['mean']:.2f} +- {row['std']:.2f} top-1 over {row['runs']} seeds; "
                                 f"seed {seed} shipped. Trained in job {job['job']}, a pack of {pack_size} runs "
                                 f"sharing each teacher forward (wall time is the whole pack's). {settings_line}")
        print(f"published {card.name}: top1 {card.metrics['top1'] * 100:.2f}% (row {row['mean']:.2f} ± {row['std']:.2f})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory: checkpoints, models, job results")
    p.add_argument("--results", help="where the csv/md/png/json go (default: --out)")
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "cifar10"])
    p.add_argument("--data-root")
    p.add_argument("--download", action="store_true", help="download CIFAR-10 through torchvision (online)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear lr warmup; without it ResNet-56 at lr 0.1 and IRG's student diverged on short runs")
    p.add_argument("--train-subset", type=int, help="train on the first N training images (reduced CPU runs)")
    p.add_argument("--test-subset", type=int, help="evaluate on the first N test images (smoke tests only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more training settings for all rows")
    p.add_argument("--device")
    add_time_budget(p)
    p.add_argument("--teacher", metavar="ZOO_NAME_OR_FOLDER",
                   help="distil the teacher-based rows from this trained ResNet-56 instead of the table's own seed-0 "
                        "one (the survey's teacher was trained to convergence first); the resnet56 row stays the "
                        "table's own. Results go to table1-<dataset>-teacher-<name>.*")
    p.add_argument("--publish", nargs="+", metavar="METHOD",
                   help="after all jobs: publish the best seed of these methods (e.g. takd_assistant crd spkd) to the zoo")
    p.add_argument("--publish-dest", help="folder to publish into (default: the bundled weights/)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = deadline_in(args.time_budget)
    out = Path(args.out)
    settings = {**parse_overrides(args.set), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                "warmup_epochs": args.warmup_epochs}
    _, cfg = override(get_recipe("plain"), TrainConfig(), settings)
    run_config = {"dataset": args.dataset, "seeds": args.seeds, "train_subset": args.train_subset,
                  "test_subset": args.test_subset, "train": {k: v for k, v in asdict(cfg).items()
                                                             if k not in ("progress", "seed", "tensorboard")}}
    if args.teacher:  # (absent otherwise, so runs made before --teacher existed still resume)
        run_config["teacher"] = args.teacher
    config_path = out / "config.json"
    if config_path.exists():
        saved = json.loads(config_path.read_text())
        if saved != json.loads(json.dumps(run_config)):
            raise SystemExit(f"{out} holds a table run with other settings ({config_path}); use a new --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, json.dumps(run_config, indent=2) + "\n")
    train = load_dataset(args.dataset, "train", args.data_root, args.download)
    test = load_dataset(args.dataset, "test", args.data_root, args.download)
    if args.train_subset:
        train = train.subset(args.train_subset)
    if args.test_subset:
        test = test.subset(args.test_subset)
    if args.device and args.device.startswith("cuda") or (not args.device and torch.cuda.is_available()):
        train = train.to(args.device or "cuda")  # device-resident data, augmented on the device
    pretrained, notes = None, dict(NOTES)
    if args.teacher:
        import zoo

        pretrained = zoo.load(args.teacher)
        if getattr(pretrained, "config", {}).get("depth") is None:
            raise SystemExit(f"--teacher {args.teacher}: not a CIFAR-style ResNet of the zoo")
        teacher_file = out / "models" / f"{PRETRAINED}.safetensors"
        if not teacher_file.exists():
            save_weights(pretrained.float(), teacher_file)
        notes["altkd"] = f"3 teachers ({pretrained.card.name} + ResNet-56 seeds 1-2)"
    subset = f", first {len(train)} training images" if args.train_subset else ""
    meta = {"dataset": args.dataset, "hardware": hardware_description(args.device), "config": run_config,
            "settings_line": (f"{args.dataset}, {cfg.epochs} epochs{subset}, batch {cfg.batch_size}, lr {cfg.lr} "
                              f"{cfg.schedule} ({cfg.warmup_epochs:g} warmup epochs), {cfg.optimizer}, wd {cfg.weight_decay}, seeds {args.seeds}, "
                              f"top-1 on {len(test)} test images; trained on {hardware_description(args.device)}."
                              + (f" Teacher of the KD rows: {pretrained.card.name} "
                                 f"({pretrained.card.metrics['top1'] * 100:.2f}%); the resnet56 row is the table's own "
                                 "ResNet-56, trained like the students." if pretrained is not None else "")),
            "notes": notes,
            "teacher": (pretrained.card.name, pretrained.card.metrics["top1"] * 100) if pretrained is not None else None}
    results = []
    table_jobs = jobs(args.seeds, pretrained_teacher=pretrained is not None)
    for job in table_jobs:
        missing = [t for t in job["teachers"] if not (out / "models" / f"{t}.safetensors").exists()]
        if missing:
            print(f"{job['name']}: waiting for {missing}", flush=True)
            break
        result = run_job(job, out, train, test, cfg, args.device, deadline)
        if result is None:
            break
        results.append(result)
    csv_path = write_results(results, Path(args.results or out), args.dataset, meta)
    done = len(results) == len(table_jobs)
    if args.publish:
        if not done:
            raise SystemExit("--publish needs every job finished; run the table to the end first")
        publish_models(out, results, args.publish, train.to("cpu"), test, cfg, args.dataset,
                       Path(args.publish_dest) if args.publish_dest else None, args.device,
                       shlex.join(["python", "benchmarks/table1.py", *(sys.argv[1:] if argv is None else argv)]),
                       meta["settings_line"], results_stem(args.dataset, args.teacher), pretrained)
    print(f"{len(results)}/{len(table_jobs)} jobs done; results in {csv_path}"
          + ("" if done else "; run the same command again to continue"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
