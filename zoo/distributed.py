"""Multi-process training through ``torchrun``: join the process group torchrun describes in the environment.

``torchrun --nproc_per_node 4 -m zoo.cli distill classification ...`` (or ``--nnodes``/``--rdzv-*``
for several machines) starts one process per GPU; each calls `init_from_env`, and the trainer then
wraps the model in DistributedDataParallel and gives each rank its share of every global batch.
"""
from __future__ import annotations

import os

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
    return dist.get_rank(), dist.get_world_size(), device


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
