"""Accuracy by precision: PyTorch fp32 vs ONNX Runtime fp32 / fp16 / int8 / fp8 / int8-wo / int4-wo, per task.

Trains a small MTLoRA model on the synthetic set (or loads ``--run DIR``), exports the fp32 ONNX graph,
draws calibration images from the TRAIN split, makes the fp16, int8 (one per ``--methods``), fp8 (max ranges) and
weight-only variants (``--extra``), evaluates everything on the VAL split with ``evaluate_artifact`` and prints each
variant's per-task metric delta against PyTorch fp32.

Example: python benchmarks/accuracy_by_precision.py --out runs/precision_bench --steps 300
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mtlora_deploy.calib import draw_calibration_set, make_precision_variant, read_precision_metadata
from mtlora_deploy.compare.untrained import untrained_vs_trained
from mtlora_deploy.deploy.export import export_onnx
from mtlora_deploy.report.evaluate import evaluate_artifact
from mtlora_deploy.trainer.api import start_run
from mtlora_deploy.trainer.metrics import primary_metric

TASKS = ("semseg", "human_parts", "sal", "normals")


def train_small_model(run_dir: Path, steps: int, images: int, image_size: int, seed: int) -> Path:
    """The tiny Swin with MTLoRA r8 on the synthetic set; a high LR makes a few hundred CPU steps enough."""
    model = {
        "backbone": "swin_test_tiny",
        "image_size": image_size,
        "decoder_widths": (8, 8, 16, 16),
        "head_channels": 64,
        "task_agnostic_rank": 8,
        "tasks": TASKS,
    }
    train = {
        "data": "synthetic",
        "synthetic_images": images,
        "batch_size": 8,
        "num_workers": 0,
        "base_lr": 0.2,
        "warmup_steps": 10,
        "max_steps": steps,
        "eval_every": 10_000,
        "log_every": 50,
        "seed": seed,
        "device": "cpu",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start_run("mtlora-r16", None, model, train, run_dir)
    return run_dir


def make_variants(
    run_dir: Path, out: Path, methods: list[str], calib_images: int, legacy: bool, tool: str, extra: list[str]
) -> tuple[dict[str, Path], dict[str, float]]:
    """fp32 export, a train-split calibration draw, fp16, one int8 variant per method and the ``extra`` precisions
    (fp8: max ranges; fp16 and weight-only use the images for their fp16 overflow scan); files and seconds."""
    fp32 = out / "model_fp32.onnx"
    report = export_onnx(run_dir, fp32, legacy=legacy)
    calib = draw_calibration_set(
        run_dir / "data", "train", calib_images, report.image_size, 0, out / "calib" / "train.npz"
    )
    jobs = {"ort fp16": ("fp16", "model_fp16.onnx", "entropy")}
    jobs.update({f"ort int8 ({m})": ("int8", f"model_int8_{m}.onnx", m) for m in methods})
    jobs.update({f"ort {p}": (p, f"model_{p}.onnx", "max" if p == "fp8" else None) for p in extra})
    variants, seconds = {"ort fp32": fp32}, {}
    for name, (precision, file_name, method) in jobs.items():
        start = time.perf_counter()
        variants[name] = make_precision_variant(
            fp32, precision, out / file_name, calib, tool=tool, calibration_method=method
        )
        seconds[name] = time.perf_counter() - start
    return variants, seconds


def evaluate_all(run_dir: Path, variants: dict[str, Path], out: Path) -> dict[str, dict[str, Any]]:
    """Val-split metrics of the PyTorch checkpoint and of every ONNX variant (ONNX Runtime CPU)."""
    data = str(run_dir / "data")
    results = {"torch fp32": evaluate_artifact(run_dir, data, "val", "torch", output=out / "eval_torch_fp32.json")}
    for name, path in variants.items():
        results[name] = evaluate_artifact(path, data, "val", "onnxruntime", output=out / f"eval_{path.stem}.json")
    return results


def delta_table(results: dict[str, dict[str, Any]], untrained: dict[str, dict[str, Any]]) -> Table:
    """One row per artefact: each task's primary metric and its delta against PyTorch fp32."""
    title = "val split, primary metric per task (delta vs PyTorch fp32); normals: mean angle, lower is better"
    table = Table(title=title)
    table.add_column("model")
    for task in TASKS:
        table.add_column(f"{task} {primary_metric(task).name}", justify="right")
    table.add_column("delta-m % vs ref. Swin-T", justify="right")
    table.add_row("untrained (same arch)", *[f"{untrained[t]['untrained']:.2f}" for t in TASKS], "")
    reference = results["torch fp32"]["primary"]
    for name, result in results.items():
        cells = [f"{result['primary'][t]:.2f} ({result['primary'][t] - reference[t]:+.2f})" for t in TASKS]
        delta = result["delta_m_vs_single_task_reference"]
        table.add_row(name, *cells, f"{delta:+.2f}" if delta is not None else "")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/precision_bench"), help="Folder for everything.")
    parser.add_argument("--run", type=Path, default=None, help="Use this trained run folder instead of training.")
    parser.add_argument("--steps", type=int, default=300, help="Training steps (batch 8).")
    parser.add_argument("--images", type=int, default=128, help="Synthetic images (75%% train / 25%% val).")
    parser.add_argument("--image-size", type=int, default=64, help="Model input size.")
    parser.add_argument("--calib-images", type=int, default=64, help="Calibration images drawn from train.")
    parser.add_argument("--methods", default="max,entropy", help="int8 calibration methods, comma-separated.")
    parser.add_argument("--extra", default="fp8,int8-wo,int4-wo", help="more precisions, comma-separated ('' none).")
    parser.add_argument("--legacy-export", action="store_true", help="TorchScript exporter instead of torch.export.")
    parser.add_argument("--tool", default="auto", help="auto, modelopt or onnxruntime (precision converters).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console, start = Console(width=150), time.perf_counter()
    run_dir = args.run or train_small_model(args.out / "run", args.steps, args.images, args.image_size, args.seed)
    console.print(f"trained/loaded {run_dir} at {time.perf_counter() - start:.0f} s")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variants, seconds = make_variants(
            run_dir,
            args.out,
            args.methods.split(","),
            args.calib_images,
            args.legacy_export,
            args.tool,
            [p for p in args.extra.split(",") if p],
        )
    for name, path in variants.items():
        record = read_precision_metadata(path)
        console.print(
            f"{name}: {path.name} made with {record.get('precision_tool', 'export')} "
            f"{record.get('precision_tool_version', '')} in {seconds.get(name, 0):.0f} s"
        )
    console.print(f"variants ready at {time.perf_counter() - start:.0f} s")
    results = evaluate_all(run_dir, variants, args.out)
    console.print(delta_table(results, untrained_vs_trained(run_dir)))
    records = {
        name: {
            "primary": r["primary"],
            "delta_m_vs_single_task_reference": r["delta_m_vs_single_task_reference"],
            "artefact": r["artefact"],
            "precision": read_precision_metadata(variants[name]) if name in variants else {},
        }
        for name, r in results.items()
    }
    (args.out / "accuracy_by_precision.json").write_text(json.dumps(records, indent=2, default=str))
    console.print(f"done in {time.perf_counter() - start:.0f} s; wrote {args.out / 'accuracy_by_precision.json'}")


if __name__ == "__main__":
    main()
