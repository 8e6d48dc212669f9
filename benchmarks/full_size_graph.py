"""The full-size fp32 graph the int8/fp16 benchmarks measure: Swin-T 448, mtlora-r64, four tasks, merged.

Random init (no network for ImageNet weights) with every LoRA B drawn from N(0, 0.02) so the adapters change the
outputs, merged (task-agnostic LoRA folded in), exported with the default (torch.export) exporter.

Usage: python benchmarks/full_size_graph.py -o /work/full/swin_t.onnx
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mtlora_deploy.deploy.export import export_onnx
from mtlora_deploy.deploy.merge import merge_task_agnostic
from mtlora_deploy.model import build_model, resolve_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = build_model(resolve_config("mtlora-r64"), warn_without_weights=False).eval()
    with torch.no_grad():
        randomized = [p.normal_(0, 0.02) for n, p in model.named_parameters() if "lora" in n and "_B" in n]
    start = time.perf_counter()
    export_onnx(merge_task_agnostic(model), args.output, check=False)
    print(f"{len(randomized)} LoRA B tensors randomized; wrote {args.output} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
