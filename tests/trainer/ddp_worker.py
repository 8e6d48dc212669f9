"""Run under torchrun by test_ddp.py: train a tiny model with 2 gloo processes, dump each replica's weights."""

import sys
import warnings
from pathlib import Path

import torch

from mtlora_deploy.trainer.config import load_run_configs
from mtlora_deploy.trainer.loop import Trainer

MODEL = {
    "backbone": "swin_test_tiny",
    "image_size": 64,
    "decoder_widths": (4, 4, 8, 8),
    "head_channels": 16,
    "task_agnostic_rank": 4,
    "tasks": ("semseg", "sal"),
}

if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    train = {
        "data": "synthetic",
        "synthetic_images": 24,
        "batch_size": 2,
        "num_workers": 0,
        "base_lr": 0.2,
        "warmup_steps": 1,
        "max_steps": 5,
        "eval_every": 1,
        "device": "cpu",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_config, train_config = load_run_configs("mtlora-r16", None, MODEL, train)
        trainer = Trainer(model_config, train_config, run_dir)
        result = trainer.fit()
    rank = trainer.context.rank
    state = {k: v.detach().clone() for k, v in trainer.last_model.state_dict().items()}
    torch.save(
        {"state": state, "world_size": trainer.context.world_size, "num_images": result["num_images"]},
        run_dir / f"replica{rank}.pt",
    )
