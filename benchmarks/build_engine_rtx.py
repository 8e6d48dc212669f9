"""TensorRT-RTX plans built on this CPU-only machine: build time, plan size and peak RSS per model and precision.

Each build runs in its own ``mtlora build-engine`` process (GNU time reports its peak RSS), so numbers do not
leak between builds. Models: the demo's tiny MTLoRA (64x64, torch.export graph) in fp32 / fp16 / int8 (max
calibration on 8 random images: enough to have Q/DQ, not for accuracy), and the full Swin-T 448 mtlora-r64 with
four tasks, merged, torch.export graph, fp32 and fp16 (``make_precision_variant``: LayerNorm and overflowing
nodes in fp32). Builds use the defaults: batch 1:8:32 and the runtime's own workspace pool.

Usage: python benchmarks/build_engine_rtx.py [--full] [-o benchmarks/results/build_engine_rtx.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def _graphs(work: Path, full: bool) -> dict[str, Path]:
    from mtlora_deploy.calib.precision import make_precision_variant
    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.deploy.merge import merge_task_agnostic
    from mtlora_deploy.model import build_model, resolve_config

    graphs: dict[str, Path] = {}
    tiny = build_model(
        resolve_config(
            "mtlora-r16", overrides={"backbone": "swin_test_tiny", "image_size": 64, "task_agnostic_rank": 4}
        ),
        warn_without_weights=False,
    )
    if not (work / "tiny.onnx").is_file():  # every step is skipped when its file exists (a rerun resumes)
        export_onnx(merge_task_agnostic(tiny.eval()), work / "tiny.onnx")
    np.savez(work / "calib.npz", image=np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32))
    graphs["tiny fp32"] = work / "tiny.onnx"
    for precision in ("fp16", "int8"):
        out = work / f"tiny_{precision}.onnx"
        if not out.is_file():
            calib = work / "calib.npz" if precision == "int8" else None
            make_precision_variant(work / "tiny.onnx", precision, out, calib, min_images=8, calibration_method="max")
        graphs[f"tiny {precision}"] = out
    if full:
        del tiny
        model = build_model(resolve_config("mtlora-r64"), warn_without_weights=False).eval()
        if not (work / "swin_t.onnx").is_file():
            export_onnx(merge_task_agnostic(model), work / "swin_t.onnx", check=False)
        graphs["swin_t_448_r64 fp32"] = work / "swin_t.onnx"
        if not (work / "swin_t_fp16.onnx").is_file():  # the toolkit's own fp16 variant (range scan, fidelity)
            make_precision_variant(work / "swin_t.onnx", "fp16", work / "swin_t_fp16.onnx", show_progress=False)
        graphs["swin_t_448_r64 fp16"] = work / "swin_t_fp16.onnx"
    return graphs


def _build(name: str, onnx_path: Path, work: Path) -> dict:
    precision = name.split()[-1]
    plan = work / f"{onnx_path.stem}_rtx.plan"
    cmd = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "mtlora_deploy",
        "build-engine",
        str(onnx_path),
        "--precision",
        precision,
        "--runtime",
        "tensorrt-rtx",
        "--batch",
        "1:8:32",
        "-o",
        str(plan),
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode:
        return {"model": name, "error": proc.stderr.strip().splitlines()[-1]}
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    manifest = json.loads(Path(str(plan) + ".json").read_text())
    return {
        "model": name,
        "command": " ".join(cmd[2:]),
        "build_time_s": manifest["build_time_s"],
        "process_wall_s": round(wall, 1),
        "peak_rss_mib": round(rss / 1024),
        "plan_mib": round(manifest["plan"]["bytes"] / 2**20, 1),
        "onnx_mib": round(onnx_path.stat().st_size / 2**20, 1),
        "layer_summary": manifest["layer_summary"],
        "precision_notes": manifest["precision_notes"],
        "runtime_version": manifest["runtime_version"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the full Swin-T 448 r64 (minutes, ~5 GB)")
    parser.add_argument("--work", default="runs/bench_rtx")
    parser.add_argument("-o", "--output", default="benchmarks/results/build_engine_rtx.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphs = _graphs(work, args.full)
    rows = []
    for name, path in graphs.items():
        rows.append(_build(name, path, work))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "precision_notes"}), flush=True)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    result = {"machine": f"{platform.processor() or platform.machine()}, no GPU, load average {load}", "rows": rows}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
