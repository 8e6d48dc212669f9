"""One prepared GPU measurement of the full model: Swin-T 448, 4 tasks, MTLoRA r=64 (random weights).

Measures, in priority order and within a time budget (a lent H100 session is short):
  1. PyTorch eager, fp32/fp16/bf16 x batch 1/8/32: single pass (unmerged), merged, bare backbone, per-task models;
  2. training throughput (AMP fp16, batch 32, AdamW) of MTLoRA r=64 unmerged;
  3. per-task head cost (eager fp16, largest batch);
  4. torch.compile with CUDA graphs (reduce-overhead), fp16, batch 32 and 1: merged, bare backbone, unmerged.
TF32 is off (the reference numbers were taken that way). Writes profile.json/.md/latency_vs_batch.png (the
``mtlora profile`` report) and gpu_summary.json/.md (our numbers against deploy.md section 6's reference table
and the targets) into $OUT or --out.

    python benchmarks/gpu_profile.py                 # on a GPU, ~5 minutes
    python benchmarks/gpu_profile.py --smoke --out /tmp/smoke   # CPU, tiny config, 2 iterations (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtlora_deploy.model import DEFAULT_TASKS, build_model, resolve_config
from mtlora_deploy.profile.api import finish_report
from mtlora_deploy.profile.comparisons import torch_candidates
from mtlora_deploy.profile.report import markdown_table
from mtlora_deploy.profile.runs import Candidate, Measurement, RunSettings, measure_candidate
from mtlora_deploy.utils.atomic import write_bytes_atomic, write_json_atomic

# deploy.md section 6: lent H100, torch 2.11, 448 input, 4 tasks, TF32 off, CUDA-event medians.
REFERENCE = {
    "reference MTLoRA r64 unmerged": {
        "fp16_bs1_eager_ms": 21.0,
        "fp16_bs1_graph_ms": 3.65,
        "fp16_bs32_ips": 571,
        "fp32_bs32_ips": 263,
    },
    "bare timm Swin-T features": {
        "fp16_bs1_eager_ms": 7.9,
        "fp16_bs1_graph_ms": 1.33,
        "fp16_bs32_ips": 1651,
        "fp32_bs32_ips": 650,
    },
    "reference code + torch.compile": {"fp16_bs1_graph_ms": 2.99, "fp16_bs32_ips": 1091},
    "bare Swin-T + torch.compile": {"fp16_bs1_graph_ms": 1.06, "fp16_bs32_ips": 2680},
}
REFERENCE_TRAINING = {"images_per_s": 161.0, "peak_gb": 23.8}
TARGETS = {
    "merged_vs_bare": 1.25,
    "compiled_throughput_vs_reference": 2.0,
    "shared_vs_per_task": 3.2,
    "training_vs_reference": 1.5,
}
TINY = {
    "backbone": "swin_test_tiny",
    "image_size": 64,
    "decoder_widths": [4, 4, 8, 8],
    "head_channels": 16,
    "task_agnostic_rank": 4,
}


@dataclass
class Plan:
    """What this invocation measures."""

    device: torch.device
    batches: list[int]
    precisions: list[str]
    iterations: int
    warmup: int
    train_steps: int
    budget_s: float
    compile: bool
    compile_backend: str | None
    started: float = 0.0
    deadline: float = 0.0
    sections: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT"), help="output folder (default: $OUT)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, 2 iterations (a CI check)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--iterations", type=int, default=None, help="timed iterations (default 30; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 10; smoke 1)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop starting new measurements after this")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile section")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    smoke = args.smoke
    return Plan(
        device,
        [1, 2] if smoke else [1, 8, 32],
        ["fp32", "fp16", "bf16"],
        args.iterations or (2 if smoke else 30),
        args.warmup if args.warmup is not None else (1 if smoke else 10),
        2 if smoke else 20,
        args.budget_s,
        not args.skip_compile and (not smoke or bool(args.compile_backend)),
        args.compile_backend,
    )


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


def set_numerics(device: torch.device) -> None:
    """TF32 off, as in the reference measurements."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


# -- measuring within the budget ---------------------------------------------------------------------------------
def run_jobs(
    plan: Plan, section: str, jobs: list[tuple[Candidate, list[int]]], min_left_s: float = 0.0, before_each=None
) -> list[Measurement]:
    """Measure ``(candidate, batches)`` jobs in order. Jobs that would start past the deadline are skipped and a
    job that fails is noted: one broken measurement must not cost the rest of a short GPU session."""
    settings = RunSettings(plan.device, plan.iterations, plan.warmup)
    start, out, skipped, failed = time.perf_counter(), [], 0, 0
    for candidate, batches in jobs:
        if time.perf_counter() > plan.deadline - min_left_s:
            skipped += 1
            continue
        print(
            f"[{section} {time.perf_counter() - plan.started:5.0f} s] {candidate.backend} {candidate.precision} "
            f"{candidate.role} batch {batches}",
            flush=True,
        )
        try:
            if before_each is not None:
                before_each()
            out += measure_candidate(candidate, batches, settings)
        except Exception as exc:  # noqa: BLE001  (reported in the summary, the session goes on)
            failed += 1
            plan.notes.append(
                f"{section}: {candidate.label} {candidate.precision} batch {batches} failed: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            )
    if skipped:
        plan.notes.append(
            f"{section}: {skipped} of {len(jobs)} measurements skipped (time budget {plan.budget_s:.0f} s)"
        )
    plan.sections[section] = {
        "seconds": round(time.perf_counter() - start, 1),
        "jobs": len(jobs),
        "skipped": skipped,
        "failed": failed,
    }
    return out


def eager_section(plan: Plan, model) -> list[Measurement]:
    candidates = torch_candidates(
        model,
        "mtlora-r64",
        ["torch"],
        plan.precisions,
        plan.device,
        ["per_task", "merged", "bare_backbone"],
        {},
        plan.notes,
    )
    return run_jobs(plan, "eager", [(c, plan.batches) for c in candidates])


def head_cost_section(plan: Plan, model) -> list[Measurement]:
    precision = "fp16" if plan.device.type == "cuda" else "fp32"
    candidates = torch_candidates(model, "mtlora-r64", ["torch"], [precision], plan.device, ["head_cost"], {}, [])
    jobs = [(c, plan.batches[-1:]) for c in candidates if c.role.startswith("without:")]
    return run_jobs(plan, "head_cost", jobs)


def compiled_section(plan: Plan, model) -> list[Measurement]:
    if not plan.compile:
        plan.notes.append("compiled: skipped (--skip-compile, or --smoke without --compile-backend)")
        return []
    options = {"compile_backend": plan.compile_backend} if plan.compile_backend else {}
    precision = "fp16" if plan.device.type == "cuda" else "fp32"
    candidates = torch_candidates(
        model, "mtlora-r64", ["torch-compiled"], [precision], plan.device, ["merged", "bare_backbone"], options, []
    )
    by_role = {c.role: c for c in candidates}
    order = [
        ("merged", -1),
        ("merged", 0),
        ("bare_backbone", -1),
        ("bare_backbone", 0),
        ("single_pass", 0),
        ("single_pass", -1),
    ]
    jobs = [(by_role[role], [plan.batches[i]]) for role, i in order]
    return run_jobs(
        plan, "compiled", jobs, min_left_s=60.0 if plan.device.type == "cuda" else 0.0, before_each=torch._dynamo.reset
    )


# -- training throughput -----------------------------------------------------------------------------------------
def _targets(config, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    size, gen = config.image_size, torch.Generator().manual_seed(1)
    out = {}
    for task in config.tasks:
        if task in ("semseg", "human_parts"):
            out[task] = torch.randint(0, config.output_channels(task), (batch, size, size), generator=gen)
        elif task == "normals":
            out[task] = torch.nn.functional.normalize(torch.randn(batch, 3, size, size, generator=gen), dim=1)
        else:
            out[task] = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
    return {t: v.to(device) for t, v in out.items()}


def training_section(plan: Plan, smoke: bool) -> dict[str, Any]:
    """Images/s of full training steps; a failure is a note (see ``run_jobs``)."""
    try:
        return measure_training(plan, smoke)
    except Exception as exc:  # noqa: BLE001
        plan.notes.append(f"training failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        return {}


def measure_training(plan: Plan, smoke: bool) -> dict[str, Any]:
    """Images/s of full training steps (forward, loss, backward, AdamW) of MTLoRA r=64, unmerged, AMP fp16."""
    from mtlora_deploy.profile.timing import LatencyStats, make_timer
    from mtlora_deploy.trainer.losses import MultiTaskLoss
    from mtlora_deploy.trainer.optim import build_optimizer

    if time.perf_counter() > plan.deadline:
        plan.notes.append("training: skipped (time budget)")
        return {}
    start, batch = time.perf_counter(), 2 if smoke else 32
    model = make_model(smoke).train().to(plan.device)
    config, cuda = model.config, plan.device.type == "cuda"
    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)
    criterion, scaler = MultiTaskLoss(config.tasks), torch.amp.GradScaler("cuda", enabled=cuda)
    images = torch.randn(batch, 3, config.image_size, config.image_size, device=plan.device)
    targets = _targets(config, batch, plan.device)

    def step() -> None:
        with torch.autocast(plan.device.type, dtype=torch.float16, enabled=cuda):
            outputs = model(images)
        loss, _ = criterion({t: v.float() for t, v in outputs.items()}, targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    if cuda:
        torch.cuda.reset_peak_memory_stats(plan.device)
    stats = LatencyStats.from_samples(make_timer(plan.device).time(step, plan.train_steps, max(1, plan.warmup // 2)))
    result = {
        "batch": batch,
        "amp": "fp16" if cuda else "off (cpu)",
        "optimizer": "AdamW",
        "steps": plan.train_steps,
        "step_ms": stats.to_dict(),
        "images_per_s": stats.throughput(batch),
        "peak_memory_gb": torch.cuda.max_memory_allocated(plan.device) / 1e9 if cuda else None,
    }
    plan.sections["training"] = {"seconds": round(time.perf_counter() - start, 1)}
    return result


# -- our numbers against the reference table and the targets -----------------------------------------------------
def lookup(measurements: list[Measurement], role: str, backend: str, precision: str, batch: int) -> Measurement | None:
    return next(
        (
            m
            for m in measurements
            if (m.candidate.role, m.candidate.backend, m.candidate.precision, m.batch)
            == (role, backend, precision, batch)
        ),
        None,
    )


def _ms(m: Measurement | None) -> float | None:
    return None if m is None else m.latency.median


def _ips(m: Measurement | None) -> float | None:
    return None if m is None else m.throughput


def reference_rows(ms: list[Measurement], big: int) -> list[dict[str, Any]]:
    """(ours, reference) pairs; ``speedup`` > 1 means ours is faster. ``big`` is the largest batch measured."""
    pairs = [
        (
            "merged, eager fp16 bs1 (ms)",
            _ms(lookup(ms, "merged", "torch", "fp16", 1)),
            "reference MTLoRA r64 unmerged",
            "fp16_bs1_eager_ms",
            "ms",
        ),
        (
            "unmerged, eager fp16 bs1 (ms)",
            _ms(lookup(ms, "single_pass", "torch", "fp16", 1)),
            "reference MTLoRA r64 unmerged",
            "fp16_bs1_eager_ms",
            "ms",
        ),
        (
            "bare backbone, eager fp16 bs1 (ms)",
            _ms(lookup(ms, "bare_backbone", "torch", "fp16", 1)),
            "bare timm Swin-T features",
            "fp16_bs1_eager_ms",
            "ms",
        ),
        (
            "merged, compiled+graphs fp16 bs1 (ms)",
            _ms(lookup(ms, "merged", "torch-compiled", "fp16", 1)),
            "reference code + torch.compile",
            "fp16_bs1_graph_ms",
            "ms",
        ),
        (
            "bare backbone, compiled+graphs fp16 bs1 (ms)",
            _ms(lookup(ms, "bare_backbone", "torch-compiled", "fp16", 1)),
            "bare Swin-T + torch.compile",
            "fp16_bs1_graph_ms",
            "ms",
        ),
        (
            f"merged, eager fp16 bs{big} (img/s)",
            _ips(lookup(ms, "merged", "torch", "fp16", big)),
            "reference MTLoRA r64 unmerged",
            "fp16_bs32_ips",
            "ips",
        ),
        (
            f"merged, eager fp32 bs{big} (img/s)",
            _ips(lookup(ms, "merged", "torch", "fp32", big)),
            "reference MTLoRA r64 unmerged",
            "fp32_bs32_ips",
            "ips",
        ),
        (
            f"bare backbone, eager fp32 bs{big} (img/s)",
            _ips(lookup(ms, "bare_backbone", "torch", "fp32", big)),
            "bare timm Swin-T features",
            "fp32_bs32_ips",
            "ips",
        ),
        (
            f"merged, compiled+graphs fp16 bs{big} (img/s)",
            _ips(lookup(ms, "merged", "torch-compiled", "fp16", big)),
            "reference code + torch.compile",
            "fp16_bs32_ips",
            "ips",
        ),
        (
            f"bare backbone, compiled+graphs fp16 bs{big} (img/s)",
            _ips(lookup(ms, "bare_backbone", "torch-compiled", "fp16", big)),
            "bare Swin-T + torch.compile",
            "fp16_bs32_ips",
            "ips",
        ),
    ]
    rows = []
    for ours_name, ours, ref_name, ref_key, unit in pairs:
        ref = REFERENCE[ref_name][ref_key]
        speedup = None if ours is None else (ref / ours if unit == "ms" else ours / ref)
        rows.append(
            {
                "ours": ours_name,
                "value": ours,
                "reference": f"{ref_name} ({ref_key})",
                "reference_value": ref,
                "speedup_vs_reference": speedup,
            }
        )
    return rows


def _met(value: float | None, ok: bool) -> bool | None:
    return None if value is None else ok


def target_rows(ms: list[Measurement], comparisons: dict, training: dict, big: int) -> list[dict[str, Any]]:
    """The section 6 targets, as ratios measured in this run (plus two against the reference numbers)."""
    rows = [
        {
            "target": f"merged / bare backbone ({r['backend']} {r['precision']} bs{r['batch']}) <= 1.25",
            "value": r["ratio"],
            "met": _met(r["ratio"], r["meets_target"]),
        }
        for r in comparisons["vs_bare_backbone"]
    ]
    rows += [
        {
            "target": f"{len(r['tasks'])} single-task models / single pass ({r['backend']} {r['precision']} "
            f"bs{r['batch']}) >= {TARGETS['shared_vs_per_task']}",
            "value": r["ratio"],
            "met": _met(r["ratio"], r["ratio"] is not None and r["ratio"] >= TARGETS["shared_vs_per_task"]),
        }
        for r in comparisons["shared_vs_per_task"]
    ]
    compiled = _ips(lookup(ms, "merged", "torch-compiled", "fp16", big))
    ratio = None if compiled is None else compiled / REFERENCE["reference code + torch.compile"]["fp16_bs32_ips"]
    rows.append(
        {
            "target": f"merged compiled fp16 bs{big} throughput / reference compiled (1091 img/s) >= 2",
            "value": ratio,
            "met": _met(ratio, ratio is not None and ratio >= TARGETS["compiled_throughput_vs_reference"]),
        }
    )
    train = training.get("images_per_s")
    ratio = None if train is None else train / REFERENCE_TRAINING["images_per_s"]
    rows.append(
        {
            "target": "training images/s / reference (161 img/s) >= 1.5",
            "value": ratio,
            "met": _met(ratio, ratio is not None and ratio >= TARGETS["training_vs_reference"]),
        }
    )
    return rows


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    parts = [
        "# GPU profile: Swin-T 448, 4 tasks, MTLoRA r=64 (random weights)",
        (
            f"Device: {summary['environment'].get('gpu') or summary['environment'].get('cpu')}; torch "
            f"{summary['environment']['torch']}; TF32 off; smoke={summary['smoke']}. Reference numbers: deploy.md "
            "section 6 (lent H100, torch 2.11): compare only on the same GPU."
        ),
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
        "## Training",
        "```json\n" + json.dumps(summary["training"], indent=2) + "\n```",
        "## Sections",
        "```json\n" + json.dumps(summary["sections"], indent=2) + "\n```",
    ]
    if summary["notes"]:
        parts += ["## Notes", "\n".join(f"- {n}" for n in summary["notes"])]
    return "\n\n".join(parts) + "\n"


def write_outputs(
    out: Path, plan: Plan, measurements: list[Measurement], training: dict[str, Any], smoke: bool
) -> dict[str, Any]:
    """The profile report and the summary; called after every section so a cut-off session still leaves results."""
    settings = RunSettings(plan.device, plan.iterations, plan.warmup)
    report = finish_report(
        measurements,
        settings,
        plan.batches,
        list(plan.notes),
        out,
        extra_run={"script": "benchmarks/gpu_profile.py", "smoke": smoke, "tf32": False},
    )
    big = plan.batches[-1]
    summary = {
        "smoke": smoke,
        "environment": report["environment"],
        "sections": plan.sections,
        "reference_comparison": reference_rows(measurements, big),
        "targets": target_rows(measurements, report["comparisons"], training, big),
        "training": training,
        "reference": {"inference": REFERENCE, "training": REFERENCE_TRAINING},
        "notes": plan.notes,
        "ratios": report["ratios"],
    }
    write_json_atomic(out / "gpu_summary.json", summary)
    write_bytes_atomic(out / "gpu_summary.md", summary_markdown(summary).encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.out:
        print("give --out DIR (or set $OUT)", file=sys.stderr)
        return 2
    out, plan = Path(args.out), make_plan(args)
    plan.started = time.perf_counter()
    plan.deadline = plan.started + plan.budget_s
    set_numerics(plan.device)
    model = make_model(args.smoke)
    measurements = eager_section(plan, model)
    write_outputs(out, plan, measurements, {}, args.smoke)
    training = training_section(plan, args.smoke)
    measurements += head_cost_section(plan, model)
    write_outputs(out, plan, measurements, training, args.smoke)
    measurements += compiled_section(plan, model)
    summary = write_outputs(out, plan, measurements, training, args.smoke)
    print(summary_markdown(summary))
    print("\n".join(summary["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
