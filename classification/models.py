"""CIFAR-style ResNets of He et al. (2016), "Deep Residual Learning for Image Recognition", sec. 4.2.

The network is a 3x3 stem followed by three stages of ``n`` basic blocks each (16, 32 and 64
channels, feature maps of 32, 16 and 8 pixels on CIFAR), global average pooling and a linear
classifier: ``6n + 2`` weighted layers in all, so resnet20 has n = 3 and resnet56 has n = 9.
Downsampling shortcuts follow the paper's option A (identity with stride-2 subsampling and zero
padding of the new channels, no extra parameters) by default; option B (1x1 conv + BN
projection), as used by several KD code bases, is available with ``shortcut="B"``.

Module names follow torchvision (``conv1``, ``bn1``, ``layer1``..``layer3``, ``avgpool``, ``fc``)
so that taps can address them by path.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = (8, 14, 20, 32, 44, 56, 110)
STAGE_WIDTHS = (16, 32, 64)


class _ZeroPadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the extra output channels."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual shortcut (He et al. 2016, fig. 2)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = _ZeroPadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images (He et al. 2016, sec. 4.2)."""

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: str = "A",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (e.g. {DEPTHS}), got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if in_channels < 1 or num_classes < 1:
            raise ValueError("in_channels and num_classes must be positive")
        n = (depth - 2) // 6
        self.config = {
            "depth": depth,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "shortcut": shortcut,
        }
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        in_planes = STAGE_WIDTHS[0]
        stages = []
        for i, planes in enumerate(STAGE_WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _builder(depth: int) -> Callable[..., CifarResNet]:
    def build(**config) -> CifarResNet:
        return CifarResNet(depth=depth, **config)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} for small images (He et al. 2016), n = {(depth - 2) // 6}."
    return build


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {f"resnet{d}": _builder(d) for d in DEPTHS}


EXTERNAL = "torchvision:"  # architectures of torchvision's model zoo: "torchvision:mobilenet_v3_small"


def build_model(arch: str, **config) -> nn.Module:
    """Build a classification architecture by name, e.g. ``build_model("resnet20", in_channels=1)``, or
    any of torchvision's classifiers as ``"torchvision:NAME"`` (random init; ``num_classes`` in config).
    The model carries ``architecture`` and ``config`` (what a card records to rebuild it)."""
    if arch.startswith(EXTERNAL):
        import torchvision

        name = arch[len(EXTERNAL):]
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ValueError(f"torchvision has no classification model {name!r}; see torchvision.models.list_models()")
        if config.get("in_channels", 3) != 3:
            raise ValueError(f"{arch} takes 3-channel images; load the data with 3 channels (image folders: channels=3)")
        config = {k: v for k, v in config.items() if k != "in_channels"}
        model = torchvision.models.get_model(name, weights=None, **config)
        model.architecture, model.config = arch, dict(config)
        return model
    check_architecture(arch)
    builder = ARCHITECTURES[arch]
    config.pop("depth", None)
    model = builder(**config)
    model.architecture = arch
    return model


def check_architecture(arch: str) -> None:
    """Raises ``ValueError`` for a name `build_model` does not know (torchvision's are checked when built)."""
    if not arch.startswith(EXTERNAL) and arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}, "
                         f"or torchvision's as {EXTERNAL}NAME")


def describe_model(model: nn.Module) -> tuple[str, dict]:
    """(architecture, config) that `build_model` rebuilds ``model`` from: a kdzoo model's own, or, for a
    torchvision classifier built by the user, the torchvision builder whose model has exactly its
    parameter names and shapes. Raises ValueError for a module it cannot describe."""
    if getattr(model, "architecture", None) and isinstance(getattr(model, "config", None), dict):
        arch, config = model.architecture, dict(model.config)
        try:
            rebuilt = build_model(arch, **config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"the model says it is {arch!r} with {config}, which build_model cannot build ({e}); "
                             "zoo.load could not rebuild it") from None
        theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} != theirs:
            raise ValueError(f"the model says it is {arch!r} with {config}, but build_model({arch!r}) has other "
                             "parameters; zoo.load could not rebuild it")
        return arch, config
    if isinstance(model, CifarResNet):
        return f"resnet{model.config['depth']}", dict(model.config)
    import inspect

    import torchvision

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        for name in torchvision.models.list_models(module=torchvision.models):
            builder = torchvision.models.get_model_builder(name)
            returns = inspect.signature(builder).return_annotation
            if getattr(returns, "__name__", returns) != type(model).__name__:
                continue
            candidate = builder(weights=None, num_classes=linears[-1].out_features)
            if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
                return EXTERNAL + name, {"num_classes": linears[-1].out_features}
    raise ValueError(f"cannot describe a {type(model).__name__} so that zoo.load can rebuild it: give the student "
                     f"as an architecture name ({', '.join(ARCHITECTURES)} or {EXTERNAL}NAME), or give the module "
                     "`architecture` and `config` attributes that build_model understands")


def save_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a run's model (fp32 safetensors, its builder ``config`` in the metadata) atomically.

    The format of intermediate run files (students of a seed, teachers of a table); zoo entries are
    checkpoint folders with a card (`zoo.hub.save`)."""
    import json

    from safetensors.torch import save

    from zoo.io import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(save(state, metadata={"config": json.dumps(model.config)})))


def load_weights(path: str | os.PathLike) -> nn.Module:
    """The model a `save_weights` file holds, in eval mode."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    model = build_model(f"resnet{config.pop('depth')}", **config)
    model.load_state_dict(load_file(str(path)))
    return model.eval()
