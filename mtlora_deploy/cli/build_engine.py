"""``mtlora build-engine``: a TensorRT plan and its JSON manifest from an ONNX graph or a run folder."""

from __future__ import annotations

import click


@click.command("build-engine")
@click.argument("model_path", type=click.Path())
@click.option("--precision", required=True, type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="Engine precision; it comes from the ONNX graph (fp32 graphs get a precision variant first).")
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False),
              help="Plan file to write [default: engines/NAME_PRECISION.plan]; the manifest goes to PLAN.json.")
@click.option("--batch", default="1:8:32", show_default=True, help="Optimization profile MIN:OPT:MAX batch sizes.")
@click.option("--calib", default=None, type=click.Path(), help="Calibration .npz (mtlora calibrate); needed for int8.")
@click.option("--workspace-gib", default=4.0, show_default=True, type=float, help="Builder workspace pool limit.")
@click.option("--opt-level", default=3, show_default=True, type=click.IntRange(0, 5), help="builder_optimization_level, 0..5.")
@click.option("--timing-cache", default=None, type=click.Path(dir_okay=False),
              help="Timing cache file, reused and updated [default: timing.cache beside the plan].")
@click.option("--image-size", default=None, type=click.IntRange(min=1), help="Export size when MODEL_PATH is a run folder.")
@click.option("--verbose", is_flag=True, help="TensorRT's verbose log.")
def build_engine(model_path, precision, output, batch, calib, workspace_gib, opt_level, timing_cache, image_size,
                 verbose) -> None:
    """Build a TensorRT engine from MODEL_PATH (an .onnx file, or a run/checkpoint folder exported first).

    Needs the tensorrt package and a CUDA GPU; without them it stops before writing anything.

    Example: mtlora build-engine runs/demo/export/model.onnx --precision fp16 --batch 1:8:32 -o engines/demo_fp16.plan
    """
    from rich.console import Console

    from mtlora_deploy.engines.tensorrt_build import build_engine as build

    console = Console()
    result = build(model_path, precision, output, batch, calib, workspace_gib, opt_level, timing_cache, image_size,
                   verbose)
    manifest = result.manifest
    console.print(f"wrote {result.plan} ({manifest['plan']['bytes'] / 2**20:.1f} MiB, {manifest['precision']}, "
                  f"batch {manifest['batch_profile']}, built in {manifest['build_time_s']:.1f} s with TensorRT "
                  f"{manifest['tensorrt_version']} on {manifest['gpu_name']})")
    console.print(f"manifest: {result.manifest_path}")
