"""Cost of a crash-consistent checkpoint commit vs the old file-by-file save, side by side in one process.

Swin-T MTLoRA r64 (4 tasks) with AdamW state for its trainable parameters: the new commit (bytes in memory,
fsync of every file, sha256 manifest, one rename, link switch, best.* hard-linked) against the old path
(save_checkpoint + torch.save, each through a temp file and a rename, no fsync). Interleaved repetitions.

    PYTHONPATH=. python benchmarks/checkpoint_commit.py --reps 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    from mtlora_deploy.model.checkpoint import save_checkpoint
    from mtlora_deploy.model.multitask import build_model
    from mtlora_deploy.model.presets import resolve_config
    from mtlora_deploy.trainer.optim import build_optimizer, build_scheduler
    from mtlora_deploy.trainer.run_state import Progress, _state_bytes, save_training_state
    from mtlora_deploy.utils.atomic import atomic_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(resolve_config("mtlora-r64"))
    optimizer = build_optimizer(model, 1e-4, 0.05, (0.9, 0.999), 1e-8)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()  # fills exp_avg / exp_avg_sq like a real run
    scheduler = build_scheduler(optimizer, 100, 10, 1e-6, 1e-6)
    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    old, new = [], []
    try:
        for rep in range(args.reps):
            progress = Progress(step=rep + 1)
            start = time.perf_counter()
            save_checkpoint(model, root / "old" / "last", metadata={"step": progress.step})
            with atomic_path(root / "old" / "last.state.pt") as tmp:
                tmp.write_bytes(_state_bytes(optimizer, scheduler, None, progress))
            old.append(time.perf_counter() - start)
            start = time.perf_counter()
            save_training_state(root / "new", model, optimizer, scheduler, None, progress, best=rep == 0)
            new.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in (root / "old").iterdir()) / 2**20
        print(
            f"checkpoint set {size:.0f} MiB; old file-by-file save median {statistics.median(old):.2f} s, "
            f"crash-consistent commit median {statistics.median(new):.2f} s, "
            f"ratio {statistics.median(new) / statistics.median(old):.2f} ({args.reps} interleaved reps)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
