"""Model cost measurements for cards: parameters, FLOPs and CPU latency."""
from __future__ import annotations

import platform
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BatchNorm statistics not included)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, example: torch.Tensor | dict[str, torch.Tensor]) -> int:
    """Forward FLOPs for ``example`` (a tensor, or keyword inputs such as a tokenizer's) as counted by
    torch's FlopCounterMode (one multiply-add = 2 FLOPs)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(**example) if isinstance(example, dict) else model(example)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def measure_latency(model: nn.Module, example: torch.Tensor, *, warmup: int = 5, repeats: int = 30,
                    min_seconds: float = 0.5) -> float:
    """Median wall time in milliseconds of one forward pass on ``example`` (eval mode, current threads)."""
    model.eval()
    for _ in range(warmup):
        model(example)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        model(example)
        times.append(time.perf_counter() - t)
        if len(times) >= 10 * repeats:
            break
    return statistics.median(times) * 1000.0


def cpu_description() -> str:
    """The CPU and torch build latency was measured on, for cards."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{name}, {threads} thread{'s' if threads != 1 else ''}, torch {torch.__version__.split('+')[0]}"


def hardware_description(device: str | torch.device | None = None) -> str:
    """What a job ran on, for cards and results: ``1x <GPU name>`` on a GPU, else ``CPU: <cpu_description()>``.
    ``device`` None means the GPU where one is available."""
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name(device)}"
    return f"CPU: {cpu_description()}"
