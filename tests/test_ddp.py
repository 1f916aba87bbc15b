import os
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from zoo.distributed import leave_process_group

WORKER = str(Path(__file__).with_name("ddp_worker.py"))


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    single = subprocess.run([sys.executable, WORKER, str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          WORKER, str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "weights.pt", weights_only=True)
    start = torch.load(tmp_path / "one" / "train_state.pt", weights_only=True)  # sanity: training moved weights
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert start["step"] == 6


EXIT_WORKER = str(Path(__file__).with_name("ddp_exit_worker.py"))


def test_ranks_leave_the_gloo_group_at_exit_without_aborting():
    """Exit right after a DDP backward: used to abort a rank now and then (gloo frees work needing the GIL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    for _ in range(2):
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              EXIT_WORKER], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "terminate called" not in run.stderr
        reports = re.findall(r"rank (\d): group left at exit: (True|False)", run.stdout)  # ranks' lines may interleave
        assert sorted(reports) == [("0", "True"), ("1", "True")]


def test_leave_process_group_without_a_group_is_a_no_op():
    leave_process_group()
    assert not dist.is_initialized()
