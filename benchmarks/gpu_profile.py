"""One prepared GPU measurement of the full model: Swin-T 448, 4 tasks, MTLoRA r=64 (random weights, B != 0).

A short driver over ``run_profile`` (the library does the timing, statistics, FLOP floors and reports). Sections,
in priority order, within a time budget; a section that fails is recorded and the next one runs:
  1. eager: PyTorch fp32/fp16/bf16 x batches, single pass, merged, bare backbone, per-task models, head cost;
  2. training: images/s of the toolkit's own training step (AMP fp16 on CUDA, AdamW);
  3. compiled: torch.compile (CUDA graphs on CUDA), fp16, merged / bare backbone / unmerged.
TF32 is off (the reference numbers were taken that way). Each section writes its ``mtlora profile`` report into
OUT/SECTION/, and gpu_summary.json/.md hold our numbers against the reference table
(benchmarks/reference/deploy_h100.json, from docs/deploy.md, "Targets") and the targets.

    python benchmarks/gpu_profile.py                            # on a GPU, ~5 minutes
    python benchmarks/gpu_profile.py --smoke --out /tmp/smoke   # CPU, tiny config (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlora_deploy.model import DEFAULT_TASKS, build_model, resolve_config  # noqa: E402
from mtlora_deploy.profile.api import run_profile  # noqa: E402
from mtlora_deploy.profile.report import markdown_table  # noqa: E402
from mtlora_deploy.profile.settings import ProfileSettings  # noqa: E402
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "reference" / "deploy_h100.json").read_text())
TINY = {
    "backbone": "swin_test_tiny",
    "image_size": 64,
    "decoder_widths": [4, 4, 8, 8],
    "head_channels": 16,
    "task_agnostic_rank": 4,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, a fraction of a second per arm")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--duration", type=float, default=None, help="timed seconds per arm (default 1; smoke 0)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="start no new section after this")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile section")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    return parser.parse_args(argv)


def make_model(smoke: bool, seed: int = 0):
    """MTLoRA r=64 at 448 with 4 tasks (or the tiny test config), random weights and non-zero LoRA B's."""
    overrides = dict(TINY) if smoke else {"image_size": 448}
    config = resolve_config("mtlora-r64", overrides={**overrides, "tasks": list(DEFAULT_TASKS)})
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(config, warn_without_weights=False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name and "_B" in name:
                param.normal_(0.0, 0.02)
    return model.eval()


def profile_sections(args: argparse.Namespace, device: torch.device) -> dict[str, ProfileSettings | None]:
    """The ``run_profile`` settings of each section (None: skipped, with the reason recorded by ``main``)."""
    cuda, smoke = device.type == "cuda", args.smoke
    base = ProfileSettings(
        backends=("torch",),
        batches=(1, 2) if smoke else (1, 8, 32),
        device=str(device),
        duration=args.duration if args.duration is not None else (0.0 if smoke else 1.0),
        iterations=2 if smoke else 10,
        warmup=1 if smoke else 10,
        rounds=2 if smoke else 10,
        keep_going=True,
    )
    fast = "fp16" if cuda else "fp32"
    compiled = (
        None
        if args.skip_compile or (smoke and not args.compile_backend)
        else base.updated(
            backends=("torch-compiled",),
            precisions=(fast,),
            batches=(base.batches[0], base.batches[-1]),
            comparisons=("merged", "bare_backbone"),
            compile_options={"compile_backend": args.compile_backend} if args.compile_backend else {},
        )
    )
    precisions = ("fp32", "fp16") if smoke else ("fp32", "fp16", "bf16")  # fp16 is skipped (with a note) on CPUs
    return {"eager": base.updated(precisions=precisions), "compiled": compiled}


def measure_training(model_config, device: torch.device, smoke: bool, out: Path) -> dict[str, Any]:
    """Images/s of the toolkit's training step (``Trainer._train_step``: forward, loss, backward, AdamW)."""
    from mtlora_deploy.profile.timing import LatencyStats, make_timer
    from mtlora_deploy.trainer.config import TrainConfig
    from mtlora_deploy.trainer.data_setup import make_loader
    from mtlora_deploy.trainer.loop import Trainer

    batch = 2 if smoke else 32
    train = TrainConfig(
        data="synthetic",
        synthetic_images=4 * batch,
        batch_size=batch,
        num_workers=0,
        amp="fp16" if device.type == "cuda" else "off",
        device=str(device),
        max_steps=10**6,
    )
    trainer = Trainer(model_config, train, out / "training_run")
    setup = trainer._build()
    data = next(iter(make_loader(setup.train_set, None, batch, 0, True, device)))
    steps = iter(range(10**6))
    timer = make_timer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    stats = LatencyStats.from_samples(
        timer.time(lambda: trainer._train_step(setup, data, next(steps)), 2 if smoke else 20, 1 if smoke else 5)
    )
    return {
        "batch": batch,
        "amp": train.amp,
        "optimizer": type(setup.optimizer).__name__,
        "steps": stats.count,
        "step_ms": stats.to_dict(),
        "images_per_s": stats.throughput(batch),
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None,
    }


def lookup(reports: dict[str, dict], role: str, backend: str, precision: str, batch: int) -> dict | None:
    rows = [m for r in reports.values() for m in r["measurements"]]
    return next(
        (m for m in rows if (m["role"], m["backend"], m["precision"], m["batch"]) == (role, backend, precision, batch)),
        None,
    )


def reference_rows(reports: dict[str, dict], small: int, large: int) -> list[dict[str, Any]]:
    """(ours, reference) pairs from the reference file; ``speedup`` > 1 means ours is faster."""
    rows = []
    for name, role, backend, precision, size, unit, ref_name, ref_key in REFERENCE["comparisons"]:
        m = lookup(reports, role, backend, precision, small if size == "small" else large)
        ours = None if m is None else m["median_ms"] if unit == "ms" else m["throughput_images_per_s"]
        ref = REFERENCE["inference"][ref_name][ref_key]
        rows.append(
            {
                "ours": name,
                "value": ours,
                "reference": f"{ref_name} ({ref_key})",
                "reference_value": ref,
                "speedup_vs_reference": None if ours is None else ref / ours if unit == "ms" else ours / ref,
            }
        )
    return rows


def target_rows(reports: dict[str, dict], training: dict[str, Any], large: int) -> list[dict[str, Any]]:
    """docs/deploy.md, "Targets": the targets as ratios measured side by side in this run (two against the reference)"""
    targets, eager = REFERENCE["targets"], reports.get("eager", {}).get("comparisons", {})
    rows = [
        {
            "target": f"merged / bare backbone ({r['backend']} {r['precision']} bs{r['batch']}) {r['target']} "
            f"({_fmt(r['flop_ratio'])}x)",
            "value": r["value"],
            "met": r["meets_target"],
        }
        for r in eager.get("vs_bare_backbone", [])
    ]
    floor = targets["per_task_models_slower_at_least"]
    rows += [
        {
            "target": f"{len(r['tasks'])} single-task models / single pass ({r['backend']} {r['precision']} "
            f"bs{r['batch']}) >= {floor}",
            "value": r["value"],
            "met": r["value"] >= floor,
        }
        for r in eager.get("shared_vs_per_task", [])
    ]
    compiled = lookup(reports, "merged", "torch-compiled", "fp16", large)
    ratio = (
        None
        if compiled is None
        else compiled["throughput_images_per_s"]
        / REFERENCE["inference"]["reference code + torch.compile"]["fp16_bs32_ips"]
    )
    need = targets["compiled_throughput_vs_reference_at_least"]
    rows.append(
        {
            "target": f"merged compiled fp16 bs{large} img/s / reference compiled >= {need}",
            "value": ratio,
            "met": None if ratio is None else ratio >= need,
        }
    )
    train = training.get("images_per_s")
    ratio = None if train is None else train / REFERENCE["training"]["images_per_s"]
    need = targets["training_vs_reference_at_least"]
    rows.append(
        {
            "target": f"training img/s / reference >= {need}",
            "value": ratio,
            "met": None if ratio is None else ratio >= need,
        }
    )
    return rows


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    env = summary["environment"]
    parts = [
        "# GPU profile: Swin-T 448, 4 tasks, MTLoRA r=64 (random weights)",
        f"Device: {env.get('gpu') or env.get('cpu')}; torch {env.get('torch')}; TF32 off; smoke={summary['smoke']}. "
        f"Reference numbers: {REFERENCE['source']}: compare only on the same GPU.",
        "## Against the reference table",
        markdown_table(
            ["ours", "value", "reference", "reference value", "speedup vs reference"],
            [
                [r["ours"], _fmt(r["value"]), r["reference"], r["reference_value"], _fmt(r["speedup_vs_reference"])]
                for r in summary["reference_comparison"]
            ],
        ),
        "## Targets (ratios measured in this run)",
        markdown_table(
            ["target", "value", "met"], [[r["target"], _fmt(r["value"]), _fmt(r["met"])] for r in summary["targets"]]
        ),
        "## Ratios",
        "\n".join(f"- {line}" for line in summary["ratios"]) or "_none_",
        "## Training",
        "```json\n" + json.dumps(summary["training"], indent=2) + "\n```",
        "## Sections",
        "```json\n" + json.dumps(summary["sections"], indent=2) + "\n```",
    ]
    if summary["notes"]:
        parts += ["## Notes", "\n".join(f"- {n}" for n in summary["notes"])]
    return "\n\n".join(parts) + "\n"


def write_summary(out: Path, smoke: bool, reports: dict, sections: dict, training: dict, notes: list) -> dict:
    """gpu_summary.json/.md; written after every section so a cut-off session still leaves results."""
    batches = sorted({m["batch"] for r in reports.values() for m in r["measurements"]}) or [1]
    summary = {
        "smoke": smoke,
        "environment": next(iter(reports.values()), {}).get("environment", {}),
        "sections": sections,
        "reference_comparison": reference_rows(reports, batches[0], batches[-1]),
        "targets": target_rows(reports, training, batches[-1]),
        "training": training,
        "reference": REFERENCE,
        "ratios": [line for r in reports.values() for line in r["ratios"]],
        "notes": notes + [f"{name}: {n}" for name, r in reports.items() for n in r["notes"]],
    }
    write_json_atomic(out / "gpu_summary.json", summary)
    write_bytes_atomic(out / "gpu_summary.md", summary_markdown(summary).encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.out:
        print("give --out DIR (or set $OUT)", file=sys.stderr)
        return 2
    out, started = Path(args.out), time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    model = make_model(args.smoke)
    reports, sections, training, notes = {}, {}, {}, []
    profiles = profile_sections(args, device)
    plan = [("eager", profiles["eager"]), ("training", "training"), ("compiled", profiles["compiled"])]
    summary = write_summary(out, args.smoke, reports, sections, training, notes)
    for name, settings in plan:
        left = args.budget_s - (time.perf_counter() - started)
        if settings is None:
            notes.append(f"{name}: skipped (--skip-compile, or --smoke without --compile-backend)")
            continue
        if left <= 0:
            notes.append(f"{name}: skipped (time budget {args.budget_s:.0f} s spent)")
            continue
        begin = time.perf_counter()
        try:  # record the error and go on: one broken section must not cost the rest of a short GPU session
            if name == "training":
                training = measure_training(model.config, device, args.smoke, out)
            else:
                reports[name] = run_profile(
                    [("mtlora-r64", model)],
                    settings.updated(budget_s=left),
                    output=out / name,
                    extra_run={"script": "benchmarks/gpu_profile.py", "smoke": args.smoke, "tf32": False},
                )
            sections[name] = {"seconds": round(time.perf_counter() - begin, 1), "failed": False}
        except Exception as exc:  # noqa: BLE001
            sections[name] = {"seconds": round(time.perf_counter() - begin, 1), "failed": True}
            notes.append(f"{name} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        summary = write_summary(out, args.smoke, reports, sections, training, notes)
    print(summary_markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
