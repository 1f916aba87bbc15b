"""Face-recognition distillation under the twin protocol: teacher, plain twin and each recipe's student on the
cjk-fonts identities, one table and a ROC figure.

    python benchmarks/face_kd.py --out runs/face --results benchmarks/results --time-budget 120
    # the same command again resumes (teacher first, then seed after seed); add --publish once it has finished
    python benchmarks/face_kd.py --teacher face-resnet20.cjk-fonts --out runs/face15 --recipes proxyless-kd ddl
    # an existing teacher (a zoo entry or a finished run folder): no teacher training

1. The teacher (``--teacher-arch``, default face-resnet56) is trained with ArcFace on the 2,000 training
   identities, resumably, in ``OUT/teacher``; or ``--teacher`` names one that exists (it is not published
   again).
2. `benchmarks/twins.py` (`zoo.protocol`) trains the plain twin (ArcFace alone) and each recipe's student
   (``--recipes``) for every seed on one budget (``--set``) and writes ``twins-cjk-fonts-...{md,json}``.
3. Once every seed is done: ``face-cjk-fonts-roc.png``, the ROC curves (TAR against FAR, log scale) of the
   teacher, the twin and each recipe's median-seed student on all pairs of the 500 held-out identities.
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

DATA = "cjk-fonts"
TEACHER_ARCH = "face-resnet56"
TEACHER_SETTINGS = {"epochs": 30, "lr": 0.1, "batch_size": 128, "warmup_epochs": 1}
RUN_SETTINGS = {"epochs": 15, "lr": 0.1, "batch_size": 128, "warmup_epochs": 1}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--teacher-arch", help=f"the architecture of the teacher trained in OUT/teacher (default {TEACHER_ARCH})")
    p.add_argument("--teacher", help="an existing teacher instead: a zoo entry (e.g. face-resnet20.cjk-fonts) or a "
                                     "finished run folder; --teacher-arch and --teacher-set then do not apply")
    p.add_argument("--student", default="face-resnet8")
    p.add_argument("--recipes", nargs="+", default=["proxyless-kd", "embedding-kd", "ddl"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"teacher training settings (default {TEACHER_SETTINGS})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"every arm's shared budget (default {RUN_SETTINGS})")
    p.add_argument("--train-subset", type=int, help="the first N training images (whole identities first)")
    add_time_budget(p)
    p.add_argument("--device")
    protocol_bench.add_publish_flags(p, "teacher, twin and winners")
    args = p.parse_args(argv)
    if args.teacher and (args.teacher_set or args.teacher_arch):
        p.error("--teacher names an existing teacher: --teacher-arch and --teacher-set do not apply")
    args.teacher_arch = args.teacher_arch or TEACHER_ARCH
    return args


def resolve_teacher(name: str) -> str:
    """``name`` as the protocol takes a teacher: a zoo entry's name as it is, a folder as its path.
    Raises FileNotFoundError for a folder without a card, KeyError for an unknown entry."""
    import zoo
    from zoo.hub import CARD_FILE

    path = Path(name)
    if path.is_dir():
        if not (path / CARD_FILE).exists():
            raise FileNotFoundError(f"--teacher {name}: the folder has no model card ({CARD_FILE}): an unfinished run?")
        return str(path)
    zoo.card(name)  # KeyError naming the entries when there is none of that name
    return name


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The shared budget (``--set`` over `RUN_SETTINGS`), once every argument the run will use is checked:
    before the teacher trains (hours), not after. Raises ValueError (seeds, recipes, settings), KeyError
    (an unknown recipe or architecture); SystemExit for a ``--set`` without ``=``."""
    from zoo import protocol
    from zoo.recipes import get_recipe

    settings = {**RUN_SETTINGS, **parse_overrides(args.set)}
    parse_overrides(args.teacher_set)
    protocol.ProtocolSpec("face", args.teacher or f"{args.out}/teacher", args.student, args.recipes, args.seeds, DATA,
                          settings, args.train_subset)
    for name in args.recipes:
        get_recipe(name)
    if not args.teacher:  # with a teacher given, twins.py checks the data and the student before any arm trains
        adapter = get_adapter("face")
        train, _ = adapter.datasets(DATA, train_subset=args.train_subset)
        for arch in (args.student, args.teacher_arch):
            adapter.build_student(arch, train)
    return settings


def train_teacher(args: argparse.Namespace, deadline: float | None) -> Path | None:
    """The teacher's run folder once finished, else None (stopped at the deadline)."""
    settings = {**TEACHER_SETTINGS, **parse_overrides(args.teacher_set)}
    return protocol_bench.train_teacher("face", args.teacher_arch, DATA, Path(args.out) / "teacher", settings,
                                   train_subset=args.train_subset, device=args.device, deadline=deadline)


def roc_figure(args: argparse.Namespace, teacher: str, table_json: Path, path: Path) -> Path:
    """TAR against FAR (log scale) on all pairs of the held-out identities, one curve per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import zoo
    from zoo import protocol
    from zoo.face.evaluate import all_pairs, cosine_matrix, embed

    record = json.loads(table_json.read_text())
    summary = {arm: protocol.ArmSummary(**s) for arm, s in record["summary"].items()}
    _, test = get_adapter("face").datasets(DATA)
    models = [("teacher", zoo.load(teacher))]
    for arm in [protocol.TWIN, *args.recipes]:
        if arm in summary and summary[arm].values:
            seed = protocol.median_seed(summary[arm])
            models.append((f"{arm} (seed {seed})", zoo.load(Path(args.out) / "twins" / f"seed-{seed}" / arm)))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, model in models:
        pos, neg = all_pairs(cosine_matrix(embed(model, test.images)), test.labels)
        neg_sorted = torch.sort(neg, descending=True).values
        fars = torch.logspace(-5, 0, 60)
        tars = []
        for far in fars.tolist():
            k = min(len(neg_sorted) - 1, max(0, int(far * len(neg_sorted))))
            tars.append(float((pos > neg_sorted[k]).float().mean()))
        ax.plot(fars.numpy(), tars, label=f"{name}: TAR@1e-3 {model.card.metrics['tar_far_1e-3'] * 100:.1f}%")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"verification on the {DATA} held-out identities")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return protocol_bench.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = deadline_in(args.time_budget)
    try:
        teacher = resolve_teacher(args.teacher) if args.teacher else None
        settings = check_arguments(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"face_kd.py: error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 2
    if teacher is None:
        teacher_dir = train_teacher(args, deadline)
        if teacher_dir is None:
            return 0
        teacher = str(teacher_dir)
    remaining = None if deadline is None else max(0.0, (deadline - time.monotonic()) / 60)
    twin_args = protocol_bench.twin_args("face", teacher, args.student, args.recipes, args.seeds, DATA,
                                         Path(args.out), args.results, settings, train_subset=args.train_subset,
                                         time_budget=remaining, device=args.device, publish=args.publish,
                                         publish_dest=args.publish_dest, overwrite=args.overwrite)
    if args.publish and not args.teacher:
        protocol_bench.publish_teacher(Path(teacher), f"{args.teacher_arch}.{DATA}", args.publish_dest, args.overwrite,
                                       f"The face teacher: {args.teacher_arch} trained with ArcFace on the {DATA} "
                                       "training identities.")
    code = protocol_bench.load_script("twins").main(twin_args)
    if code:
        return code
    from zoo import protocol

    spec = protocol.ProtocolSpec("face", teacher, args.student, args.recipes, args.seeds, DATA, settings,
                                 args.train_subset)
    table_json = Path(args.results) / f"{spec.slug()}.json"
    record = json.loads(table_json.read_text())
    if len(record["seeds"]) == len(args.seeds):
        print(f"figure: {roc_figure(args, teacher, table_json, Path(args.results) / f'face-{DATA}-roc.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
