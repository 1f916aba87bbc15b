"""Run by test_ddp.py, alone or under torchrun: distil a BN-free student a few steps, save its weights."""
import sys

import torch
from torch import nn

from zoo.classification.data import ImageDataset
from zoo.distiller import Distiller
from zoo.distributed import init_from_env, is_main_process
from zoo.recipes import get_recipe
from zoo.trainer import TrainConfig, fit


def net(seed: int, width: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))


def main(out: str) -> None:
    init_from_env()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 12, 12), generator=g, dtype=torch.uint8)
    data = ImageDataset("synthetic", "train", images, torch.arange(64) % 10, tuple("0123456789"), (0.5,), (0.3,), 2)
    recipe = get_recipe("kd")  # no BatchNorm anywhere: per-rank statistics would differ from the full batch's
    distiller = Distiller(net(1, 8), net(2, 16).eval(), recipe, data.batch(torch.arange(4)), num_examples=64)
    cfg = TrainConfig(epochs=2, batch_size=16, max_steps=6, amp="off", channels_last=False, progress=False,
                      lr=0.05, seed=3)
    fit(distiller, data, cfg, out, device="cpu")
    if is_main_process():
        torch.save(distiller.state_dict(), f"{out}/weights.pt")


if __name__ == "__main__":
    main(sys.argv[1])
