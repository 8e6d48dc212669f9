"""``mtlora export``: one ONNX graph of the merged model, checked, with optional precision variants."""

from __future__ import annotations

import re
from pathlib import Path

import click

from mtlora_deploy.cli.options import block_size_option, calib_option, image_size_option, precision_option
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.artifacts import PRECISIONS


@click.command("export")
@click.argument("source", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@image_size_option("Static input H = W (default: the model's image_size).")
@click.option(
    "--outputs",
    default="logits",
    show_default=True,
    type=click.Choice(["logits", "labels"]),
    help="labels: in-graph argmax (uint8) / sigmoid / unit normals.",
)
@click.option(
    "--opset", default=None, type=click.IntRange(min=7), help="ONNX opset (default 18; 17 with --legacy-exporter)."
)
@click.option(
    "--legacy-exporter", is_flag=True, help="Use the TorchScript exporter (dynamo=False) instead of torch.export."
)
@click.option(
    "--rtol",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="ONNX Runtime vs PyTorch relative tolerance, > 0.",
)
@click.option("--no-check", is_flag=True, help="Skip onnx.checker, the TensorRT op check and the parity check.")
@precision_option(
    "The precision of OUTPUT: fp16/bf16, int8/fp8 (Q/DQ, calibrated), int8-wo/int4-wo (weights only, fp16 "
    "activations); other than fp32, the fp32 graph is written first, to --fp32-output.",
    default="fp32",
)
@calib_option
@click.option(
    "--fp32-output",
    default=None,
    type=click.Path(dir_okay=False),
    help="With a --precision other than fp32: where the fp32 graph goes [default: beside OUTPUT as NAME.fp32.onnx, "
    "NAME being OUTPUT's name without .onnx and its precision part].",
)
@click.option(
    "--calib-method",
    default=None,
    type=click.Choice(["entropy", "max", "percentile"]),
    help="int8/fp8 activation ranges [default: entropy for int8, max for fp8].",
)
@click.option(
    "--calib-cache",
    default=None,
    type=click.Path(dir_okay=False),
    help="int8/fp8 range cache to reuse or create [default: beside the fp32 graph, reused when it matches].",
)
@block_size_option
@click.option("--exclude", multiple=True, help="Keep these nodes in fp32: node name, op type or regex (repeatable).")
@click.option(
    "--fidelity-images",
    default=8,
    show_default=True,
    type=click.IntRange(min=0),
    help="Held-out images for the per-task agreement with fp32 (0: skip).",
)
@click.option(
    "--holdout",
    default=None,
    type=click.Path(dir_okay=False),
    help="Held-out .npz for the agreement [default: the other split of the --calib dataset].",
)
def export(
    source,
    output,
    image_size,
    outputs,
    opset,
    legacy_exporter,
    rtol,
    no_check,
    precision,
    fp32_output,
    calib,
    calib_method,
    calib_cache,
    block_size,
    exclude,
    fidelity_images,
    holdout,
) -> None:
    """Export a checkpoint, run folder or merged folder to ONNX (merging first if needed).

    Input `image` (batch, 3, H, W) float32 with a dynamic batch; one output per task named after it; model
    config, tasks, classes and mean/std in the ONNX metadata. An mtl-lora model is task-conditioned: it is
    merged per task and written as one graph per task, OUTPUT's name with the task inserted (model.semseg.onnx).
    With a --precision other than fp32, OUTPUT is that variant and the fp32 graph it is made from is written too,
    to --fp32-output (default: model.int8.onnx -> model.fp32.onnx beside it); both paths are printed.

    Low precision: --precision fp8 --calib calib/train.npz (FP8 Q/DQ, runs on sm89 and later), --precision
    int8-wo or int4-wo (weights only, fp16 activations, no images needed); the per-task agreement with fp32 is
    printed and stored in the graph.

    Example: mtlora export runs/demo/merged -o runs/demo/export/model.int8.onnx --precision int8 --calib runs/demo/calib/train.npz
    """
    from mtlora_deploy.cli.checks import check_calibration_file, check_output_file

    check_output_file(output)
    fp32_path = Path(output) if precision == "fp32" else fp32_graph_path(Path(output), precision, fp32_output)
    if precision == "fp32" and fp32_output is not None:
        raise ConfigError(
            "--fp32-output names the fp32 graph of a reduced-precision export; with fp32, -o is that graph"
        )
    if fp32_path != Path(output):
        check_output_file(fp32_path, "--fp32-output")
    check_calibration_file(calib, precision)
    if calib:
        _check_calibration_set(source, calib, image_size)
    from rich.console import Console

    from mtlora_deploy.deploy.export import export_onnx
    from mtlora_deploy.deploy.export_mtl import export_per_task, needs_per_task_export, per_task_path
    from mtlora_deploy.utils.noise import quiet_known_noise

    console = Console()
    options = {
        "image_size": image_size,
        "outputs": outputs,
        "opset": opset,
        "check": not no_check,
        "legacy": legacy_exporter,
        "rtol": rtol,
    }
    per_task = needs_per_task_export(source)
    if per_task:
        console.print(
            "mtl-lora is task-conditioned: writing one merged ONNX graph per task "
            f"({per_task_path(fp32_path, 'TASK').name}) instead of {fp32_path.name}"
        )
    elif precision != "fp32":
        console.print(f"the {precision} graph {output} is made from the fp32 graph, written first to {fp32_path}")
    with quiet_known_noise(), console.status(f"exporting {source}"):
        if per_task:
            reports = export_per_task(source, fp32_path, **options)
        else:
            reports = {"": export_onnx(source, fp32_path, **options)}
    variant = {
        "calibration": Path(calib) if calib else None,
        "calibration_method": calib_method,
        "calibration_cache": calib_cache,
        **({"block_size": block_size} if block_size is not None else {}),
        "nodes_to_exclude": tuple(exclude),
        "fidelity_images": fidelity_images,
        "holdout": holdout,
    }
    for task, report in reports.items():
        _print_report(console, report)
        if precision != "fp32":
            target = per_task_path(output, task) if task else Path(output)
            _write_precision_variant(console, report.path, precision, target, variant)


def _print_report(console, report) -> None:
    from mtlora_deploy.deploy.tables import export_summary_table, parity_table

    console.print(export_summary_table(report))
    if report.parity:
        console.print(parity_table(report))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"[green]wrote[/] {report.path}")


def fp32_graph_path(output: Path, precision: str, fp32_output: str | None = None) -> Path:
    """Where the fp32 graph goes when OUTPUT is a reduced-precision variant: ``--fp32-output``, else OUTPUT's name
    without its precision part, plus ``.fp32.onnx``: ``model.int8.onnx`` and ``model.onnx`` -> ``model.fp32.onnx``."""
    if fp32_output is not None:
        path = Path(fp32_output)
    else:
        stem = output.stem if output.suffix == ".onnx" else output.name
        base = re.sub(rf"\.({'|'.join(map(re.escape, PRECISIONS))})$", "", stem)
        path = output.with_name(f"{base}.fp32.onnx")
    if path.absolute() == output.absolute():
        raise ConfigError(
            f"-o {output} is also where the fp32 graph would go; name the variant after its precision "
            f"(e.g. -o {output.with_name(f'model.{precision}.onnx')}) or pass --fp32-output"
        )
    return path


def _check_calibration_set(source: str, calib: str, image_size: int | None) -> None:
    """The calibration set fits the model (key, image size, count, finite values) before the export starts."""
    from mtlora_deploy.calib.dataset import check_calibration_set
    from mtlora_deploy.cli.calibrate import model_input

    if Path(source).suffix == ".onnx":
        return  # export refuses an .onnx source itself
    _, size = model_input(source)
    check_calibration_set(calib, "image", image_size or size)


def _write_precision_variant(console, fp32_path: Path, precision: str, output: Path, variant: dict) -> None:
    from mtlora_deploy.errors import MissingDependencyError

    try:
        from mtlora_deploy.calib.fidelity import fidelity_table
        from mtlora_deploy.calib.precision import make_precision_variant, read_precision_metadata
    except ImportError as exc:
        raise MissingDependencyError(
            f"--precision {precision}: mtlora_deploy.calib.precision is not available ({exc})"
        ) from exc
    console.print(f"writing the {precision} variant")
    path = make_precision_variant(fp32_path, precision, output, **variant)
    record = read_precision_metadata(path)
    if ranges := record.get(f"{precision}_ranges"):
        how = "reused" if ranges["reused"] else f"computed in {ranges['seconds']:.0f} s"
        console.print(
            f"{precision} ranges ({ranges['settings']['method']}, {ranges['images']} images, "
            f"{ranges['tensors']} tensors): {how}, cache {ranges['cache']}"
        )
    if "tasks" in record.get("fidelity", {}):
        console.print(fidelity_table(precision, record["fidelity"]))
    elif "skipped" in record.get("fidelity", {}):
        console.print(f"fidelity: {record['fidelity']['skipped']}")
    console.print(f"[green]wrote[/] {path} ({precision})")
