"""``mtlora profile``: latency/throughput of models, ONNX files and plans, with the multi-task comparisons."""

from __future__ import annotations

import click


def _split(values: tuple[str, ...]) -> list[str]:
    """``--backend torch,onnxruntime --backend tensorrt`` -> ["torch", "onnxruntime", "tensorrt"]."""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _ints(option: str, text: str) -> list[int]:
    from mtlora_deploy.errors import ConfigError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{option}: got {text!r}, expected comma-separated integers such as 1,8,32") from exc


@click.command("profile")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--backend",
    "backends",
    multiple=True,
    help="torch, torch-compiled, onnxruntime, tensorrt (comma-separated or repeated) "
    "[default: each input's own: torch, onnxruntime or tensorrt].",
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    help="Torch precisions fp32,fp16,bf16 (autocast); ONNX files and plans keep their own.",
)
@click.option("--batch", default="1,8,32", show_default=True, help="Batch sizes.")
@click.option("--iterations", default=50, show_default=True, type=click.IntRange(min=1), help="Timed iterations per batch size.")
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0), help="Untimed iterations before timing.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
@click.option("--include-copies", is_flag=True, help="Time the host->device input and device->host output copies.")
@click.option(
    "--comparisons",
    default="per_task,merged,bare_backbone,head_cost",
    show_default=True,
    help="Comparison variants for torch models ('none' for just the models given).",
)
@click.option(
    "--metrics",
    "metrics",
    multiple=True,
    type=click.Path(),
    help="JSON from 'mtlora evaluate -o' for the accuracy-vs-latency plot (repeatable).",
)
@click.option("--compile-mode", default=None, help="torch-compiled mode [default: reduce-overhead on CUDA].")
@click.option("--compile-backend", default=None, help="torch.compile backend [default: inductor].")
@click.option("--cuda-graph", is_flag=True, help="TensorRT plans: replay a captured CUDA graph.")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="torch intra-op threads [default: torch's].")
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for profile.json, profile.md and the PNG plots.",
)
def profile(
    inputs,
    backends,
    precision,
    batch,
    iterations,
    warmup,
    device,
    include_copies,
    comparisons,
    metrics,
    compile_mode,
    compile_backend,
    cuda_graph,
    threads,
    output,
) -> None:
    """Measure latency (min/median/mean/p90/p95/p99/max), throughput and peak memory per backend x precision x
    batch, and the multi-task comparisons as ratios measured side by side in one run.

    INPUTS are run or checkpoint folders, .onnx files and TensorRT plans.

    Example: mtlora profile runs/demo/train runs/demo/export/model.onnx --backend torch,onnxruntime --batch 1,8 --iterations 20 -o runs/demo/profile
    """
    from rich.console import Console

    from mtlora_deploy.profile.api import run_profile

    from mtlora_deploy.cli.checks import check_model_input

    for path in inputs:
        check_model_input(path)
    console = Console()
    compile_options = {k: v for k, v in (("mode", compile_mode), ("compile_backend", compile_backend)) if v}
    chosen = [] if comparisons.strip() == "none" else _split((comparisons,))
    report = run_profile(
        list(inputs),
        _split(backends) or None,
        _split((precision,)),
        _ints("--batch", batch),
        iterations,
        warmup,
        device,
        include_copies,
        output,
        list(metrics),
        chosen,
        compile_options,
        cuda_graph,
        threads=threads,
        console=console,
    )
    for path in [*report.get("files", {}).values(), *report.get("plots", {}).values()]:
        console.print(f"wrote {path}")
