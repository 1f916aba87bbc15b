"""Segmentation distillation under the twin protocol: teacher, plain twin, SKD and CWD students, one table.

    python benchmarks/segmentation_kd.py --out runs/seg --results benchmarks/results --time-budget 120
    # the same command again resumes where it stopped (teacher first, then seed after seed);
    # add --publish once it has finished to put the teacher, the twin and every winner in the zoo

1. The teacher, ``lraspp-mobilenetv2`` on torchvision's ImageNet MobileNetV2, is fine-tuned on the scenes
   (``--teacher-set``), resumably, in ``OUT/teacher``.
2. `benchmarks/twins.py` (the twin protocol, `zoo.protocol.RunnerProtocol`) trains the plain twin and
   each recipe's student (``--recipes``) for every seed on one budget (``--set``) and writes
   ``twins-<data>-...{md,json}`` in ``--results``.
3. Once every seed is done: a figure of a few test scenes (image, ground truth, teacher, twin, each
   recipe's median-seed student) in ``--results/segmentation-<data>.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from zoo.cli import add_time_budget, deadline_in, parse_overrides
from zoo.tasks import get_adapter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the benchmarks' shared helper, also when loaded by path
import protocol_bench  # noqa: E402

TEACHER_SETTINGS = {"epochs": 12, "lr": 0.01, "batch_size": 32, "warmup_epochs": 1}
RUN_SETTINGS = {"epochs": 12, "lr": 0.05, "batch_size": 32, "warmup_epochs": 1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--data", default="fmnist-scenes", help="fmnist-scenes, stardist-nuclei or a folder")
    p.add_argument("--teacher-arch", default="lraspp-mobilenetv2")
    p.add_argument("--student", default="lraspp-resnet8")
    p.add_argument("--recipes", nargs="+", default=["skd", "cwd", "pixel-kd", "pair-kd", "cwd+pixel"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"teacher training settings (default {TEACHER_SETTINGS})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"every arm's shared budget (default {RUN_SETTINGS})")
    p.add_argument("--train-subset", type=int)
    add_time_budget(p)
    p.add_argument("--device")
    protocol_bench.add_publish_flags(p, "teacher, twin and winners")
    return p.parse_args(argv)


def train_teacher(args: argparse.Namespace, deadline: float | None) -> Path | None:
    """The teacher's run folder once finished, else None (stopped at the deadline)."""
    settings = {**TEACHER_SETTINGS, **parse_overrides(args.teacher_set)}
    return protocol_bench.train_teacher("segmentation", args.teacher_arch, args.data, Path(args.out) / "teacher", settings,
                                   train_subset=args.train_subset, device=args.device, deadline=deadline)


def figure(args: argparse.Namespace, teacher_dir: Path, table_json: Path, path: Path, count: int = 4) -> Path:
    """Test scenes side by side: image, ground truth, teacher, twin and each recipe's median-seed student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import zoo
    from zoo import protocol
    from zoo.segmentation.adapter import voc_palette

    record = json.loads(table_json.read_text())
    summary = {arm: protocol.ArmSummary(**s) for arm, s in record["summary"].items()}
    _, test = get_adapter("segmentation").datasets(args.data)
    batch = test.batch(torch.arange(count))
    columns: list[tuple[str, Any]] = [("image", None), ("ground truth", batch["labels"])]
    models = [("teacher", zoo.load(teacher_dir))]
    for arm in [protocol.TWIN, *args.recipes]:
        if arm in summary and summary[arm].values:
            seed = protocol.median_seed(summary[arm])
            models.append((f"{arm} (seed {seed})", zoo.load(Path(args.out) / "twins" / f"seed-{seed}" / arm)))
    with torch.no_grad():
        for name, model in models:
            columns.append((f"{name}\nmIoU {model.card.metrics['mIoU'] * 100:.1f}", model(batch["inputs"]).argmax(1)))
    palette = voc_palette()
    fig, axes = plt.subplots(count, len(columns), figsize=(1.6 * len(columns), 1.6 * count), squeeze=False)
    for row in range(count):
        for col, (title, masks) in enumerate(columns):
            ax = axes[row][col]
            shown = batch["inputs"][row].permute(1, 2, 0).numpy() if masks is None else palette[masks[row].numpy()]
            ax.imshow(shown)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=7)
    return protocol_bench.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = deadline_in(args.time_budget)
    teacher_dir = train_teacher(args, deadline)
    if teacher_dir is None:
        return 0
    twins = protocol_bench.load_script("twins")
    remaining = None if deadline is None else max(0.0, (deadline - time.monotonic()) / 60)
    settings = {**RUN_SETTINGS, **parse_overrides(args.set)}
    twin_args = protocol_bench.twin_args("segmentation", str(teacher_dir), args.student, args.recipes, args.seeds,
                                         args.data, Path(args.out), args.results, settings,
                                         train_subset=args.train_subset, time_budget=remaining, device=args.device,
                                         publish=args.publish, publish_dest=args.publish_dest, overwrite=args.overwrite)
    if args.publish:
        protocol_bench.publish_teacher(teacher_dir, f"{args.teacher_arch}.{args.data}", args.publish_dest, args.overwrite,
                                       f"The segmentation teacher: {args.teacher_arch} (ImageNet MobileNetV2 backbone) "
                                       f"fine-tuned on {args.data}.")
    code = twins.main(twin_args)
    if code:
        return code
    from zoo import protocol

    spec = protocol.ProtocolSpec("segmentation", str(teacher_dir), args.student, args.recipes, args.seeds, args.data,
                                 settings, args.train_subset)
    table_json = Path(args.results) / f"{spec.slug()}.json"
    record = json.loads(table_json.read_text())
    if len(record["seeds"]) == len(args.seeds):
        print(f"figure: {figure(args, teacher_dir, table_json, Path(args.results) / f'segmentation-{args.data}.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
