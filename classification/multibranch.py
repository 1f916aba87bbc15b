"""Multi-branch ResNets for ONE (Lan et al. 2018) and OKDDip (Chen et al. 2020a).

The low stages are shared; the last stage, pooling and classifier are copied into B branches, each
of which is, with the trunk, exactly the single-branch network (trunk + branch i = a stock ResNet).
Module paths for taps: ``branches.{i}`` (branch logits), ``branches.{i}.pool`` (its pooled
features), ``trunk`` (shared features) and ``gate`` (ONE's branch weights, when built with a gate).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from zoo.losses.online import ONEGate

from .models import CifarResNet, build_model


class Branch(nn.Module):
    def __init__(self, stage: nn.Module, pool: nn.Module, fc: nn.Module) -> None:
        super().__init__()
        self.stage, self.pool, self.fc = stage, pool, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stage(x)), 1))


class MultiBranchResNet(nn.Module):
    """A shared trunk (conv1, bn1, layer1, layer2) and ``branches`` copies of (layer3, avgpool, fc).

    ``forward`` returns the mean of the branch logits (the ensemble); ``single(i)`` gives branch i
    as a stock `CifarResNet`, which is what gets deployed and published.
    """

    def __init__(self, arch: str, branches: int = 3, gate: bool = False, **config) -> None:
        super().__init__()
        if branches < 2:
            raise ValueError(f"a multi-branch network needs at least 2 branches, got {branches}")
        base = build_model(arch, **config)
        if not isinstance(base, CifarResNet):
            raise ValueError(f"multi-branch training supports the CIFAR ResNets, not {arch!r}")
        self.arch, self.config = arch, dict(base.config)
        self.trunk = nn.Sequential(base.conv1, base.bn1, nn.ReLU(inplace=False), base.layer1, base.layer2)
        self.branches = nn.ModuleList([Branch(base.layer3, base.avgpool, base.fc)])
        for _ in range(branches - 1):
            fresh = build_model(arch, **config)  # independently initialised branches
            self.branches.append(Branch(fresh.layer3, fresh.avgpool, fresh.fc))
        self.gate = ONEGate(base.layer2[-1].conv2.out_channels, branches) if gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.trunk(x)
        if self.gate is not None:
            self.gate(shared)  # its output is tapped by the ONE loss
        return torch.stack([b(shared) for b in self.branches]).mean(0)

    def single(self, index: int = 0) -> CifarResNet:
        """Trunk + branch ``index`` as a stock network (same weights, copied)."""
        model = build_model(self.arch, **self.config)
        conv1, bn1, _, layer1, layer2 = self.trunk
        branch = self.branches[index]
        for name, module in (("conv1", conv1), ("bn1", bn1), ("layer1", layer1), ("layer2", layer2),
                             ("layer3", branch.stage), ("fc", branch.fc)):
            getattr(model, name).load_state_dict(copy.deepcopy(module.state_dict()))
        return model.to(next(self.parameters()).device)
