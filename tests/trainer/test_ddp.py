"""torchrun with 2 CPU processes (gloo): replicas stay identical; only rank 0 writes; metrics are reduced."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


@pytest.mark.slow  # torchrun: two processes that each import torch and train (~20 CPU-s)
def test_two_process_gloo_training_keeps_replicas_identical(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "tests/trainer/ddp_worker.py",
        str(tmp_path),
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = torch.load(tmp_path / "replica0.pt"), torch.load(tmp_path / "replica1.pt")
    assert rank0["world_size"] == rank1["world_size"] == 2
    # the validation metrics were reduced over both shards: each rank saw all 6 val images
    assert rank0["num_images"] == rank1["num_images"] == 6
    saved = load_file(str(tmp_path / "checkpoints" / "last.safetensors"))
    for key, value in rank0["state"].items():
        torch.testing.assert_close(rank1["state"][key], value, rtol=0, atol=0, msg=key)
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=key)
    assert saved.keys() == rank0["state"].keys()
    assert not list(tmp_path.glob("checkpoints/*.tmp"))
