"""Multi-process training through ``torchrun``: join the process group torchrun describes in the environment.

``torchrun --nproc_per_node 4 -m zoo.cli distill classification ...`` (or ``--nnodes``/``--rdzv-*``
for several machines) starts one process per GPU; each calls `init_from_env`, and the trainer then
wraps the model in DistributedDataParallel and gives each rank its share of every global batch.
"""
from __future__ import annotations

import atexit
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def init_from_env() -> tuple[int, int, torch.device | None]:
    """(rank, world size, this process's device) — and a joined process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        atexit.register(leave_process_group)
    return dist.get_rank(), dist.get_world_size(), device


def leave_process_group(timeout_s: float = 60.0) -> None:
    """Leave the process group at the end of a run (safe to call twice; `init_from_env` registers it at exit).

    With gloo, a collective launched inside ``backward`` (DDP's gradient all-reduce) carries a Python
    object in its thread-local state (torch >= 2.14 stashes the contextvars there), and gloo's worker
    thread frees the finished work, which needs the GIL. A rank that exits right after its last step
    can start interpreter teardown first, and the worker thread then aborts the process ("terminate
    called without an active exception", SIGABRT), which torchrun reports as a failed run. A barrier
    outside ``backward`` lets the workers finish that (its wait releases the GIL) before the group is
    destroyed. ``monitored_barrier`` with a timeout names a rank that never arrives instead of hanging.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=timeout_s))
        except RuntimeError as error:  # a peer died or never arrived: leave anyway, say so
            print(f"zoo.distributed: the exit barrier failed ({error}); leaving the group", file=sys.stderr)
    dist.destroy_process_group()


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
