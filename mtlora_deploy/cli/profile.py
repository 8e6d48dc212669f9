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
    default=None,
    help="Torch precisions fp32,fp16,bf16 (autocast); ONNX files and plans keep their own [default: fp32].",
)
@click.option("--batch", default=None, help="Batch sizes [default: 1,8,32].")
@click.option(
    "--duration", default=None, type=click.FloatRange(min=0), help="Timed seconds per model x batch [default: 1.0]."
)
@click.option(
    "--iterations",
    default=None,
    type=click.IntRange(min=1),
    help="Timed calls per model x batch at least [default: 10].",
)
@click.option("--warmup", default=None, type=click.IntRange(min=0), help="Untimed calls before timing [default: 10].")
@click.option(
    "--rounds",
    default=None,
    type=click.IntRange(min=1),
    help="Interleaved rounds, the unit of the 95% intervals (an interval and a verdict need 6) [default: 10].",
)
@click.option("--device", default=None, help="cpu or cuda[:N] [default: cpu].")
@click.option("--include-copies", is_flag=True, help="Time the host->device input and device->host output copies.")
@click.option(
    "--comparisons",
    default=None,
    help="Comparison variants for torch models ('none' for just the models given) "
    "[default: per_task,merged,bare_backbone,head_cost].",
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
@click.option("--memory", is_flag=True, help="CPU: peak RSS of each model in a fresh subprocess (slower).")
@click.option(
    "--budget",
    "budget_s",
    default=None,
    type=click.FloatRange(min=0),
    help="Hard limit in seconds on the whole profile, like trtexec's --duration but for everything (loading and "
    "plots included): shared out among all model x batch pairs up front, whose calls and rounds shrink to fit; none "
    "is dropped. A call under way is finished; a plot without time left is not drawn.",
)
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for profile.json, profile.md and the PNG plots.",
)
def profile(inputs, output, metrics, **options) -> None:
    """Measure latency (the median over interleaved rounds with its 95% interval, percentiles when there are enough
    calls), throughput, GMAC per image, achieved GFLOP/s and peak memory per backend x precision x batch, and the
    multi-task comparisons as ratios over the same rounds, each with its interval, a verdict (or 'too few rounds')
    and the FLOP ratio.

    INPUTS are run or checkpoint folders, .onnx files and TensorRT plans.

    Example: mtlora profile runs/demo/train runs/demo/onnx/model.fp32.onnx --batch 1,8 --budget 60 -o runs/demo/profile_cli
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_model_input

    settings = settings_from_options(**options)  # a bad option stops here, before any input is read or torch loads
    for path in inputs:
        check_model_input(path)
    from mtlora_deploy.profile.api import run_profile

    console = Console()
    report = run_profile(list(inputs), settings, output=output, metrics=list(metrics), console=console)
    for path in [*report.get("files", {}).values(), *report.get("plots", {}).values()]:
        console.print(f"wrote {path}")


def settings_from_options(
    backends, precision, batch, comparisons, compile_mode, compile_backend, cuda_graph, include_copies, memory, **rest
):
    """``ProfileSettings`` from the click options: defaults < flags (an option left out keeps the default)."""
    from mtlora_deploy.profile.settings import ProfileSettings

    compile_options = {k: v for k, v in (("mode", compile_mode), ("compile_backend", compile_backend)) if v}
    chosen = None if comparisons is None else [] if comparisons.strip() == "none" else _split((comparisons,))
    return ProfileSettings().updated(
        backends=_split(backends) or None,
        precisions=_split((precision,)) if precision else None,
        batches=_ints("--batch", batch) if batch else None,
        comparisons=chosen,
        compile_options=compile_options or None,
        use_cuda_graph=cuda_graph or None,
        include_copies=include_copies or None,
        memory=memory or None,
        **rest,
    )
