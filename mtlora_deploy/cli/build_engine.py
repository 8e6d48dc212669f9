"""``mtlora build-engine``: a TensorRT or TensorRT-RTX plan and its JSON manifest from an ONNX graph or a run folder."""

from __future__ import annotations

import click

from mtlora_deploy.cli.options import block_size_option, calib_option, image_size_option, precision_option
from mtlora_deploy.engines.runtimes import RUNTIME_CHOICES


@click.command("build-engine")
@click.argument("model_path", type=click.Path())
@precision_option(
    "Engine precision; it comes from the ONNX graph (fp32 graphs get a precision variant first). fp8 runs on "
    "sm89 and later, int8-wo/int4-wo (weight-only) on sm80 and later."
)
@click.option(
    "--runtime",
    default="auto",
    show_default=True,
    type=click.Choice(RUNTIME_CHOICES),
    help="auto: tensorrt with a CUDA GPU, else tensorrt-rtx (builds without a GPU, runs on RTX-class GPUs).",
)
@click.option(
    "--output",
    "-o",
    default=None,
    type=click.Path(dir_okay=False),
    help="Plan file to write [default: engines/NAME_PRECISION[_rtx].plan]; the manifest goes to PLAN.json.",
)
@click.option(
    "--batch",
    default="1:8:32",
    show_default=True,
    callback=lambda ctx, param, value: _batch_profile(value),
    help="Optimization profile MIN:OPT:MAX batch sizes (1 <= MIN <= OPT <= MAX), or one fixed batch size.",
)
@calib_option
@click.option(
    "--workspace-gib",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Builder workspace pool limit [default: the runtime's own: TensorRT the GPU's memory, TensorRT-RTX 64 GiB].",
)
@click.option(
    "--target",
    "targets",
    default=None,
    help="TensorRT-RTX: compute capabilities to build for, e.g. sm86,sm89,sm120 [default: its portable set "
    "sm86,sm89,sm120 less those that cannot run the precision: fp8 sm89,sm120].",
)
@click.option(
    "--opt-level",
    default=None,
    type=click.IntRange(0, 5),
    help="TensorRT: builder_optimization_level, 0..5 [default: 3].",
)
@click.option(
    "--timing-cache",
    default=None,
    type=click.Path(dir_okay=False),
    help="TensorRT: timing cache file, reused and updated [default: timing.cache beside the plan].",
)
@image_size_option("Export size when MODEL_PATH is a run folder.")
@block_size_option
@click.option("--verbose", is_flag=True, help="The builder's verbose log (also on with mtlora --verbose).")
def build_engine(
    model_path,
    precision,
    runtime,
    output,
    batch,
    calib,
    workspace_gib,
    targets,
    opt_level,
    timing_cache,
    image_size,
    block_size,
    verbose,
) -> None:
    """Build a TensorRT or TensorRT-RTX engine from MODEL_PATH (an .onnx file, or a run/checkpoint folder exported
    first).

    TensorRT needs a CUDA GPU to build; TensorRT-RTX builds on any machine (running its plan needs an RTX-class GPU).
    Without either it stops before writing anything, as it does for a precision the targets (or the GPU) cannot run.

    Example: mtlora build-engine runs/demo/onnx/model.fp16.onnx --precision fp16 --batch 1:8:32 -o engines/demo_fp16.plan
    """
    import warnings

    from rich.console import Console

    from mtlora_deploy.cli.checks import check_output_file, check_writable_parent
    from mtlora_deploy.engine_pipeline import build_engine as build

    if output is not None:
        check_output_file(output)
    else:
        check_writable_parent("engines/model.plan", "-o/--output (default engines/)")
    verbose = verbose or click.get_current_context().find_root().obj.get("verbose", False)
    console = Console()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the precision notes are printed below, once
        result = build(
            model_path,
            precision,
            output,
            batch,
            calib,
            workspace_gib,
            opt_level,
            timing_cache,
            image_size,
            verbose,
            runtime,
            targets,
            block_size,
            on_write=lambda path, what: console.print(f"[green]wrote[/] {path} ({what})", highlight=False),
        )
    for line in build_summary(result.plan, result.manifest):
        console.print(line, highlight=False)
    _print_fidelity(console, result.manifest)
    console.print(f"manifest: {result.manifest_path}", highlight=False)


def _batch_profile(text: str):
    """``--batch`` parsed when the command line is (a bad profile stops before anything is exported)."""
    from mtlora_deploy.engines.tensorrt_build import BatchProfile
    from mtlora_deploy.errors import ConfigError

    try:
        return BatchProfile.parse(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc).removeprefix("`batch`: ")) from None


def describe_batch(profile: dict) -> str:
    """``{'min': 1, 'opt': 8, 'max': 32}`` -> ``batch 1 to 32, tuned for 8`` (``batch 8`` when fixed)."""
    low, opt, high = profile["min"], profile["opt"], profile["max"]
    return f"batch {low}" if low == high else f"batch {low} to {high}, tuned for {opt}"


def build_summary(plan, manifest: dict) -> list[str]:
    """What was built, in words: plan, size, precision, batch profile, runtime and where it runs; the precision
    notes; where the kernel cache goes (the graphs written on the way are said when they are written)."""
    from mtlora_deploy.engines.tensorrt import runtime_cache_path

    targets = manifest.get("target_compute_capabilities")
    where = f"for compute capabilities {', '.join(targets)}" if targets else f"on {manifest['gpu_name']}"
    lines = [
        f"[green]wrote[/] {plan} ({manifest['plan']['bytes'] / 2**20:.1f} MiB, {manifest['precision']}, "
        f"{describe_batch(manifest['batch_profile'])}; built in {manifest['build_time_s']:.1f} s with "
        f"{manifest['runtime']} {manifest['runtime_version']} {where})"
    ]
    for note in manifest.get("precision_notes") or []:
        lines.append(f"[yellow]warning:[/] {note}" if manifest["precision"] == "int8" else f"plan: {note}")
    if manifest["runtime"] == "tensorrt-rtx":
        lines.append(
            "running it needs a supported NVIDIA GPU (RTX-class: sm75 to sm121, not H100/B200); its kernels "
            f"compile on the first load and are kept in {runtime_cache_path(plan)}"
        )
    return lines


def _print_fidelity(console, manifest: dict) -> None:
    """The accuracy cost the graph carries (its per-task agreement with fp32, measured when it was made)."""
    record = (manifest.get("onnx_metadata") or {}).get("fidelity") or {}
    if "tasks" in record:
        from mtlora_deploy.calib.fidelity import fidelity_table

        console.print(fidelity_table(manifest["precision"], record))
    elif manifest["precision"] != "fp32":
        console.print(f"accuracy vs fp32: {record.get('skipped', 'not measured for this graph (made elsewhere)')}")
