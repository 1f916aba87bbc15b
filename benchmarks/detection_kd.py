"""Chen et al. 2017 on the detection scenes: teacher, plain student and distilled student, side by side.

    python benchmarks/detection_kd.py --out runs/detection --results benchmarks/results
    python benchmarks/detection_kd.py --out runs/detection --set epochs=2 --train-count 256   # a quick look

Three runs through `zoo.detection.train` with the same settings: the teacher (Faster R-CNN on a
ResNet-56 backbone) and the student (ResNet-20 backbone) trained on their own losses, then the student
distilled from that teacher in backbone, RPN and RoI head (Chen et al. 2017). Each run checkpoints as it
trains; running the command again resumes an interrupted run exactly and skips finished ones.
``detection-<dataset>.md`` and ``.json`` in ``--results`` hold box mAP on the test scenes (measured when
each run is exported), parameters and training time.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from zoo import hub
from zoo.detection.train import DEFAULTS, train_detector
from zoo.io import atomic_write_text
from zoo.trainer import STATE_FILE, config_from_overrides

RUNS = (("teacher", "frcnn-resnet56", None), ("student", "frcnn-resnet20", None), ("chen2017", "frcnn-resnet20", "teacher"))
ROW_NAMES = {"teacher": "teacher (ResNet-56)", "student": "student (ResNet-20), no KD",
             "chen2017": "student (ResNet-20), Chen et al. 2017"}


def run_all(out: Path, settings: dict[str, Any], train_count: int | None, test_count: int | None,
            command: str) -> dict[str, Any]:
    """Train (or resume, or skip) each run; return the exported cards' numbers."""
    cfg = config_from_overrides(DEFAULTS, settings)
    rows, cards = {}, {}
    for role, arch, teacher in RUNS:
        run_dir = out / role
        if not (run_dir / hub.CARD_FILE).exists():
            train_detector(arch, run_dir, teacher=str(out / teacher) if teacher else None, cfg=cfg,
                           train_count=train_count, test_count=test_count, resume=(run_dir / STATE_FILE).exists(),
                           command=command)
        card = cards[role] = hub.read_card(run_dir)
        rows[role] = {"architecture": card.architecture, "method": card.method, "params": card.params,
                      "metrics": card.metrics, "wall_time_s": card.training.wall_time_s,
                      "hardware": card.training.hardware,
                      "history": card.extra.get("history", []), "run": str(run_dir)}
    return {"dataset": cards["student"].dataset, "rows": rows,
            "settings": {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "seed")},
            "data": cards["student"].extra.get("data"), "command": command}


def markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    lines = ["| run | params | bbox mAP | mAP@.5 | mAP@.75 | AR@100 | train time |", "|---|---|---|---|---|---|---|"]
    for role, row in rows.items():
        m = row["metrics"]
        lines.append(f"| {ROW_NAMES[role]} | {row['params'] / 1e6:.2f}M | {100 * m['bbox_mAP']:.2f} | "
                     f"{100 * m['bbox_mAP_50']:.2f} | {100 * m['bbox_mAP_75']:.2f} | {100 * m['bbox_mAR_100']:.2f} | "
                     f"{row['wall_time_s'] / 60:.0f} min |")
    gain = 100 * (rows["chen2017"]["metrics"]["bbox_mAP"] - rows["student"]["metrics"]["bbox_mAP"])
    s, d = results["settings"], results["data"] or {}
    lines += ["", f"Distillation changes the student's box mAP by {gain:+.2f} points. "
              f"{s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, seed {s['seed']}; "
              f"{d.get('train', {}).get('count', '?')} train / {d.get('test', {}).get('count', '?')} test scenes. "
              "Hardware: " + "; ".join(f"{r} on {rows[r]['hardware']}" for r in rows) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/detection_kd.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run directories go here")
    p.add_argument("--results", help="where detection-<dataset>.md/.json go (default: --out)")
    p.add_argument("--train-count", type=int)
    p.add_argument("--test-count", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training setting for every run")
    args = p.parse_args(argv)
    from zoo.cli import parse_overrides

    command = "python benchmarks/detection_kd.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = run_all(Path(args.out), parse_overrides(args.set), args.train_count, args.test_count, command)
    dest = Path(args.results or args.out)
    stem = f"detection-{results['dataset']}"
    atomic_write_text(dest / f"{stem}.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(dest / f"{stem}.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
