"""The end-to-end job on built-in synthetic data: train -> evaluate -> merge -> export -> precisions -> profile.

Every stage writes into ``workdir`` and is skipped when its output already exists, so an interrupted demo
continues where it stopped.

Two delta-m, each named with its baseline. Training picks its best checkpoint by delta-m vs the untrained model
(``delta_m_vs_untrained``; the synthetic set has no single-task runs, and PASCAL-Context's published numbers mean
nothing on it). The accuracy table, the eval JSON files and ``accuracy_vs_latency.png`` give delta-m vs the trained
model in PyTorch fp32 (``delta_m_vs_pytorch_fp32``): what each deployment step (ONNX, fp16, int8) costs, 0 for
PyTorch fp32 by construction, a fraction of a percent when nothing is lost. An untrained baseline makes that number
huge (its mIoU is near 0) and says nothing about deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mtlora_deploy.trainer.delta import DeltaBaseline
from mtlora_deploy.utils.noise import NO_PRETRAINED_WEIGHTS, quiet_known_noise

DEMO_PRESET = "mtlora-r16"
# On top of the preset: the tiny Swin at 64x64 with small decoders, and task-agnostic rank 8 (the tiny Swin's first
# stage is 24 channels wide, where rank 16 would be no low-rank adapter at all). config.yaml records both (origin:).
DEMO_MODEL = {
    "backbone": "swin_test_tiny",
    "image_size": 64,
    "decoder_widths": (8, 8, 16, 16),
    "head_channels": 64,
    "task_agnostic_rank": 8,
    "tasks": ("semseg", "human_parts", "sal", "normals"),
}
DEMO_TRAIN = {
    "data": "synthetic",
    "synthetic_images": 96,
    "batch_size": 8,
    "num_workers": 0,
    "base_lr": 0.2,
    "warmup_steps": 5,
    "max_steps": 150,
    "eval_every": 5,
    "log_every": 10,
}


def baseline_stage(workdir: Path, console: Console) -> DeltaBaseline:
    """The training's delta-m baseline on the synthetic set: the untrained model's val metrics (there are no
    single-task runs of this data, and another dataset's baselines would make delta-m meaningless). Generates the
    set first."""
    from mtlora_deploy.compare.untrained import untrained_metrics
    from mtlora_deploy.trainer.config import load_run_configs
    from mtlora_deploy.trainer.data import make_synthetic_dataset
    from mtlora_deploy.trainer.data_setup import SYNTHETIC_SIZE
    from mtlora_deploy.trainer.evaluation import eval_dataset

    model, train = load_run_configs(DEMO_PRESET, None, dict(DEMO_MODEL), dict(DEMO_TRAIN))
    root = workdir / "train" / "data"
    if not (root / "synthetic.json").is_file():
        make_synthetic_dataset(root, num_images=train.synthetic_images, seed=train.seed, image_size=SYNTHETIC_SIZE)
    primary = untrained_metrics(model, train.seed, eval_dataset(root, "val", model.tasks, model.image_size))["primary"]
    baseline = DeltaBaseline(
        "untrained",
        {t: float(v) for t, v in primary.items() if v and v == v},  # a 0 (or NaN) baseline cannot divide
    )
    values = ", ".join(f"{t} {v:.2f}" for t, v in baseline.values.items())
    console.print(f"training picks its best checkpoint by delta-m vs {baseline.label}: {values}", highlight=False)
    return baseline


def train_stage(workdir: Path, console: Console, baseline: DeltaBaseline) -> Path:
    """Train the demo preset (resumes an interrupted run, skips a finished one); delta-m against ``baseline``."""
    from mtlora_deploy.trainer.api import resume_run, start_run

    run_dir = workdir / "train"
    rank = DEMO_MODEL["task_agnostic_rank"]
    console.rule(f"1. train {DEMO_PRESET} with task-agnostic rank {rank} (tiny Swin, 64x64) on synthetic PASCAL-MT")
    with quiet_known_noise(NO_PRETRAINED_WEIGHTS):  # the demo trains the tiny Swin from random init
        if not (run_dir / "checkpoints" / "last.json").exists():
            train = {**DEMO_TRAIN, "baselines": dict(baseline.values), "baseline_name": baseline.name}
            start_run(DEMO_PRESET, None, dict(DEMO_MODEL), train, run_dir)
        elif not _finished(run_dir):
            resume_run(run_dir)
    return run_dir


def _finished(run_dir: Path) -> bool:
    import json

    import yaml

    step = json.loads((run_dir / "checkpoints" / "last.json").read_text())["metadata"]["step"]
    return step >= yaml.safe_load((run_dir / "config.yaml").read_text())["resolved"]["total_steps"]


def improvement_stage(run_dir: Path, console: Console) -> dict[str, Any]:
    """Show that every task beats the untrained model."""
    from mtlora_deploy.compare.untrained import untrained_vs_trained

    console.rule("2. trained vs untrained (val split)")
    rows = untrained_vs_trained(run_dir)
    table = Table(title="primary metric per task")
    for column in ("task", "metric", "untrained", "trained", "better?"):
        table.add_column(column)
    for task, row in rows.items():
        verdict = "[green]yes[/]" if row["improved"] else "[red]no[/]"
        table.add_row(task, row["metric"], f"{row['untrained']:.2f}", f"{row['trained']:.2f}", verdict)
    console.print(table)
    return rows


def deploy_stage(run_dir: Path, workdir: Path, console: Console) -> dict[str, Path]:
    """Merge, export fp32 ONNX, draw calibration images, write fp16 and int8 graphs."""
    from mtlora_deploy.calib.dataset import draw_calibration_set
    from mtlora_deploy.calib.precision import make_precision_variant
    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.deploy.merge import merge_checkpoint

    console.rule("3. merge -> ONNX -> calibration -> fp16 / int8 graphs")
    merged, onnx_dir = workdir / "merged", workdir / "onnx"
    if not (merged / "model.json").is_file():
        report = merge_checkpoint(run_dir, merged)
        console.print(f"merged: {report.params_before:,} parameters as trained -> {report.params_after:,} deployed")
    files = {"fp32": onnx_dir / "model.fp32.onnx"}
    if not files["fp32"].is_file():
        export_onnx(merged, files["fp32"])
    calib = workdir / "calib" / "train.npz"
    if not calib.is_file():
        draw_calibration_set(run_dir / "data", "train", 48, DEMO_MODEL["image_size"], 0, calib)
    for precision in ("fp16", "int8"):
        files[precision] = onnx_dir / f"model.{precision}.onnx"
        if not files[precision].is_file():
            make_precision_variant(
                files["fp32"],
                precision,
                files[precision],
                calib if precision == "int8" else None,
                min_images=32,
                calibration_method="max",
            )  # entropy: better ranges, minutes slower
    return {"merged": merged, **files}


def engine_stage(artefacts: dict[str, Path], workdir: Path, console: Console) -> Path | None:
    """The fp16 graph as a plan: TensorRT with a GPU, else TensorRT-RTX (built here without a GPU), else skipped."""
    from mtlora_deploy.engine_pipeline import build_engine
    from mtlora_deploy.engines.runtimes import TENSORRT_RTX, pick_runtime
    from mtlora_deploy.errors import MissingDependencyError

    console.rule("3b. fp16 graph -> engine")
    try:
        runtime = pick_runtime("auto")
    except MissingDependencyError as exc:
        console.print(f"skipped: {exc}")
        return None
    plan = workdir / "engines" / f"model.fp16{'_rtx' if runtime == TENSORRT_RTX else ''}.plan"
    if not plan.is_file():
        manifest = build_engine(artefacts["fp16"], "fp16", plan, batch="1:8:8", runtime=runtime).manifest
        console.print(
            f"{runtime} {manifest['runtime_version']}: {plan} ({manifest['plan']['bytes'] / 2**20:.1f} "
            f"MiB) in {manifest['build_time_s']:.1f} s"
        )
    if runtime == TENSORRT_RTX:
        console.print(
            "built ahead of time without a GPU; running it needs a supported NVIDIA GPU (RTX-class, "
            "sm75-sm121: mtlora profile PLAN --device cuda)"
        )
    return plan


def accuracy_stage(run_dir: Path, artefacts: dict[str, Path], workdir: Path, console: Console) -> dict[str, Any]:
    """Per-task metrics of PyTorch fp32 and every ONNX precision on the val split, side by side, with delta-m vs
    PyTorch fp32 (what each deployment step costs); each written to ``eval/NAME.json``."""
    from mtlora_deploy.report.evaluate import evaluate_artifact
    from mtlora_deploy.trainer.evaluation import attach_delta
    from mtlora_deploy.utils.atomic import write_json_atomic

    console.rule("4. what each precision costs in accuracy (val split, ONNX Runtime CPU)")
    targets = {"pytorch fp32": run_dir, **{f"onnx {p}": artefacts[p] for p in ("fp32", "fp16", "int8")}}
    results, baseline = {}, None
    for name, path in targets.items():
        result = evaluate_artifact(path, str(run_dir / "data"), "val", console=console)
        baseline = baseline or DeltaBaseline("pytorch_fp32", result["primary"])  # the first target's metrics
        results[name] = attach_delta(result, baseline)
        write_json_atomic(workdir / "eval" / f"{name.replace(' ', '_')}.json", result)
    table = Table(
        title="primary metric per task (normals: mean angle, lower is better)",
        caption=f"in brackets: the change vs PyTorch fp32; delta-m vs {baseline.label}",
    )
    table.add_column("model")
    tasks = list(results["pytorch fp32"]["primary"])
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("delta-m %", justify="right")
    for name, result in results.items():
        cells = [f"{result['primary'][t]:.2f} ({result['primary'][t] - baseline.values[t]:+.2f})" for t in tasks]
        delta = result[baseline.key]
        table.add_row(name, *cells, "n/a" if delta is None else f"{round(delta, 2) + 0.0:+.2f}")  # no "-0.00"
    console.print(table)
    return {
        name: {"primary": r["primary"], baseline.key: r[baseline.key], "delta_m_baseline": r["delta_m_baseline"]}
        for name, r in results.items()
    }


PROFILE_BUDGET_S = 90.0
"""The profile stage's whole time (``--budget``): about 40 s are asked for on a quiet machine; a busy one gets fewer
rounds instead of a longer demo."""


def profile_stage(run_dir: Path, artefacts: dict[str, Path], workdir: Path, console: Console) -> Path:
    """Latency of the deployed model on this machine (CUDA when present) with the built-in comparisons."""
    import torch

    from mtlora_deploy.profile.api import run_profile

    console.rule("5. profile")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    inputs = [run_dir, artefacts["fp32"], artefacts["int8"]]  # torch comparisons merge the run themselves
    if device == "cuda" and artefacts.get("plan"):
        inputs.append(artefacts["plan"])
    output = workdir / "profile"
    run_profile(
        inputs,
        batches=(1, 8),
        duration=1.0,
        iterations=20,
        rounds=10,
        warmup=3,
        budget_s=PROFILE_BUDGET_S,
        threads=1,  # a torch call on a shared machine is not stalled waiting for a descheduled second thread
        device=device,
        output=output,
        metrics=sorted((workdir / "eval").glob("*.json")),
        console=console,
    )
    return output


def serve_stage(run_dir: Path, artefacts: dict[str, Path], workdir: Path, console: Console) -> dict[str, Any] | None:
    """Serve the fp32 graph through Triton for a few seconds: the val images through the ensemble, served maps
    against local predict's, served latency; skipped (with the reason) where no tritonserver is installed."""
    from mtlora_deploy.errors import MissingDependencyError
    from mtlora_deploy.serve.agreement import served_vs_local
    from mtlora_deploy.trainer.data.layout import PascalLayout
    from mtlora_deploy.trainer.data.pascal import read_split

    console.rule("6. serve the fp32 graph with Triton (ensemble: image file -> per-task maps)")
    layout = PascalLayout(run_dir / "data")
    images = [layout.path("image", i) for i in read_split(layout, "val")]
    try:
        result = served_vs_local(artefacts["fp32"], images, workdir)
    except MissingDependencyError as exc:
        console.print(f"skipped: {exc}")
        return None
    for note in result["notes"]:
        console.print(f"note: {note}")
    console.print(
        f"served {result['images']} val images (ready in {result['ready_s']:.1f} s): {result['bit_equal_maps']} of "
        f"{result['maps']} maps bit-equal to local predict (largest difference {result['max_abs_difference']:g}); "
        f"latency at 1 client p50 {result['latency_ms']['p50']:.1f} ms, p95 {result['latency_ms']['p95']:.1f} ms; "
        f"serve it yourself: mtlora serve {result['repository']}"
    )
    return result


def run_demo(workdir: str | Path = "runs/demo", console: Console | None = None) -> dict[str, Any]:
    """Run every stage and return a summary (paths and results)."""
    console = console or Console()
    workdir = Path(workdir)
    baseline = baseline_stage(workdir, console)
    run_dir = train_stage(workdir, console, baseline)
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "improvement": improvement_stage(run_dir, console),
        "training_delta_m_baseline": baseline.to_dict(),
    }
    artefacts = deploy_stage(run_dir, workdir, console)
    artefacts["plan"] = engine_stage(artefacts, workdir, console)
    summary["accuracy"] = accuracy_stage(run_dir, artefacts, workdir, console)
    report = profile_stage(run_dir, artefacts, workdir, console)
    summary["serving"] = serve_stage(run_dir, artefacts, workdir, console)
    console.rule("done")
    console.print(
        f"run folder: {run_dir}\nONNX graphs: {workdir / 'onnx'}\nprofile report: {report / 'profile.md'} "
        f"(JSON: {report / 'profile.json'}, plots: {report}/*.png)"
    )
    return summary
