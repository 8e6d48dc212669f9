"""One prepared GPU measurement of the full model: Swin-T 448, 4 tasks, MTLoRA r=64 (random weights, B != 0).

Made for one command on a lent GPU machine (benchmarks/README.md says how to run it): the whole run stays inside
--budget-s (at most 480 s), every section has a hard deadline and is written step by step as it is measured, the
work (training data, per-section reports) happens in a scratch folder and only a few flat files go to the output
folder (the machine hands back at most 8, none in folders). Sections, in priority order:
  1. eager: PyTorch fp16, fp32, bf16 (one step each; batch 1 and 32): the single pass, merged, bare backbone,
     four single-task models, head cost, with FLOP floors and 95% intervals (the profile library's measure_group);
  2. training: images/s and peak memory of the toolkit's training step (AMP fp16 on CUDA, AdamW, batch 32);
  3. cuda_tests: `pytest -m cuda` in a subprocess: which tests ran, which skipped and why;
  4. compiled: torch.compile (reduce-overhead: CUDA graphs) fp16, one compile per step, the merged model first
     (merged, bare backbone, unmerged x batch 1, 32), with inductor's CUDA-graph skip count and the step's peak
     memory including the graph pool;
  (training_compiled: the training step under torch.compile, only when named in --sections.)
TF32 is off (the reference numbers were taken that way).

    PYTHONPATH=. timeout 540 python benchmarks/gpu_profile.py --budget-s 450        # on the lent GPU, into $OUT
    python benchmarks/gpu_profile.py --smoke --out /tmp/smoke                         # CPU, tiny config (CI)
"""

from __future__ import annotations

import importlib.util
import sys

REQUIRED_MODULES = ("torch", "timm", "numpy", "PIL", "scipy", "rich", "safetensors")
_MISSING = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
if _MISSING:  # one line before any import that would fail with a traceback
    sys.exit(f"gpu_profile.py: missing Python packages: {', '.join(_MISSING)} (carry their wheels with the tree)")

import argparse  # noqa: E402
import copy  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import gpu_profile_summary as summaries  # noqa: E402
from benchmarks.gpu_session import (  # noqa: E402
    Budget,
    CudagraphSkips,
    CudaMemory,
    ResultsFolder,
    Section,
    Step,
    StepPeak,
    device_name,
    gpu_environment,
    run_cuda_tests,
    run_section,
    same_gpu,
)
from mtlora_deploy.model import DEFAULT_TASKS, build_model, resolve_config  # noqa: E402
from mtlora_deploy.profile.api import _recompile_room, collect_candidates, finish_report  # noqa: E402
from mtlora_deploy.profile.rounds import measure_group  # noqa: E402
from mtlora_deploy.profile.runs import Measurement, RunSettings, environment_settings  # noqa: E402
from mtlora_deploy.profile.timing import TimingPolicy  # noqa: E402
from mtlora_deploy.utils.atomic import write_json_atomic  # noqa: E402

MAX_BUDGET_S = 480.0  # one command on the lent machine runs at most 10 minutes, machine start and copies included
SECTIONS = ("eager", "training", "cuda_tests", "compiled", "training_compiled")
DEFAULT_SECTIONS = ("eager", "training", "cuda_tests", "compiled")
SOURCE = "mtlora-r64"
TINY = {
    "backbone": "swin_test_tiny",
    "image_size": 64,
    "decoder_widths": [4, 4, 8, 8],
    "head_channels": 16,
    "task_agnostic_rank": 4,
}
COMPILED_ROLES = ("merged", "bare_backbone", "single_pass")  # the merged model compiles first


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="example: PYTHONPATH=. PYTHONUNBUFFERED=1 timeout 540 python3 benchmarks/gpu_profile.py --budget-s 450",
    )
    parser.add_argument("--out", default=os.environ.get("OUT"), help="results folder, flat, <= 8 files (default $OUT)")
    parser.add_argument("--work", default=None, help="scratch folder for the work (default: a temporary one, removed)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny config, a fraction of a second per arm")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--duration", type=float, default=None, help="timed seconds per arm (default 0.5; smoke 0)")
    parser.add_argument(
        "--budget-s", type=float, default=450.0, help=f"the whole run's seconds (<= {MAX_BUDGET_S:.0f})"
    )
    parser.add_argument(
        "--sections", default=None, help=f"comma list of {', '.join(SECTIONS)} (default: all but the last)"
    )
    parser.add_argument("--skip-compile", action="store_true", help="leave out the compiled sections")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor)")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> str | None:
    """The one-line problem with the options, or None."""
    if not args.out:
        return "give --out DIR (or set $OUT)"
    if not 0 < args.budget_s <= MAX_BUDGET_S:
        return f"--budget-s: got {args.budget_s:g}, expected 0 < seconds <= {MAX_BUDGET_S:.0f} (one command: 10 min)"
    unknown = [s for s in (args.sections or "").split(",") if s and s not in SECTIONS]
    if unknown:
        return f"--sections: got {unknown[0]!r}, expected any of {', '.join(SECTIONS)}"
    return None


def make_model(smoke: bool, seed: int = 0):
    """MTLoRA r=64 at 448 with 4 tasks (or the tiny test config), random weights and non-zero LoRA B's, on the CPU."""
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


@dataclass
class Run:
    """What the sections share, and everything measured so far (written out after every step)."""

    args: argparse.Namespace
    argv: list[str]
    device: torch.device
    master: torch.nn.Module  # on the CPU; every step copies it, so its GPU memory is the step's own
    work: Path
    results: ResultsFolder
    budget: Budget
    env: dict[str, Any]
    settings: RunSettings
    batches: tuple[int, ...]
    measurements: dict[str, list[Measurement]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    cuda_tests: dict[str, Any] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    gmac_cache: dict = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)  # each section's report, rebuilt when it is stale
    stale: set[str] = field(default_factory=set)

    def memory(self) -> CudaMemory | None:
        return CudaMemory(self.device) if self.device.type == "cuda" else None


def measure_step(
    run: Run, section: str, backend: str, precision: str, batches: tuple[int, ...], roles: tuple[str, ...] | None
) -> dict[str, Any]:
    """Time one group of candidates (``roles`` of the model, or all) with ``measure_group``; keep the rows at once."""
    notes = run.notes.setdefault(section, [])
    run.stale.add(section)  # also when the step is cut: its notes say what happened
    options = {"compile_backend": run.args.compile_backend} if run.args.compile_backend else {}
    comparisons = ("per_task", "merged", "bare_backbone", "head_cost") if roles is None else roles
    model = copy.deepcopy(run.master)  # moved to the device inside the step: its weights are the step's memory
    candidates = collect_candidates(
        [(SOURCE, model)], (backend,), (precision,), run.device, comparisons, options, False, notes
    )
    candidates = [c for c in candidates if roles is None or c.role in roles]
    try:
        with _recompile_room(candidates), StepPeak(run.memory()) as peak, CudagraphSkips() as skips:
            found = measure_group(candidates, batches, run.settings, notes, (Exception,), run.gmac_cache)
    finally:
        model.to("cpu")  # the candidates keep a reference to it: its GPU copy must not outlive the step
        _release(run.device)
    if backend == "torch-compiled":
        for m in found:
            m.settings.update(cudagraph_skips=skips.count, cudagraph_skip_reasons=skips.reasons, **peak.to_dict())
    run.measurements.setdefault(section, []).extend(found)
    return {"measurements": len(found), "cudagraph_skips": skips.count if backend == "torch-compiled" else None}


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_training(run: Run, compiled: bool) -> dict[str, Any]:
    """Images/s of the toolkit's training step (``Trainer._train_step``: forward, loss, backward, AdamW), in rounds
    (for an interval), and the allocator's absolute peak from warm-up on (weights, gradients, AdamW state)."""
    result = _time_training(run, compiled)
    _release(run.device)  # the trainer's model and optimizer are gone with _time_training's frame
    run.training["compiled" if compiled else "eager"] = result
    return {"images_per_s": round(result["images_per_s"], 2)}


def _time_training(run: Run, compiled: bool) -> dict[str, Any]:
    import numpy as np

    from mtlora_deploy.profile.stats import MIN_ROUNDS
    from mtlora_deploy.profile.timing import LatencyStats, make_timer
    from mtlora_deploy.trainer.config import TrainConfig
    from mtlora_deploy.trainer.data_setup import make_loader
    from mtlora_deploy.trainer.loop import Trainer

    device, smoke = run.device, run.args.smoke
    batch = 2 if smoke else 32
    train = TrainConfig(
        data="synthetic",
        synthetic_images=2 * batch,
        batch_size=batch,
        num_workers=0,
        amp="fp16" if device.type == "cuda" else "off",
        device=str(device),
        max_steps=10**6,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer(run.master.config, train, run.work / "training_run")
        setup = trainer._build()
    if compiled:
        setup = replace(setup, wrapped=torch.compile(setup.model, backend=run.args.compile_backend or "inductor"))
    data = next(iter(make_loader(setup.train_set, None, batch, 0, True, device)))
    steps, timer = iter(range(10**6)), make_timer(device)
    rounds, per_round, warmup = (2, 1, 1) if smoke else (MIN_ROUNDS, 4, 5)  # an interval needs MIN_ROUNDS
    with StepPeak(run.memory()) as peak, CudagraphSkips() as skips:
        timer.time(lambda: trainer._train_step(setup, data, next(steps)), 0, warmup)
        samples = [timer.run(lambda: trainer._train_step(setup, data, next(steps)), per_round) for _ in range(rounds)]
    stats = LatencyStats.from_samples([s for r in samples for s in r], [float(np.median(r)) for r in samples])
    return {
        "gpu": device_name(run.env),
        "batch": batch,
        "amp": train.amp,
        "optimizer": "AdamW",
        "compiled": compiled,
        "steps": stats.count,
        "step_ms": stats.to_dict(),
        "images_per_s": stats.throughput(batch),
        "peak_memory_gb": None if peak.absolute_bytes is None else peak.absolute_bytes / 1e9,
        "peak_memory_method": "torch.cuda.max_memory_allocated from the warm-up on (absolute: weights included)",
        "cudagraph_skips": skips.count if compiled else None,
    }


def cuda_tests_step(run: Run, section: Section) -> dict[str, Any]:
    """pytest -m cuda, stopped by its own timeout a little before the section's deadline (so its output is kept)."""
    result = run_cuda_tests(ROOT, run.work, timeout_s=max(5.0, section.ends_at - run.budget.clock() - 3))
    run.cuda_tests.update(result)
    run.results.write_text("cuda_tests.log", f"$ {result['command']}\n\n{result['output_tail']}")
    return {"counts": result["counts"], "returncode": result["returncode"]}


def build_sections(run: Run, names: tuple[str, ...]) -> list[Section]:
    """The chosen sections with their steps, caps and the time each needs to start (scaled down for --smoke)."""
    smoke, cuda = run.args.smoke, run.device.type == "cuda"
    scale = 0.0 if smoke else 1.0
    fast = "fp16" if cuda else "fp32"
    precisions = ("fp16", "fp32", "bf16") if cuda else ("fp32",) if smoke else ("fp32", "bf16")
    cuda_tests = Section("cuda_tests", [], 60, 20 * scale)
    cuda_tests.steps.append(Step("pytest -m cuda", lambda: cuda_tests_step(run, cuda_tests)))
    plan = {
        "eager": Section(
            "eager",
            [
                Step(p, lambda p=p: measure_step(run, "eager", "torch", p, run.batches, None), 25 * scale)
                for p in precisions
            ],
            cap_s=180,
            min_s=40 * scale,
        ),
        "training": Section("training", [Step("eager", lambda: measure_training(run, False))], 90, 30 * scale),
        "cuda_tests": cuda_tests,
        "compiled": Section(
            "compiled",
            [
                Step(
                    f"{role} bs{b}",
                    lambda role=role, b=b: measure_step(run, "compiled", "torch-compiled", fast, (b,), (role,)),
                    45 * scale,
                )
                for role in COMPILED_ROLES
                for b in (run.batches[0], run.batches[-1])
            ],
            cap_s=MAX_BUDGET_S,
            min_s=90 * scale,
        ),
        "training_compiled": Section(
            "training_compiled", [Step("compiled", lambda: measure_training(run, True))], MAX_BUDGET_S, 150 * scale
        ),
    }
    return [plan[name] for name in names]


def chosen_sections(args: argparse.Namespace) -> tuple[str, ...]:
    names = tuple(s for s in args.sections.split(",") if s) if args.sections else DEFAULT_SECTIONS
    if args.skip_compile or (args.smoke and not args.compile_backend and not args.sections):
        names = tuple(n for n in names if "compiled" not in n)
    return tuple(n for n in SECTIONS if n in names)


def section_report(run: Run, name: str) -> dict[str, Any]:
    """The library's report over the section's measurements so far (ratios across its steps included)."""
    notes = list(run.notes.get(name, []))
    rows = run.measurements.get(name, [])
    if len({m.candidate.precision for m in rows}) > 1:
        notes.append("precision ratios pair the rounds of two steps measured one after the other (not interleaved)")
    if name == "compiled" and len(rows) > 1:
        notes.append(
            "each compiled row is its own step (one compile): ratios between them pair rounds measured one "
            "after the other (not interleaved)"
        )
    extra = {"script": "benchmarks/gpu_profile.py", "smoke": run.args.smoke, "tf32": False, "section": name}
    return finish_report(run.measurements.get(name, []), run.settings, run.batches, notes, None, extra_run=extra)


def step_done(run: Run, section: Section) -> None:
    """After every step: one progress line (the command's output shows how far a cut-off run came), then flush."""
    label, record = next(reversed(section.record["steps"].items()))
    print(f"[{run.budget.elapsed():6.1f} s] {section.name} / {label}: {record['status']}", flush=True)
    flush(run)


def flush(run: Run) -> dict[str, Any]:
    """Write every section's report (work folder and $OUT) and the summary: after every step, and at the end."""
    for name in [s.name for s in run.sections if s.name in run.stale]:  # the bootstraps take seconds: only new rows
        run.reports[name] = report = section_report(run, name)
        write_json_atomic(run.work / name / "profile.json", report)
        run.results.write_json(f"{name}_profile.json", report)
        run.stale.discard(name)
    reports = {s.name: run.reports[s.name] for s in run.sections if s.name in run.reports}
    summary = build_summary(run, reports)
    run.results.write_json("gpu_summary.json", {k: v for k, v in summary.items() if k != "reports"})
    run.results.write_text("gpu_summary.md", summaries.summary_markdown(summary))
    return summary


def build_summary(run: Run, reports: dict[str, dict]) -> dict[str, Any]:
    rows = [m for r in reports.values() for m in r["measurements"]]
    gpu = device_name(run.env)
    return {
        "format": "mtlora-deploy-gpu-profile",
        "command": " ".join(["python", "benchmarks/gpu_profile.py", *run.argv]),
        "smoke": run.args.smoke,
        "device_name": gpu,
        "environment": run.env,
        "budget_s": run.budget.seconds,
        "elapsed_s": round(run.budget.elapsed(), 1),
        "sections": {s.name: s.record for s in run.sections},
        "reference_compared": same_gpu(summaries.REFERENCE["gpu"], run.env.get("gpu")),
        "reference_comparison": summaries.reference_rows(rows, run.env, run.batches[0], run.batches[-1]),
        "targets": summaries.target_rows(reports.get("eager", {}), rows, run.training, run.env, run.batches[-1]),
        "training": run.training,
        "cuda_tests": {k: v for k, v in run.cuda_tests.items() if k != "output_tail"},
        "reference": summaries.REFERENCE,
        "ratios": [f"[{gpu}] {line}" for r in reports.values() for line in r["ratios"]],
        "notes": [f"{name}: {n}" for name, r in reports.items() for n in r["notes"]] + run.notes.get("run", []),
        "files": {name: str(run.results.path / name) for name in run.results.names},
        "reports": reports,
    }


def _environment(device: torch.device) -> dict[str, Any]:
    """The profile's environment record; if this torch cannot give it, what it can (the run goes on)."""
    try:
        return environment_settings(device)
    except Exception as exc:  # noqa: BLE001
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        return {"torch": torch.__version__, "gpu": gpu, "environment_error": f"{type(exc).__name__}: {exc}"}


class Terminated(BaseException):
    """SIGTERM (``timeout`` ran out): write what was measured and stop."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None, clock=time.monotonic) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"gpu_profile.py: {problem}", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s, clock)
    if not (args.smoke or args.device or torch.cuda.is_available()):
        print(
            "gpu_profile.py: torch.cuda.is_available() is False here; the full model is for a GPU (give "
            "--device cpu to run it on the CPU anyway, or --smoke)",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_profile_"))
    smoke = args.smoke
    run = Run(
        args,
        list(sys.argv[1:] if argv is None else argv),
        device,
        make_model(smoke),
        work,
        ResultsFolder(args.out),
        budget,
        gpu_environment(_environment(device)),
        RunSettings(
            device,
            TimingPolicy(
                1 if smoke else 10,
                args.duration if args.duration is not None else 0 if smoke else 0.5,
                2 if smoke else 10,
                2 if smoke else 10,
            ),
        ),
        (1, 2) if smoke else (1, 32),
    )
    run.sections = build_sections(run, chosen_sections(args))
    previous, threads = signal.signal(signal.SIGTERM, _terminate), torch.get_num_threads()
    if smoke:
        torch.set_num_threads(1)  # the tiny config gains nothing from threads, and CI machines are shared
    try:
        for index, section in enumerate(run.sections):
            reserve = sum(s.min_s for s in run.sections[index + 1 :])
            run_section(section, budget, reserve, lambda section=section: step_done(run, section))
            print(f"[{budget.elapsed():6.1f} s] {section.name}: {section.record['status']}", flush=True)
    except Terminated:
        run.notes.setdefault("run", []).append("terminated by SIGTERM; the results are those written before it")
    finally:
        signal.signal(signal.SIGTERM, previous)
        torch.set_num_threads(threads)
        summary = flush(run)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(summaries.summary_markdown(summary, compact=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
