"""Training step of this toolkit's unmerged MTLoRA model vs the reference MTLoRA code, side by side.

Both models: Swin-T 448, r64, task rank 4, 4 tasks (semseg, human_parts, sal, normals), fp32, batch 2, reference
freezing, AdamW on the trainable parameters, loss = sum over tasks of the output mean, train mode (LoRA dropout
0.05, drop path 0.2). Steps alternate between the two models in interleaved rounds so that load from other
processes hits both alike; the ratio of medians is the number to read. Peak memory is the peak RSS (VmHWM, reset
after the model is built) above the built model's RSS over two steps, in a fresh subprocess per model.

The reference code (github.com/scale-lab/MTLoRA) is not a dependency: point --reference (or MTLORA_REFERENCE) at a
checkout; it needs yacs, termcolor, easydict, opencv-python-headless and ptflops importable (e.g. installed with
``pip install --no-deps --target DIR ...`` and DIR on PYTHONPATH). Without it the script says why and exits 0.

    PYTHONPATH=.:/work/refdeps python benchmarks/train_step_vs_reference.py --reference /work/ref/MTLoRA --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

TASKS = ("semseg", "human_parts", "sal", "normals")
CONFIG = "configs/mtlora/tiny_448/mtlora_tiny_448_r64_scale4_pertask.yaml"


def build_ours(size: int) -> torch.nn.Module:
    from mtlora_deploy.model import build_model, resolve_config

    config = resolve_config("mtlora-r64", overrides={"image_size": size, "tasks": list(TASKS)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_model(config, warn_without_weights=False)


def build_reference(root: Path, size: int) -> torch.nn.Module:
    """The reference MultiTaskSwin with its own freezing (mark_only_lora_as_trainable, as its main.py)."""
    sys.path.insert(0, str(root))
    os.chdir(root)
    from config import get_config
    from models.build import build_model
    from models.lora import mark_only_lora_as_trainable
    from models.swin_mtl import MultiTaskSwin

    args = SimpleNamespace(
        cfg=str(root / CONFIG), opts=["DATA.IMG_SIZE", size], tasks=",".join(TASKS), pascal="unused", local_rank=0
    )
    config = get_config(args)
    model = MultiTaskSwin(build_model(config), config)
    train = config.TRAIN
    mark_only_lora_as_trainable(
        model.backbone,
        bias=config.MODEL.MTLORA.BIAS,
        freeze_patch_embed=train.FREEZE_PATCH_EMBED,
        freeze_norm=train.FREEZE_LAYER_NORM,
        free_relative_bias=train.FREEZE_RELATIVE_POSITION_BIAS,
        freeze_downsample_reduction=train.FREEZE_DOWNSAMPLE_REDUCTION,
    )
    return model


class Stepper:
    """One model, its AdamW and a fixed batch: ``step()`` runs forward, backward and the update."""

    def __init__(self, model: torch.nn.Module, batch: int, size: int, seed: int) -> None:
        self.model = model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=1e-4)
        self.images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def step(self) -> float:
        start = time.perf_counter()
        out = self.model(self.images)
        loss = sum(v.mean() for v in out.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def peak_memory(which: str, args: argparse.Namespace) -> float:
    """Max-RSS growth (MB) of a fresh process that builds ``which`` and runs two training steps."""
    cmd = [sys.executable, __file__, "--_peak", which, "--size", str(args.size), "--batch", str(args.batch)]
    if args.reference:
        cmd += ["--reference", str(args.reference)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
    return float(out.stdout.strip().splitlines()[-1])


def _peak_child(which: str, args: argparse.Namespace) -> None:
    """Peak RSS above the built model's RSS while it takes two steps (``ru_maxrss`` would keep the build's peak)."""
    from mtlora_deploy.profile.memory import peak_rss_bytes, reset_peak_rss

    torch.set_num_threads(args.threads)
    model = build_ours(args.size) if which == "ours" else build_reference(Path(args.reference), args.size)
    stepper = Stepper(model, args.batch, args.size, seed=0)
    resettable = reset_peak_rss()
    base = peak_rss_bytes(resettable)
    for _ in range(2):
        stepper.step()
    print((peak_rss_bytes(resettable) - base) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=os.environ.get("MTLORA_REFERENCE"))
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (one step of each model per round)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--_peak", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._peak:
        return _peak_child(args._peak, args)
    if not args.reference or not (Path(args.reference) / "models" / "swin_transformer_mtlora.py").is_file():
        print(
            "skipped: the reference MTLoRA code is absent (pass --reference DIR or set MTLORA_REFERENCE to a "
            "checkout of github.com/scale-lab/MTLoRA)"
        )
        return
    torch.set_num_threads(args.threads)
    here = os.getcwd()
    reference = build_reference(Path(args.reference).resolve(), args.size)
    os.chdir(here)
    steppers = {
        "ours": Stepper(build_ours(args.size), args.batch, args.size, 0),
        "reference": Stepper(reference, args.batch, args.size, 0),
    }
    times: dict[str, list[float]] = {k: [] for k in steppers}
    for round_index in range(args.warmup + args.rounds):
        order = list(steppers) if round_index % 2 == 0 else list(reversed(steppers))
        for name in order:
            elapsed = steppers[name].step()
            if round_index >= args.warmup:
                times[name].append(elapsed)
        print(f"round {round_index}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v), flush=True)
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("_peak", "json")} | {"torch": torch.__version__},
        "step_s": times,
        "median_s": medians,
        "trainable_params": {k: s.trainable for k, s in steppers.items()},
        "throughput_ratio_ours_vs_reference": medians["reference"] / medians["ours"],
    }
    del steppers, reference
    if not args.no_memory:
        result["peak_rss_growth_mb"] = {k: peak_memory(k, args) for k in ("ours", "reference")}
    print(json.dumps({k: v for k, v in result.items() if k != "step_s"}, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
