"""Run by test_ddp.py under torchrun: one DDP backward with many small gradient buckets, then exit at once.

Each bucket's gloo all-reduce is freed by a gloo worker thread that needs the GIL; a rank that reached
interpreter teardown first used to abort (SIGABRT). `zoo.distributed` now leaves the group at exit;
the handler registered here first runs last and reports whether it did.
"""
import atexit

import torch
import torch.distributed as dist
from torch import nn

from zoo.distributed import init_from_env

atexit.register(lambda: print(f"rank {rank}: group left at exit: {not dist.is_initialized()}", flush=True))
rank, _, _ = init_from_env()
torch.manual_seed(0)
model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(24)])
ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.01)  # about one bucket per layer
ddp(torch.randn(8, 64)).sum().backward()
