"""Generator compression under the twin protocol: the pretrained CycleGAN teacher, the plain twin and each
recipe's student, one table of quality against MACs and one figure.

    python benchmarks/gan_compression.py --out runs/gan --results benchmarks/results --time-budget 120
    # the same command again resumes (seed after seed); add --publish once it has finished

1. The teacher is the zoo's ``cyclegan-vintagify`` (read from the installed ``vintagify`` package). Its
   images of 2,048 random 128-px crops of the training photos and of the 9 held-out photos are made once
   and cached (`zoo.gan.data.make_pairs`).
2. `benchmarks/twins.py` (`zoo.protocol`) trains, per seed, the plain twin (L1 to the teacher's images)
   and each recipe's student on one budget (``--set``), and writes ``twins-photos-...{md,json}``. A
   student is published only if it beats the twin on the Fréchet distance and on PSNR.
3. Once every seed is done: ``quality-<slug>.md`` (quality against parameters and MACs at
   256x256, with the photo returned unchanged as a no-network reference, beside GAN Compression's
   released CycleGAN models) and ``quality-<slug>.png``
   (held-out photos: input, teacher, twin and each recipe's median-seed student).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from zoo.cli import add_time_budget, parse_overrides
from zoo.gan.adapter import ADAPTER

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the benchmarks' shared helper, also when loaded by path
import protocol_bench  # noqa: E402

TEACHER = "cyclegan-vintagify"
RUN_SETTINGS = {"epochs": 10, **ADAPTER.train_defaults}  # recorded in full: the protocol's shared budget
# mit-han-lab/gan-compression README, "Performance of Released Models" (CycleGAN, horse->zebra; FID on
# Inception-v3 features against real zebra images, a different measure from ours)
ANCHORS = [{"model": "GAN Compression: CycleGAN original (horse->zebra)", "params": 11.4e6, "macs": 56.8e9, "fid": 65.75},
           {"model": "GAN Compression: full pipeline (paper)", "params": 0.342e6, "macs": 2.67e9, "fid": 65.33}]
SIDE = 256


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder (resumed when it exists)")
    p.add_argument("--results", default="benchmarks/results")
    p.add_argument("--student", default="cyclegan-resnet9-ngf16")
    p.add_argument("--recipes", nargs="+", default=["gan-compression", "omgd"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"every arm's shared budget (default {RUN_SETTINGS})")
    p.add_argument("--train-subset", type=int, help="use the first N training crops (default: all 2,048)")
    add_time_budget(p)
    p.add_argument("--device")
    protocol_bench.add_publish_flags(p, "the twin and the winners")
    return p.parse_args(argv)


def quality_stem(spec: Any) -> str:
    """File stem of the quality table and figure of one protocol run: ``quality-<the twins table's slug>``, so
    that runs of other students, recipes or data keep their own files."""
    return "quality-" + spec.slug().removeprefix("twins-")


def _macs(model: torch.nn.Module) -> float:
    from zoo.metrics import count_flops

    return count_flops(model, torch.zeros(1, 3, SIDE, SIDE)) / 2


def _median_models(args: argparse.Namespace, record: dict[str, Any]) -> list[tuple[str, Path]]:
    from zoo import protocol

    out = []
    for arm in [protocol.TWIN, *args.recipes]:
        summary = record["summary"].get(arm)
        if summary and summary["values"]:
            seed = protocol.median_seed(protocol.ArmSummary(**summary))
            out.append((arm, Path(args.out) / "twins" / f"seed-{seed}" / arm))
    return out


def quality_table(args: argparse.Namespace, record: dict[str, Any], path: Path) -> Path:
    """Mean ± std of each metric over the seeds (read from every arm's card), params and MACs at 256 px."""
    import statistics

    import zoo
    from zoo import protocol
    from zoo.hub import read_card
    from zoo.io import atomic_write_text

    teacher = zoo.load(TEACHER)
    rows = [f"| model | method | fd_mnv2 (lower is better) | PSNR dB | SSIM | params | GMACs at {SIDE}px |",
            "|---|---|---|---|---|---|---|",
            f"| `{TEACHER}` (teacher, the reference) | pretrained | 0 | - | 1 | {teacher.card.params / 1e6:.2f}M | "
            f"{_macs(teacher) / 1e9:.2f} |"]
    # a reference with no network: the photo returned unchanged, measured against the teacher's image on the
    # same held-out pairs (the teacher's vintage effect is mild; a student must at least beat doing nothing)
    from zoo.gan.adapter import EVAL_SIDE
    from zoo.gan.data import make_pairs

    identity = ADAPTER.evaluate_model(torch.nn.Identity(), make_pairs(teacher, TEACHER, "test", eval_side=EVAL_SIDE))
    rows.append(f"| the photo unchanged (no network, a reference) | - | {identity['fd_mnv2']:.2f} | {identity['psnr']:.2f} | "
                f"{identity['ssim']:.3f} | 0 | 0 |")
    seeds = [s["seed"] for s in record["seeds"]]
    from zoo.gan.models import build_generator

    student = build_generator(args.student)
    params, macs = sum(p.numel() for p in student.parameters()), _macs(student)
    data = {}
    for arm in [protocol.TWIN, *args.recipes]:
        cards = [read_card(Path(args.out) / "twins" / f"seed-{s}" / arm) for s in seeds
                 if (Path(args.out) / "twins" / f"seed-{s}" / arm / "README.md").exists()]
        if not cards:
            continue
        cells = []
        for m in ("fd_mnv2", "psnr", "ssim"):
            values = [c.metrics[m] for c in cards]
            mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:.3f} ± {std:.3f}" if m == "ssim" else f"{mean:.2f} ± {std:.2f}")
            data.setdefault(arm, {})[m] = {"mean": mean, "std": std, "values": values}
        label = "twin (plain: L1 to the teacher's images)" if arm == protocol.TWIN else arm
        rows.append(f"| {args.student} | {label} | {' | '.join(cells)} | {params / 1e6:.2f}M | {macs / 1e9:.2f} |")
    rows += ["", "Published anchors (reported, not reproduced; FID on Inception-v3 features against real target-domain "
                 "images, not comparable with fd_mnv2):", "",
             "| model | params | GMACs | FID |", "|---|---|---|---|"]
    rows += [f"| {a['model']} | {a['params'] / 1e6:.3f}M | {a['macs'] / 1e9:.2f} | {a['fid']:.2f} |" for a in ANCHORS]
    rows += ["", f"Compression: {teacher.card.params / params:.1f}x fewer parameters and {_macs(teacher) / macs:.1f}x fewer "
                 f"MACs than the teacher (MACs: torch's FlopCounterMode / 2 at {SIDE}x{SIDE}). Seeds {seeds}; "
                 f"mean ± sample std; {record.get('settings_line', '')}"]
    atomic_write_text(path, "\n".join(rows) + "\n")
    atomic_write_text(path.with_suffix(".json"), json.dumps({"seeds": seeds, "arms": data, "identity": identity,
                                                             "params": params, "macs": macs,
                                                             "teacher_params": teacher.card.params,
                                                             "teacher_macs": _macs(teacher), "anchors": ANCHORS},
                                                            indent=2) + "\n")
    return path


def figure(args: argparse.Namespace, record: dict[str, Any], path: Path, count: int = 4) -> Path:
    """Held-out photos: input, teacher, twin and each recipe's median-seed student, with each image's PSNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import zoo
    from zoo.gan.data import held_out
    from zoo.gan.evaluate import translate

    names, photos = held_out(SIDE)
    photos = photos[:count]
    teacher_images = translate(zoo.load(TEACHER), photos)
    columns = [("input", photos.float() / 255), ("teacher", teacher_images)]
    for arm, folder in _median_models(args, record):
        columns.append((f"{arm}", translate(zoo.load(folder), photos)))
    fig, axes = plt.subplots(count, len(columns), figsize=(2.0 * len(columns), 2.0 * count), squeeze=False)
    for row in range(count):
        for col, (title, images) in enumerate(columns):
            ax = axes[row][col]
            ax.imshow(images[row].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= 2:
                mse = float(((images[row] - teacher_images[row]) ** 2).mean())
                ax.set_xlabel(f"{10 * torch.log10(torch.tensor(1 / max(mse, 1e-12))).item():.1f} dB", fontsize=7)
            if row == 0:
                ax.set_title(title, fontsize=8)
        axes[row][0].set_ylabel(names[row], fontsize=7)
    return protocol_bench.save_figure(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = {**RUN_SETTINGS, **parse_overrides(args.set)}
    twin_args = protocol_bench.twin_args("gan", TEACHER, args.student, args.recipes, args.seeds, "photos", Path(args.out),
                                         args.results, settings, train_subset=args.train_subset,
                                         time_budget=args.time_budget, device=args.device, publish=args.publish,
                                         publish_dest=args.publish_dest, overwrite=args.overwrite)
    code = protocol_bench.load_script("twins").main(twin_args)
    if code:
        return code
    from zoo import protocol

    spec = protocol.ProtocolSpec("gan", TEACHER, args.student, args.recipes, args.seeds, "photos",
                                 parse_overrides([f"{k}={json.dumps(v)}" for k, v in settings.items()]), args.train_subset)
    record = json.loads((Path(args.results) / f"{spec.slug()}.json").read_text())
    if len(record["seeds"]) == len(args.seeds):
        stem = Path(args.results) / quality_stem(spec)
        print(f"table: {quality_table(args, record, stem.with_suffix('.md'))}")
        print(f"figure: {figure(args, record, stem.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
