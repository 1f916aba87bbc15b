"""Pack several independent distillations into one trainable module that shares teachers and data.

Small CNNs leave a GPU idle between kernel launches, and a frozen teacher's forward is the same
work for every recipe that distils from it. A ``DistillerPack`` trains N Distillers (KD, FitNet,
CRD, DML, ... each with its own students, terms and connectors) on one data stream: every step
runs each distinct teacher once, and each member computes its own loss from the shared outputs.

The members stay independent: they share no parameter, so the gradient of the summed loss with
respect to a member's parameters is that member's gradient alone, and SGD/AdamW update every
parameter on its own. A packed member therefore follows the same trajectory as the same recipe
trained alone on the same data stream (tested bit for bit), except for losses that draw from the
global random generator (CRD's negatives), whose draws interleave differently. With fp16 autocast
one grad scaler serves the pack (an overflow in one member skips the step for all); bf16 needs none.

`zoo.trainer.fit` trains a pack like any Distiller: loss parts are logged as ``member/part``. A member
whose loss becomes NaN/inf is stopped (``failed_at`` records the step, in the checkpoint too) while
the others go on, so one diverging method does not end a whole table run. Checked every step (on the
CPU), a failed member is dropped from that very step's loss and keeps the weights it had. With the
trainer's deferred checks (on a GPU, `zoo.trainer.finite_check_interval`: no host sync per step) its
loss is masked out on the device from the step it fails at, and it leaves the forward at the next
check; until then its own weights take the non-finite update (they are reported as failed, never
evaluated), while the others' gradients are untouched.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import nn

from .distiller import Distiller
from .trainer import TrainModule


class DistillerPack(TrainModule):
    """Named Distillers trained together on one batch stream, each distinct teacher run once per step."""

    def __init__(self, members: Mapping[str, Distiller], *, isolate_failures: bool = True) -> None:
        super().__init__()
        if not members:
            raise ValueError("a DistillerPack needs at least one member")
        bad = [name for name in members if not name or "/" in name or "." in name]
        if bad:
            raise ValueError(f"member names must be non-empty and contain no '/' or '.': {bad}")
        staged = [name for name, m in members.items() if len(m.stages()) > 1]
        if staged:
            raise ValueError(f"members {staged} train an adversary in its own optimizer stage, which a pack does not "
                             "step; distil them alone (zoo.distill)")
        self.members = nn.ModuleDict(dict(members))
        self.isolate_failures = isolate_failures
        # Step at which each member's loss became NaN/inf (-1: never). Part of the checkpoint, so a
        # resumed pack keeps a failed member stopped.
        self.register_buffer("failed_at", torch.full((len(members),), -1, dtype=torch.long))
        self._step = 0
        self._deferred = False
        self._known_failed: set[int] | None = None  # host copy of failed_at, for deferred checks
        self._running_index: tuple[list[int], torch.Tensor] | None = None

    def defer_finite_checks(self, deferred: bool) -> None:
        """Called by `zoo.trainer.fit`: check members' losses on the device (read at `check_finite`) or every step."""
        self._deferred = deferred
        self._known_failed = None

    def check_finite(self) -> None:
        """Deferred mode: read which members failed since the last check, warn once for each, stop running them."""
        if not (self._deferred and self.isolate_failures):
            return
        failed_at = self.failed_at.tolist()
        failed = {i for i, s in enumerate(failed_at) if s >= 0}
        names = list(self.members)
        if self._known_failed is not None:  # (None: no step ran since a start or resume; nothing new)
            for i in sorted(failed - self._known_failed):
                warnings.warn(f"pack member {names[i]!r}: loss is not finite at step {failed_at[i]}; "
                              "it stopped training there, the others go on", RuntimeWarning, stacklevel=2)
        self._known_failed = failed
        if len(failed) == len(names):
            raise RuntimeError(f"every member of the pack has failed: {self.failed}")

    @property
    def failed(self) -> dict[str, int]:
        """Members whose loss became non-finite, with the step it happened at."""
        return {name: int(s) for name, s in zip(self.members, self.failed_at.tolist()) if s >= 0}

    def train(self, mode: bool = True) -> "DistillerPack":
        super().train(mode)
        for member in self.members.values():
            member.train(mode)  # keeps every teacher in eval mode
        return self

    def compilable_networks(self) -> list[nn.Module]:
        """Every member's students and teachers (a shared teacher listed once per member)."""
        return [net for member in self.members.values() for net in member.compilable_networks()]

    @property
    def may_skip_parameters(self) -> bool:
        return any(m.may_skip_parameters for m in self.members.values())

    @property
    def isolates_failures(self) -> bool:  # (TrainModule) a failing member stops alone, the others go on
        return self.isolate_failures

    def isolate_nonfinite(self, names: list[str], step: int) -> list[str]:
        """Called by the trainer before a checkpoint with the names of non-finite state tensors
        (`zoo.trainer.nonfinite_state`): a member that owns one is stopped like a member whose loss went
        non-finite (its weights are reported as failed, never evaluated). Returns the names that belong
        to no member (none, for a pack)."""
        members = list(self.members)
        rest = []
        for name in names:
            path = name.split(":")[1] if name.startswith("optimizer:") else name
            owner = next((i for i, m in enumerate(members) if path.startswith(f"members.{m}.")), None)
            if owner is None:
                rest.append(name)
            elif int(self.failed_at[owner]) < 0:
                self.failed_at[owner] = step
                warnings.warn(f"pack member {members[owner]!r}: its state is not finite at step {step} ({path}); "
                              "it stops training here, the others go on", RuntimeWarning, stacklevel=2)
        if self.isolate_failures and len(self.failed) == len(members):
            raise RuntimeError(f"every member of the pack has failed: {self.failed}")
        if not self.isolate_failures:
            return names
        if self._deferred:
            self._known_failed = None  # re-read failed_at at the next step
        return rest

    def batch_requirements(self) -> list[tuple[int, str]]:
        """Every member's (see `Distiller.batch_requirements`), named by member."""
        return [(n, f"pack member {name!r}, {why}") for name, m in self.members.items()
                for n, why in m.batch_requirements()]

    @property
    def part_names(self) -> list[str]:
        return [f"{name}/{part}" for name, m in self.members.items() for part in ["loss", *m.part_names]]

    def set_progress(self, step: int, total_steps: int) -> None:
        self._step = step
        for member in self.members.values():
            member.set_progress(step, total_steps)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        for member in self.members.values():
            member.clear_teacher_taps()  # every member's taps record the one shared teacher call
        shared: dict[int, torch.Tensor] = {}
        parts: dict[str, torch.Tensor] = {}
        names = list(self.members)
        if not self.isolate_failures:
            running = list(range(len(names)))
        elif self._deferred:
            if self._known_failed is None:  # first step (or after a resume): one read
                self._known_failed = {i for i, s in enumerate(self.failed_at.tolist()) if s >= 0}
            running = [i for i in range(len(names)) if i not in self._known_failed]
        else:
            running = [i for i, failed in enumerate(self.failed_at.tolist()) if failed < 0]
        losses = []
        for i in running:
            out = self.members[names[i]](batch, shared_teachers=shared)
            losses.append(out["loss"])
            parts.update({f"{names[i]}/{k}": v.detach() for k, v in out.items()})
        if not losses:
            raise RuntimeError(f"every member of the pack has failed: {self.failed}")
        if self.isolate_failures and self.training and self._deferred:
            # No host sync: a member's loss counts while it is finite and the member has not failed before.
            stacked = torch.stack([l.detach().float() for l in losses])
            if self._running_index is None or self._running_index[0] != running:  # (a copy to the device)
                self._running_index = (running, torch.tensor(running, device=stacked.device))
            idx = self._running_index[1]
            before = self.failed_at[idx]
            alive = (before < 0) & torch.isfinite(stacked)
            self.failed_at[idx] = torch.where((before < 0) & ~alive, self._step, before)
            total = torch.where(alive, torch.stack([l.float() for l in losses]), 0.0).sum()
            return {"loss": total, **parts}
        if self.isolate_failures and self.training:
            # One host sync for all members (the trainer syncs on the total loss each step anyway).
            finite = torch.stack([torch.isfinite(l.detach()) for l in losses]).tolist()
            if not all(finite):
                for i, ok in zip(running, finite):
                    if not ok:
                        self.failed_at[i] = self._step
                        warnings.warn(f"pack member {names[i]!r}: loss is not finite at step {self._step}; "
                                      "it stops training here, the others go on", RuntimeWarning, stacklevel=2)
                losses = [l for l, ok in zip(losses, finite) if ok]
                if not losses:
                    raise RuntimeError(f"every member of the pack has failed: {self.failed}")
        total = torch.stack([l.float() for l in losses]).sum()
        return {"loss": total, **parts}

    def on_checkpoint(self) -> None:
        for member in self.members.values():
            member.on_checkpoint()

    def close(self) -> None:
        for member in self.members.values():
            member.close()
