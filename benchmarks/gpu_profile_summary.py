"""``gpu_profile.py``'s summary: our rows beside the reference table (only on the reference's GPU), the targets as
ratios measured in the run, every measurement in one table, and what each section did.

Every ratio and row names the device it was measured on. The reference numbers (``reference/deploy_h100.json``)
were measured on an H100: on any other GPU (an H200 is faster) they are shown but not compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.gpu_session import device_name, same_gpu
from mtlora_deploy.utils.tables import markdown_table

REFERENCE = json.loads((Path(__file__).parent / "reference" / "deploy_h100.json").read_text())


def not_compared(gpu: str) -> str:
    return f"reference measured on {REFERENCE['gpu']}; this run on {gpu}: not compared"


def lookup(rows: list[dict], role: str, backend: str, precision: str, batch: int) -> dict | None:
    return next(
        (m for m in rows if (m["role"], m["backend"], m["precision"], m["batch"]) == (role, backend, precision, batch)),
        None,
    )


def run_as(m: dict[str, Any]) -> str:
    """How a row ran: eager, or compiled with CUDA graphs, or compiled with inductor's graph skips counted."""
    if m["backend"] != "torch-compiled":
        return "eager"
    settings = m.get("settings", {})
    mode = settings.get("backend", {}).get("compile_mode")
    if mode != "reduce-overhead":
        return f"compiled ({mode}: no CUDA graphs)"
    skips = settings.get("cudagraph_skips")
    if skips is None:
        return "compiled (CUDA-graph skips not readable)"
    return "compiled+graphs" if skips == 0 else f"compiled (CUDA graphs skipped: {skips})"


def reference_rows(rows: list[dict], env: dict[str, Any], small: int, large: int) -> list[dict[str, Any]]:
    """(ours, reference) pairs from the reference file; ``speedup_vs_reference`` > 1: ours is faster (same GPU only)."""
    gpu = device_name(env)
    compared = same_gpu(REFERENCE["gpu"], env.get("gpu"))
    out = []
    for name, role, backend, precision, size, unit, ref_name, ref_key in REFERENCE["comparisons"]:
        m = lookup(rows, role, backend, precision, small if size == "small" else large)
        ours = None if m is None else m["median_ms"] if unit == "ms" else m["throughput_images_per_s"]
        ref = REFERENCE["inference"][ref_name][ref_key]
        speedup = None if ours is None or not compared else ref / ours if unit == "ms" else ours / ref
        out.append(
            {
                "ours": name,
                "gpu": gpu,
                "run_as": None if m is None else run_as(m),
                "value": ours,
                "reference": f"{ref_name} ({ref_key})",
                "reference_gpu": REFERENCE["gpu"],
                "reference_value": ref,
                "compared": compared,
                "speedup_vs_reference": speedup,
                "note": None if compared else not_compared(gpu),
            }
        )
    return out


def target_rows(eager: dict, rows: list[dict], training: dict, env: dict, large: int) -> list[dict[str, Any]]:
    """The targets of docs/deploy.md, "Targets": two as ratios measured side by side in this run (any GPU), two
    against the reference (its GPU only)."""
    gpu, targets = device_name(env), REFERENCE["targets"]
    compared = same_gpu(REFERENCE["gpu"], env.get("gpu"))
    comparisons = eager.get("comparisons", {})
    out = [
        {
            "target": f"merged / bare backbone ({r['backend']} {r['precision']} bs{r['batch']}) {r['target']} "
            f"({_fmt(r['flop_ratio'])}x)",
            "gpu": gpu,
            "value": r["value"],
            "met": r["meets_target"],
        }
        for r in comparisons.get("vs_bare_backbone", [])
    ]
    floor = targets["per_task_models_slower_at_least"]
    out += [
        {
            "target": f"{len(r['tasks'])} single-task models / single pass ({r['backend']} {r['precision']} "
            f"bs{r['batch']}) >= {floor}",
            "gpu": gpu,
            "value": r["value"],
            "met": r["value"] >= floor,
        }
        for r in comparisons.get("shared_vs_per_task", [])
    ]
    m = lookup(rows, "merged", "torch-compiled", "fp16", large)
    reference_ips = REFERENCE["inference"]["reference code + torch.compile"]["fp16_bs32_ips"]
    out.append(
        _against_reference(
            f"merged compiled fp16 bs{large} img/s / reference compiled >= "
            f"{targets['compiled_throughput_vs_reference_at_least']}",
            None if m is None else m["throughput_images_per_s"] / reference_ips,
            targets["compiled_throughput_vs_reference_at_least"],
            gpu,
            compared,
        )
    )
    for kind, result in training.items():
        ips = result.get("images_per_s")
        need = targets["training_vs_reference_at_least"]
        ratio = None if ips is None else ips / REFERENCE["training"]["images_per_s"]
        out.append(_against_reference(f"training ({kind}) img/s / reference >= {need}", ratio, need, gpu, compared))
    return out


def _against_reference(target: str, ratio: float | None, need: float, gpu: str, compared: bool) -> dict[str, Any]:
    if not compared:
        return {"target": target, "gpu": gpu, "value": None, "met": None, "note": not_compared(gpu)}
    return {"target": target, "gpu": gpu, "value": ratio, "met": None if ratio is None else ratio >= need}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _gb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1e9:.2f}"


def measurement_rows(section: str, report: dict) -> list[list[Any]]:
    """One Markdown row per measurement: latency with its interval, images/s, GMAC, and peak memory (for compiled
    rows the step's peak, which counts the CUDA-graph pool; the per-round peak does not)."""
    out = []
    for m in report.get("measurements", []):
        settings = m.get("settings", {})
        interval = "" if m.get("ci_low_ms") is None else f" [{m['ci_low_ms']:.3f}, {m['ci_high_ms']:.3f}]"
        step_peak = settings.get("step_peak_allocated_bytes")
        memory = _gb(m.get("peak_memory_bytes")) + ("" if step_peak is None else f" (step: {_gb(step_peak)})")
        out.append(
            [
                section,
                m["role"],
                run_as(m),
                m["precision"],
                m["batch"],
                f"{m['median_ms']:.3f}{interval}",
                f"{m['throughput_images_per_s']:.1f}",
                _fmt(m.get("gmac_per_image")),
                memory,
            ]
        )
    return out


def summary_markdown(summary: dict[str, Any], compact: bool = False) -> str:
    """The summary as Markdown; ``compact``: without the measurement table, training JSON and ratio lines (what
    the script prints at the end, so that the command's last lines show the sections, reference and targets)."""
    env, gpu = summary["environment"], summary["device_name"]
    versions = ", ".join(
        f"{k} {env.get(k)}"
        for k in ("nvidia_driver", "cuda_runtime", "cuda_driver_supports", "torch", "triton", "timm")
    )
    parts = [
        "# GPU profile: Swin-T 448, 4 tasks, MTLoRA r=64 (random weights)"
        + (" [SMOKE: tiny config]" if summary["smoke"] else ""),
        f"Device: **{gpu}**; {versions}; python {env.get('python')}; TF32 off. Elapsed {summary['elapsed_s']:.0f} s "
        f"of a {summary['budget_s']:.0f} s budget. Reference numbers: {REFERENCE['source']}"
        + ("" if summary["reference_compared"] else f". **{not_compared(gpu)}**."),
        "## Sections",
        markdown_table(
            ["section", "status", "seconds", "steps"],
            [
                [name, s["status"], s["seconds"], "; ".join(f"{k}: {v['status']}" for k, v in s["steps"].items())]
                for name, s in summary["sections"].items()
            ],
        ),
        "## Against the reference table",
        markdown_table(
            ["ours", "measured on", "run as", "value", "reference", "reference value", "speedup vs reference"],
            [
                [
                    r["ours"],
                    r["gpu"],
                    r["run_as"] or "not measured",
                    _fmt(r["value"]),
                    f"{r['reference']} on {r['reference_gpu']}",
                    r["reference_value"],
                    _fmt(r["speedup_vs_reference"]) if r["compared"] else "not compared",
                ]
                for r in summary["reference_comparison"]
            ],
        ),
        "## Targets",
        markdown_table(
            ["target", "measured on", "value", "met"],
            [[r["target"], r["gpu"], _fmt(r["value"]), r.get("note") or _fmt(r["met"])] for r in summary["targets"]],
        ),
    ]
    training = [f"- {_training_line(kind, r)}" for kind, r in summary["training"].items()]
    parts += ["## Training", "\n".join(training) or "_not run_"]
    if compact:
        return "\n\n".join(parts + ["## cuda-marked tests", _cuda_tests_markdown(summary["cuda_tests"])]) + "\n"
    parts += [
        "## Measurements",
        markdown_table(
            ["section", "role", "run as", "precision", "batch", "median ms [95% CI]", "img/s", "GMAC/img", "peak GB"],
            [row for name, report in summary["reports"].items() for row in measurement_rows(name, report)],
        ),
        "## Training (all numbers)",
        "```json\n" + json.dumps(summary["training"], indent=2) + "\n```",
        "## cuda-marked tests",
        _cuda_tests_markdown(summary["cuda_tests"]),
        "## Ratios",
        "\n".join(f"- {line}" for line in summary["ratios"]) or "_none_",
    ]
    if summary["notes"]:
        parts += ["## Notes", "\n".join(f"- {n}" for n in summary["notes"])]
    return "\n\n".join(parts) + "\n"


def _training_line(kind: str, r: dict[str, Any]) -> str:
    step = r["step_ms"]
    interval = "" if step.get("ci_low") is None else f" [{step['ci_low']:.1f}, {step['ci_high']:.1f}]"
    memory = "" if r.get("peak_memory_gb") is None else f", peak {r['peak_memory_gb']:.2f} GB"
    return (
        f"{kind} on {r['gpu']}: {r['images_per_s']:.1f} img/s (batch {r['batch']}, AMP {r['amp']}, "
        f"{step['median']:.1f} ms/step{interval}){memory}"
    )


def _cuda_tests_markdown(result: dict[str, Any]) -> str:
    if not result:
        return "_not run_"
    counts = ", ".join(f"{v} {k}" for k, v in result["counts"].items())
    head = f"`{result['command']}`: exit {result['returncode']}, {counts} ({result['seconds']} s)"
    table = markdown_table(
        ["test", "outcome", "reason"], [[t["test"], t["outcome"], t["reason"]] for t in result["tests"]]
    )
    return head + "\n\n" + table
