"""The one training loop: every recipe (plain supervised, KD, online cohorts) trains through `fit`.

What it trains is a `torch.nn.Module` whose ``forward(batch)`` returns a dict with a scalar
``"loss"`` and any number of named loss parts; its parameters that require grad are optimised. The
data is any object with ``__len__`` and ``batch(indices, generator, augment=True, device=...)``.

Determinism and exact resume: the sample order of epoch ``e`` is a permutation drawn from a
generator seeded by ``(seed, e)``, and the augmentation of step ``s`` from one seeded by
``(seed, s)``; so the data stream is a pure function of the step and needs no saved state. The
checkpoint (``train_state.pt``) holds the module, optimizer, grad scaler, step and the global RNG
states; it is written atomically and read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import csv
import json
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
from torch import nn

from .io import atomic_write, atomic_write_text
from .tasks import map_tensors

STATE_FILE = "train_state.pt"


class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None, augment: bool = False,
              device: torch.device | str | None = None) -> Any: ...


COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
AMP_MODES = ("auto", "bf16", "fp16", "off")  # TrainConfig.amp (resolve_amp)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf, or the model state did, or the loss exploded (`DivergedError`); the
    last good checkpoint is kept."""


class DivergedError(NonFiniteLossError):
    """The loss grew past ``divergence_ratio`` times its value at the start of the run: the weights are
    being ruined although every number is still finite, so no checkpoint is written from there on."""


@dataclass
class TrainConfig:
    """Optimisation settings. ``batch_size`` is the global batch per optimizer step."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    optimizer: str = "sgd"  # sgd | adamw
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's (beta1, beta2); GANs train with (0.5, 0.999)
    schedule: str = "cosine"  # cosine | step | constant
    warmup_epochs: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training, for the step schedule
    gamma: float = 0.1
    grad_accum: int = 1
    amp: str = "auto"  # auto | bf16 | fp16 | off
    channels_last: bool = True
    seed: int = 0
    max_steps: int | None = None  # stop (resumably) after this many optimizer steps; schedule unchanged
    checkpoint_every: int = 200  # optimizer steps; also at every epoch end and on stop
    log_every: int = 20
    eval_every: int = 1  # epochs between evaluations of fit's ``evaluate``; the last epoch is always evaluated
    progress: bool = True
    tensorboard: bool = False  # also write TensorBoard event files to OUT/tensorboard (needs `tensorboard`)
    snapshot_every: int = 0  # epochs; > 0 exports the model every N epochs (teacher snapshots for `rco`)
    teacher_cache: bool = False  # distillation: reuse teacher outputs stored by an earlier run of the same data stream
    compile: str = "off"  # off | default | reduce-overhead | max-autotune: torch.compile the networks (see compile_networks)
    compile_backend: str = "inductor"  # any torch.compile backend; "aot_eager" traces without generating code
    finite_check_every: int = 0  # optimizer steps between NaN/inf checks; 0: every step, but on a GPU every log_every (see fit)
    divergence_ratio: float = 1000.0  # stop as diverged when the loss exceeds this multiple of its start (see fit); 0: off

    _WHOLE = ("epochs", "batch_size", "grad_accum", "seed", "max_steps", "checkpoint_every", "log_every",
              "eval_every", "snapshot_every", "finite_check_every")
    _REAL = ("lr", "momentum", "weight_decay", "warmup_epochs", "gamma", "divergence_ratio")
    _FLAGS = ("nesterov", "channels_last", "progress", "tensorboard", "teacher_cache")
    _TEXT = ("optimizer", "schedule", "amp", "compile", "compile_backend")

    @staticmethod
    def _finite_numbers(value: Any) -> tuple[float, ...] | None:
        """``value`` as a tuple of finite floats, or None when it is not a sequence of finite real numbers."""
        if not isinstance(value, (list, tuple)):  # (a string, a dict's keys, a set's order: not a list of numbers)
            return None
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            return None
        try:
            items = tuple(float(v) for v in value)
        except OverflowError:
            return None
        return items if all(math.isfinite(v) for v in items) else None

    def _type_problems(self) -> list[str]:
        """Settings of the wrong type (a string from a config file, None, NaN), named before any comparison
        could fail on them with a bare TypeError. Whole numbers of any integral type (numpy's too) become
        ``int``, real numbers ``float``, so that the settings serialise as JSON."""
        problems = []
        for name in self._WHOLE:
            value = getattr(self, name)
            if name == "max_steps" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                problems.append(f"{name} must be a whole number (got {type(value).__name__} {value!r})")
            else:
                setattr(self, name, int(value))
        for name in self._REAL:
            value = getattr(self, name)
            try:
                finite = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(float(value))
            except OverflowError:  # an int beyond float's range
                finite = False
            if not finite:
                problems.append(f"{name} must be a finite number (got {type(value).__name__} {str(value)[:40]})")
            else:
                setattr(self, name, float(value))
        for name in self._FLAGS:
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false (got {getattr(self, name)!r})")
        for name in self._TEXT:
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string (got {type(getattr(self, name)).__name__} "
                                f"{getattr(self, name)!r})")
        for name, count in (("milestones", None), ("betas", 2)):
            values = self._finite_numbers(getattr(self, name))
            if values is None or (count is not None and len(values) != count):
                what = "two finite numbers" if count else "a list of finite numbers"
                problems.append(f"{name} must be {what} (got {getattr(self, name)!r})")
            else:
                setattr(self, name, values)
        return problems

    def __post_init__(self) -> None:
        problems = self._type_problems()
        if problems:
            raise ValueError("; ".join(problems))
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be >= 0 (got {self.warmup_epochs})")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.eval_every < 1:
            problems.append(f"log_every, checkpoint_every and eval_every must be >= 1 (got {self.log_every}, "
                            f"{self.checkpoint_every}, {self.eval_every})")
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            problems.append(f"batch_size ({self.batch_size}) must be a positive multiple of grad_accum ({self.grad_accum})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.schedule not in ("cosine", "step", "constant"):
            problems.append(f"schedule must be cosine, step or constant (got {self.schedule!r})")
        if self.optimizer not in ("sgd", "adamw"):
            problems.append(f"optimizer must be sgd or adamw (got {self.optimizer!r})")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            problems.append(f"betas must be two numbers in [0, 1) (got {self.betas!r})")
        if self.gamma <= 0:
            problems.append(f"gamma (the step schedule's decay factor) must be > 0 (got {self.gamma})")
        if not all(0.0 <= m <= 1.0 for m in self.milestones):
            problems.append(f"milestones must be fractions of training in [0, 1] (got {self.milestones!r})")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            problems.append(f"momentum must be in [0, 1) and weight_decay >= 0 (got {self.momentum}, {self.weight_decay})")
        if abs(self.seed) >= 2 ** 63:
            problems.append(f"seed must be below 2**63 in size, as torch's generators take (got {self.seed})")
        if self.compile != "off" and self.compile_backend not in _compile_backends():
            problems.append(f"compile_backend must name a torch.compile backend (got {self.compile_backend!r}; "
                            f"this torch has: {', '.join(_compile_backends())})")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {', '.join(AMP_MODES)} (got {self.amp!r})")
        if self.compile not in COMPILE_MODES:
            problems.append(f"compile must be one of {', '.join(COMPILE_MODES)} (got {self.compile!r})")
        if self.divergence_ratio < 0 or 0 < self.divergence_ratio <= 1:
            problems.append(f"divergence_ratio must be 0 (off) or > 1 (got {self.divergence_ratio})")
        if self.finite_check_every < 0:
            problems.append(f"finite_check_every must be >= 0 (got {self.finite_check_every})")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps must be >= 1 (got {self.max_steps})")
        if problems:
            raise ValueError("; ".join(problems))


def _compile_backends() -> list[str]:
    """The torch.compile backends this torch has (`torch._dynamo.list_backends`, experimental ones too)."""
    import torch._dynamo

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, then cosine/step/constant."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(progress >= m for m in cfg.milestones)
    return cfg.lr


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; ``auto`` picks bf16 where the hardware has it."""
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        # not every CPU computes in bf16 natively, so auto keeps fp32 on one without AMX; where it has
        # AVX512-BF16, an explicit amp=bf16 made training steps 1.5-2x faster (benchmarks/amp_cpu.py)
        return torch.bfloat16 if amx else None
    return None


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _generator(*seeds: int) -> torch.Generator:
    """A CPU generator seeded by a fixed mix of ``seeds`` (stable across processes and Python versions)."""
    mixed = 0
    for s in seeds:
        mixed = (mixed * 6364136223846793005 + int(s) + 1442695040888963407) % (1 << 63)
    g = torch.Generator()
    g.manual_seed(mixed)
    return g


@dataclass
class TrainResult:
    step: int
    total_steps: int
    finished: bool
    history: list[dict] = field(default_factory=list)  # one row per evaluated epoch
    seconds: float = 0.0  # wall time of training over every resumed segment (up to the last checkpoint of each)


class TrainModule(nn.Module):
    """What `fit` trains: ``forward(batch)`` returns ``{"loss": scalar, <part>: value, ...}``; with several
    `stages` (e.g. a discriminator, then a generator), ``forward(batch, stage=name)`` returns that stage's
    loss, and each stage has its own optimizer over `stage_parameters`, stepped in the order of `stages`.

    Every hook has a default that does nothing; the `zoo.distiller.Distiller`, the
    `zoo.pack.DistillerPack` and a task's own modules override what they need. A plain ``nn.Module``
    given to `fit` gets these defaults (`hooks_of`)."""

    def stages(self) -> tuple[str, ...]:
        """The optimizer stages, in the order they step each iteration (default: one, ``main``)."""
        return ("main",)

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        """The parameters stage ``stage`` optimizes (default: every one that requires grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    def stage_lr_scale(self, stage: str) -> float:
        """Stage ``stage``'s learning rate as a multiple of the schedule's (default 1; e.g. a critic
        stepped at 0.04x the student's rate, as SKD's discriminator is)."""
        return 1.0

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called before each optimizer step (term schedules read it)."""

    @property
    def part_names(self) -> list[str]:
        """The loss parts ``forward`` can return (columns of ``log.csv`` from the first row on)."""
        return []

    @property
    def may_skip_parameters(self) -> bool:
        """Whether a step can leave parameters without gradients (DDP must then look for them)."""
        return False

    def compilable_networks(self) -> list[nn.Module]:
        """The networks `compile_networks` compiles (default: the module itself)."""
        return [self]

    def batch_requirements(self) -> list[tuple[int, str]]:
        """(fewest samples per micro-batch and process, why) pairs (default: its BatchNorm layers')."""
        return batchnorm_requirement(self, f"the model ({type(self).__name__})")

    def defer_finite_checks(self, deferred: bool) -> None:
        """Told whether NaN/inf checks are deferred (on a GPU: read every few steps, see `fit`)."""

    def check_finite(self) -> None:
        """Called at every NaN/inf check (a pack reads which members failed)."""

    isolates_failures: bool = False  # True: the module stops failing parts itself (`isolate_nonfinite`)

    def isolate_nonfinite(self, names: list[str], step: int) -> list[str]:
        """Given the non-finite state tensors before a checkpoint, stop what owns them and return the
        names left for the trainer to refuse (default: all of them)."""
        return names

    def on_checkpoint(self) -> None:
        """Called with each checkpoint (a Distiller writes its teacher-output cache)."""


class PlainHooks(TrainModule):
    """`TrainModule`'s defaults for a plain ``nn.Module`` (it is not wrapped: its state dict keeps its keys)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_module", module)  # not a submodule

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        return [p for p in self._module.parameters() if p.requires_grad]

    def compilable_networks(self) -> list[nn.Module]:
        return [self._module]

    def batch_requirements(self) -> list[tuple[int, str]]:
        return batchnorm_requirement(self._module, f"the model ({type(self._module).__name__})")


def hooks_of(module: nn.Module) -> TrainModule:
    """``module`` itself if it is a `TrainModule`, else its default hooks (`PlainHooks`)."""
    return module if isinstance(module, TrainModule) else PlainHooks(module)


def compile_networks(module: nn.Module, mode: str, backend: str = "inductor") -> list[nn.Module]:
    """``torch.compile`` each network ``module`` runs, in place (`nn.Module.compile`: parameter names, and so
    checkpoints, are unchanged; the Distiller's taps, forward hooks, are traced with the network).

    A module that trains several networks (the `Distiller`, `DistillerPack`) lists them in
    ``compilable_networks()``; each is compiled once even when it is shared. ``mode`` is torch.compile's:
    ``reduce-overhead`` replays each compiled forward and backward as CUDA graphs on a GPU.
    Returns the networks compiled.
    """
    if mode not in COMPILE_MODES or mode == "off":
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES[1:])} (got {mode!r})")
    # The taps are forward hooks. By default dynamo does not guard on hooks, so code compiled for one
    # instance of a class (say, a student tapped at its logits only) would be reused for another whose
    # hooks differ, and its taps would stay empty: guard on them.
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    networks = hooks_of(module).compilable_networks()
    done: list[nn.Module] = []
    for net in networks:
        if any(net is d for d in done):
            continue
        options = {"mode": None if mode == "default" else mode} if backend == "inductor" else {}
        net.compile(backend=backend, **options)
        done.append(net)
    # each instance of a class is compiled for its own hooks: keep dynamo from giving up (and silently
    # running eager) when a pack trains many students of one architecture
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(done) + 8)
    return done


def _make_optimizer(cfg: TrainConfig, params: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """SGD or AdamW; on a GPU the fused implementation (one kernel for all parameters instead of a few per
    tensor group: small networks are launch-bound there). The CPU keeps the default, so CPU runs stay
    bit-for-bit what they were."""
    fused = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(float(b) for b in cfg.betas),
                                 weight_decay=cfg.weight_decay, **fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay, **fused)


def batchnorm_requirement(module: nn.Module, who: str) -> list[tuple[int, str]]:
    """``[(2, why)]`` when ``module`` holds BatchNorm layers (in training they need more than one value
    per channel: PyTorch raises on a 1x1 map of one sample), else ``[]``."""
    norms = [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return []
    shown = ", ".join(norms[:3]) + (f" and {len(norms) - 3} more" if len(norms) > 3 else "")
    return [(2, f"{who} needs at least 2: its BatchNorm layers ({shown}) need more than one sample per micro-batch")]


def min_micro_batch(module: nn.Module) -> tuple[int, str]:
    """The fewest samples per micro-batch (per process) that ``module`` trains with, and why
    (`TrainModule.batch_requirements`: a Distiller names its recipe, its BatchNorm layers and its terms
    that relate samples, see `zoo.distiller.TermModule.min_batch`; a plain module its BatchNorm layers)."""
    return max([(1, ""), *hooks_of(module).batch_requirements()], key=lambda x: x[0])


def finite_check_interval(cfg: TrainConfig, device: torch.device, scaler_enabled: bool) -> int:
    """Optimizer steps between NaN/inf checks of the loss.

    A check reads a value back from the device, which makes the host wait for the GPU: done every step it
    stops the host from queueing the next step while the GPU runs this one, and a launch-bound KD step
    then costs host time + GPU time instead of the larger of the two. So on a GPU the loss's finiteness is
    accumulated on the device and read every ``log_every`` steps (and before every checkpoint and
    evaluation); the step at which it first went bad is recorded exactly. On the CPU, or with fp16's
    grad scaler (which reads its overflow flag every step anyway), every step is checked.
    ``cfg.finite_check_every`` > 0 overrides this."""
    if cfg.finite_check_every:
        return cfg.finite_check_every
    return cfg.log_every if device.type == "cuda" and not scaler_enabled else 1


def _drop_rows_after(path: Path, step: int) -> None:
    """Drop the rows of ``log.csv`` logged after ``step`` (the checkpoint a run resumes from): a run killed
    between a checkpoint and the next logs those steps again, and each step keeps one row."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    steps = [ln.split(",", 1)[0].strip() for ln in lines[1:]]
    keep = lines[:1] + [ln for ln, s in zip(lines[1:], steps) if s.isdigit() and int(s) <= step]
    if len(keep) < len(lines):
        atomic_write_text(path, "".join(keep) if step > 0 else "")


class _Log:
    """``log.csv`` (and TensorBoard) of rank 0: one row per logged step, columns fixed by the first row
    and the module's `TrainModule.part_names` (parts that switch on later keep their column)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, part_names: list[str], start_step: int = 0) -> None:
        if enabled:
            _drop_rows_after(out / "log.csv", start_step)
        self.file = open(out / "log.csv", "a", newline="") if enabled else None
        self.writer: csv.DictWriter | None = None
        self.part_names = part_names
        self.board = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("tensorboard=true needs the `tensorboard` package: pip install tensorboard "
                                  "(or, in a checkout, .venv/bin/pip install -e '.[tensorboard]')") from None
            self.board = SummaryWriter(str(out / "tensorboard"))

    def row(self, row: dict[str, Any], step: int) -> None:
        if self.file is None:
            return
        if self.writer is None:
            names = ["step", "epoch", "lr", "loss", *self.part_names]
            names += [k for k in row if k not in names]
            self.writer = csv.DictWriter(self.file, fieldnames=names, extrasaction="ignore")
            if self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()
        self.scalars("train", {k: v for k, v in row.items() if k not in ("step", "epoch")}, step)

    def scalars(self, prefix: str, values: dict[str, float], step: int) -> None:
        if self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.board is not None:
            self.board.close()


def _device_of(device: torch.device | str | None) -> torch.device:
    device = torch.device(device) if device is not None else torch.device(
        f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _check_micro_batch(module: nn.Module, cfg: TrainConfig, world: int) -> None:
    micro = cfg.batch_size // cfg.grad_accum
    if micro % world:
        raise ValueError(f"the micro-batch ({micro}) must divide evenly over {world} processes")
    need, why = min_micro_batch(module)
    if micro // world < need:
        raise ValueError(
            f"the micro-batch is {micro // world} sample(s) per process (batch_size {cfg.batch_size} / grad_accum "
            f"{cfg.grad_accum} / {world} process(es)), but {why}. Raise batch_size or lower "
            f"grad_accum (--set batch_size=... / --set grad_accum=...) so that batch_size / grad_accum / processes >= {need}.")


def _optimizers(cfg: TrainConfig, hooks: TrainModule, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per stage over that stage's parameters (a parameter belongs to one stage)."""
    optimizers, seen = {}, set()
    for stage in hooks.stages():
        params = [p for p in hooks.stage_parameters(stage) if id(p) not in seen]
        if not params:
            raise ValueError(f"the module has no trainable parameters" + (f" in stage {stage!r}" if stage != "main" else ""))
        seen |= {id(p) for p in params}
        optimizers[stage] = _make_optimizer(cfg, params, device)
    return optimizers


def _optimizer_state(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """The checkpoint's optimizer entries: ``optimizer`` for one stage (the format of every earlier
    checkpoint), ``optimizers`` (stage -> state) for several."""
    if list(optimizers) == ["main"]:
        return {"optimizer": optimizers["main"].state_dict()}
    return {"optimizers": {k: o.state_dict() for k, o in optimizers.items()}}


def _load_optimizers(optimizers: dict[str, torch.optim.Optimizer], state: dict[str, Any], where: Path) -> None:
    saved = {"main": state["optimizer"]} if "optimizer" in state else state.get("optimizers", {})
    if set(saved) != set(optimizers):
        raise ValueError(f"--resume: the checkpoint {where} has optimizer stages {sorted(saved)}, this module "
                         f"trains {sorted(optimizers)}")
    for stage, opt in optimizers.items():
        opt.load_state_dict(saved[stage])


def check_one_batch(num_examples: int, cfg: TrainConfig) -> None:
    """Raises ``ValueError`` when ``num_examples`` make no full batch of ``cfg.batch_size`` (no step could run);
    callers that write a run folder call it before writing anything."""
    if num_examples < cfg.batch_size:
        raise ValueError(f"the data has {num_examples} examples, fewer than one batch of {cfg.batch_size}: lower "
                         f"batch_size (--set batch_size=N, settings={{'batch_size': N}}) to at most {num_examples}")


def fit(
    module: nn.Module,
    data: BatchSource,
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    evaluate: Callable[[], dict[str, float]] | None = None,
    on_epoch_end: Callable[[int, list[dict]], None] | None = None,
    on_step_end: Callable[[int], None] | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    deadline: float | None = None,
) -> TrainResult:
    """Train ``module`` on ``data`` with ``cfg``; checkpoints and logs go to ``out_dir``.

    ``module`` is a `TrainModule` (or a plain ``nn.Module``, which gets its defaults); each of its
    `TrainModule.stages` has its own optimizer, stepped in order on the same micro-batches.
    ``evaluate`` is called after every ``cfg.eval_every``-th epoch and after the last (on rank 0), and its
    metrics are logged; then ``on_epoch_end(epoch, history)`` (rank 0; e.g. to export snapshots);
    ``on_step_end(step)`` after each optimizer step, before any logging or checkpoint (e.g. to time steps).
    With ``resume=True``
    training continues exactly from ``out_dir/train_state.pt``. ``deadline`` (a ``time.monotonic()``
    value) stops training resumably at the first step that ends after it: a checkpoint is written
    and the result says ``finished=False`` (to fit a run into a time-limited GPU lease).

    Raises ValueError for settings the module cannot train with (a micro-batch too small, a checkpoint of
    another run) and `NonFiniteLossError` / `DivergedError` when the training goes bad.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = _rank_world()
    device = _device_of(device)
    hooks = hooks_of(module)
    _check_micro_batch(module, cfg, world)
    micro = cfg.batch_size // cfg.grad_accum
    check_one_batch(len(data), cfg)
    steps_per_epoch = len(data) // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch

    module.to(device)
    if cfg.channels_last and device.type in ("cpu", "cuda"):
        module.to(memory_format=torch.channels_last)
    if cfg.compile != "off":
        compile_networks(module, cfg.compile, cfg.compile_backend)
    cuda_graphs = cfg.compile == "reduce-overhead" and device.type == "cuda"
    stages = hooks.stages()
    staged = list(stages) != ["main"]
    optimizers = _optimizers(cfg, hooks, device)
    lr_scales = {stage: float(hooks.stage_lr_scale(stage)) for stage in stages}
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    train_module: nn.Module = module
    if world > 1:
        train_module = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            # terms switched off by a schedule, or a stage using part of the module, leave parameters without gradients
            find_unused_parameters=hooks.may_skip_parameters or staged)

    check_every = finite_check_interval(cfg, device, scaler.is_enabled())
    deferred = check_every > 1
    hooks.defer_finite_checks(deferred)  # e.g. a pack masks failed members on the device
    # Deferred checks: the step at which the loss first went non-finite (-1: never) and that loss, on the device.
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_loss = torch.zeros((), device=device)
    # Divergence guard (`divergence_ratio`): the loss of the run's first micro-batch is the reference (kept in
    # the checkpoint); the largest micro-batch loss since the last check is compared with it at every check.
    # Modules that isolate their failing parts themselves (packs) are not guarded as a whole.
    guard = cfg.divergence_ratio > 0 and not hooks.isolates_failures
    reference: float | None = None
    first_loss: torch.Tensor | None = None
    peak = torch.full((), float("-inf"), device=device)

    step, history, seconds_before = 0, [], 0.0  # seconds_before: the wall time of the segments resumed from
    state_path = out / STATE_FILE
    # A checkpoint is written as pending and becomes the checkpoint only once the steps after it have passed
    # their NaN/divergence check: the update just before a checkpoint is judged by the next forward, so a
    # run that diverges keeps the last state that trained on sanely, and resuming it with a lower lr works.
    pending_path = out / (STATE_FILE + ".pending")
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {state_path}")
        state = read_checkpoint(state_path)
        check_resume_config(state["config"], cfg, state_path)
        if state.get("data_size") not in (None, len(data)):
            raise ValueError(f"--resume: the checkpoint {state_path} was trained on {state['data_size']} examples, "
                             f"this run's data has {len(data)}: resume it with the same data (or start a new run)")
        try:
            module.load_state_dict(state["module"])
        except RuntimeError as e:
            raise ValueError(f"--resume: the checkpoint {state_path} holds another model than this run builds "
                             f"(another student, recipe or data?): {str(e).splitlines()[0]}") from None
        _load_optimizers(optimizers, state, state_path)
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if torch.cuda.is_available() and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        step, history = int(state["step"]), json.loads(state["history"])
        reference = state.get("loss_reference")
        seconds_before = float(state.get("train_seconds", 0.0))
    else:
        torch.manual_seed(cfg.seed)

    def last_good() -> str:
        if state_path.exists():
            return (f"The last good checkpoint (every tensor finite) is kept in {state_path}: resume it with a lower "
                    "lr (--resume --set lr=...), or check the data.")
        return "No checkpoint was written before that: start again with a lower lr, or check the data."

    def check_finite() -> None:
        """Read the deferred NaN/inf flags (one host sync); raise if the loss went bad since the last check,
        or grew past ``divergence_ratio`` times the run's first loss."""
        nonlocal reference, peak
        hooks.check_finite()
        if deferred and int(bad_step) >= 0:
            at = int(bad_step)
            raise NonFiniteLossError(
                f"loss is {float(bad_loss)} at step {at} (epoch {at // steps_per_epoch}; found at the check after "
                f"step {step}). {last_good()}")
        if guard and first_loss is not None:
            if reference is None:
                reference = float(first_loss)
            highest = float(peak)
            peak = torch.full((), float("-inf"), device=device)
            limit = cfg.divergence_ratio * max(abs(reference), 1.0)
            if highest > limit:
                raise DivergedError(
                    f"the loss reached {highest:.4g} by step {step} (epoch {(step - 1) // steps_per_epoch}), over "
                    f"{cfg.divergence_ratio:g} x its value at the start of the run ({reference:.4g}): the training "
                    f"diverged. {last_good()} (--set divergence_ratio=0 turns this check off.)")
        confirm_checkpoint()

    def confirm_checkpoint() -> None:
        """The pending checkpoint passed the checks of the steps after it: it becomes the checkpoint."""
        if rank == 0 and pending_path.exists():
            os.replace(pending_path, state_path)

    def save_state() -> None:
        check_finite()  # never save weights that a non-finite loss has already updated
        bad = nonfinite_state(module, list(optimizers.values()))
        if bad:  # a pack stops the members they belong to
            bad = hooks.isolate_nonfinite(bad, step)
        if bad:  # a finite loss in training mode can hide diverged BatchNorm statistics or weights
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteLossError(
                f"after step {step} (epoch {(step - 1) // steps_per_epoch}) the model state is not finite: {shown}. The "
                f"training diverged although the loss stayed finite. {last_good()}")
        hooks.on_checkpoint()  # e.g. the Distiller writes its teacher-output cache
        if rank != 0:
            return
        state = {
            "module": module.state_dict(), **_optimizer_state(optimizers), "scaler": scaler.state_dict(),
            "step": step, "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            "config": asdict(cfg), "history": json.dumps(history), "loss_reference": reference,
            "data_size": len(data), "train_seconds": elapsed(),
        }
        atomic_write(pending_path, lambda f: torch.save(state, f))

    log = _Log(out, rank == 0, cfg.tensorboard, hooks.part_names, start_step=step)
    bar = None
    if rank == 0 and cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True, desc="train")
    stop_at = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    t0 = time.perf_counter()

    def elapsed() -> float:  # training wall time over every segment of the run, this one included
        return seconds_before + time.perf_counter() - t0

    try:
        while step < stop_at:
            epoch, pos = divmod(step, steps_per_epoch)
            order = torch.randperm(len(data), generator=_generator(cfg.seed, epoch))
            train_module.train()
            while pos < steps_per_epoch and step < stop_at:
                lr = lr_at(cfg, step, total_steps, steps_per_epoch)
                hooks.set_progress(step, total_steps)  # e.g. the Distiller's term schedules
                for stage_name, opt in optimizers.items():
                    for group in opt.param_groups:
                        group["lr"] = lr * lr_scales[stage_name]
                gen = _generator(cfg.seed, 1_000_003, step)
                global_idx = order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
                # Loss parts are gathered (on the device) only for a step that is logged: on a GPU each
                # gathered part would cost kernel launches every step.
                log_now = rank == 0 and ((step + 1) % cfg.log_every == 0 or step + 1 == stop_at)
                parts: dict[str, torch.Tensor] = {}
                batches: list[Any] = []
                for stage, optimizer in optimizers.items():
                    if staged:  # clear what other stages' backward left on this stage's parameters
                        optimizer.zero_grad(set_to_none=True)
                    for k in range(cfg.grad_accum):
                        if len(batches) <= k:
                            idx = global_idx[k * micro:(k + 1) * micro]
                            # Every rank draws the augmentation of the whole micro-batch, then keeps its share,
                            # so the global batch is the same for any number of processes.
                            batch = _shard(data.batch(idx, gen, augment=True, device=device), rank, world)
                            if isinstance(batch, dict):  # where this micro-batch sits in the run (teacher-output cache)
                                batch = {**batch, "position": (step, k)}
                            batches.append(_channels_last(batch) if cfg.channels_last else batch)
                        if cuda_graphs:  # a new iteration: earlier CUDA-graph outputs may be overwritten
                            torch.compiler.cudagraph_mark_step_begin()
                        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                            outputs = train_module(batches[k], stage=stage) if staged else train_module(batches[k])
                        loss = outputs["loss"]
                        if guard:  # no host sync: the first loss and the peak stay on the device until a check
                            first_loss = loss.detach().float() if first_loss is None else first_loss
                            peak = torch.maximum(peak, loss.detach().float())
                        if deferred:  # no host sync: remember the first bad step on the device
                            newly_bad = (bad_step < 0) & ~torch.isfinite(loss.detach())
                            bad_loss = torch.where(newly_bad, loss.detach().float(), bad_loss)
                            bad_step = torch.where(newly_bad, step, bad_step)
                        elif not torch.isfinite(loss.detach()).all():
                            raise NonFiniteLossError(
                                f"loss is {loss.item()} at step {step} (epoch {epoch})" + (f", stage {stage}" if staged else "")
                                + "; parts: " + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in outputs.items())
                                + f". {last_good()}")
                        scaler.scale(loss / cfg.grad_accum).backward()
                        if log_now:
                            for name, value in outputs.items():
                                key = f"{stage}/{name}" if staged else name
                                parts[key] = parts.get(key, 0.0) + value.detach().float() / cfg.grad_accum
                    scaler.step(optimizer)
                scaler.update()
                for optimizer in optimizers.values():
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                pos += 1
                if on_step_end is not None:
                    on_step_end(step)
                if step % check_every == 0 or pos == steps_per_epoch or step == stop_at:
                    check_finite()
                if log_now:
                    logged = {k: float(v) for k, v in parts.items()}
                    if staged:
                        logged = {"loss": sum(logged[f"{s}/loss"] for s in stages), **logged}
                    log.row({"step": step, "epoch": epoch, "lr": lr, **logged}, step)
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.3f}" for k, v in logged.items()}, refresh=False)
                if bar is not None:
                    bar.update(1)
                if pos == steps_per_epoch:
                    if evaluate is not None and rank == 0 and ((epoch + 1) % cfg.eval_every == 0
                                                               or epoch + 1 == cfg.epochs):
                        metrics = evaluate()
                        history.append({"epoch": epoch + 1, "step": step,
                                         "seconds": round(elapsed(), 1), **metrics})
                        if bar is not None:
                            bar.write(f"epoch {epoch + 1}/{cfg.epochs}: "
                                      + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
                        log.scalars("eval", metrics, step)
                        train_module.train()
                    if on_epoch_end is not None and rank == 0:
                        on_epoch_end(epoch + 1, history)
                    save_state()
                elif step % cfg.checkpoint_every == 0 or step == stop_at:
                    save_state()
                if deadline is not None and time.monotonic() >= deadline and step < stop_at:
                    if pos != steps_per_epoch:  # an epoch end has just been saved
                        save_state()
                    stop_at = step
        confirm_checkpoint()  # the run stops here (its end, max_steps or the deadline) in a state it checked
    except BaseException:
        if rank == 0:  # an unconfirmed checkpoint (the run failed or was interrupted after it) is not kept
            pending_path.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return TrainResult(step=step, total_steps=total_steps, finished=step >= total_steps, history=history,
                       seconds=elapsed())


def nonfinite_state(module: nn.Module, optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer] | None = None
                    ) -> list[str]:
    """Names of the floating-point tensors of ``module``'s state (parameters and buffers, e.g. BatchNorm
    running statistics) and of the ``optimizers``' state (``optimizer:<param name>:<key>``) that hold a NaN
    or an infinity."""
    bad = [name for name, t in module.state_dict().items()
           if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
    optimizers = [] if optimizers is None else [optimizers] if isinstance(optimizers, torch.optim.Optimizer) else optimizers
    names = {id(p): n for n, p in module.named_parameters()}
    for optimizer in optimizers:
        for p, st in optimizer.state.items():
            for key, t in st.items():
                if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                    bad.append(f"optimizer:{names.get(id(p), '?')}:{key}")
    return bad


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The training state in ``path`` (``torch.load(weights_only=True)``); ValueError naming the file when
    it is truncated or not a kdzoo checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, empty, or another file: pickle/zip errors of every kind
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); delete it to start again, "
                         "or restore it") from None
    if not isinstance(state, dict) or not {"module", "config", "step"} <= set(state):
        raise ValueError(f"{path} is not a kdzoo training checkpoint")
    return state


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, where: str | os.PathLike,
                        report: bool = True) -> None:
    """Refuse to resume a checkpoint trained with other settings, except those that may change on resume
    (`zoo.runs.RESUME_MUTABLE`, e.g. ``lr``), which are applied and, with ``report``, printed to stderr
    (``max_steps`` and ``progress`` belong to each call and are not). Raises ValueError naming each
    setting and both values."""
    import sys

    from .runs import PER_CALL, RESUME_MUTABLE

    now = asdict(cfg)
    if report:
        for k in sorted(RESUME_MUTABLE - PER_CALL):
            if k in saved and not _same_setting(saved[k], now[k]):
                print(f"resume: {k} changed from {saved[k]!r} to {now[k]!r} (applied)", file=sys.stderr)
    differ = [k for k in now if k in saved and not _same_setting(saved[k], now[k]) and k not in RESUME_MUTABLE]
    if differ:
        raise ValueError(f"--resume: the checkpoint {where} was trained with "
                         + "; ".join(f"{k}={saved[k]!r}" for k in differ) + ", this run asks for "
                         + "; ".join(f"{k}={now[k]!r}" for k in differ)
                         + f". Resume with the same settings (only {', '.join(sorted(RESUME_MUTABLE))} may change), "
                         "or start a new run.")


def _same_setting(a: Any, b: Any) -> bool:
    """Whether two values of a setting agree as JSON values: a tuple equals the list, 0 equals 0.0."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _shard(batch: Any, rank: int, world: int) -> Any:
    return batch if world == 1 else map_tensors(batch, lambda t: t.chunk(world)[rank])


def _channels_last(batch: Any) -> Any:
    return map_tensors(batch, lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


def config_from_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``cfg`` with fields replaced; unknown keys give an error listing the valid ones."""
    valid = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"unknown training setting(s) {bad}; valid: {', '.join(sorted(valid))}")
    return TrainConfig(**{**asdict(cfg), **overrides})
