"""``mtlora inspect PATH``: what an ONNX graph, a plan, a run or a merged folder holds, without running it."""

from __future__ import annotations

import click


@click.command("inspect")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def inspect(path, as_json) -> None:
    """Show what PATH holds: tasks, inputs and outputs, precision and what really runs below fp32, batch profile,
    runtime and target GPUs, fidelity to fp32, sizes and sha256 checksums (checked against the ones recorded in
    a plan's or a checkpoint set's manifest).

    PATH is an .onnx file, a TensorRT plan (with PLAN.json beside it), a run folder, a merged/checkpoint folder or a
    Triton model repository from export-triton.
    Exit code 1 when a recorded checksum does not match.

    Example: mtlora inspect runs/demo/onnx/model.int8.onnx
    """
    import json

    from rich.console import Console

    from mtlora_deploy.errors import WeightsError
    from mtlora_deploy.report.inspect import inspect_artifact
    from mtlora_deploy.report.inspect_view import inspect_renderables
    from mtlora_deploy.serve import describe  # noqa: F401 - registers the Triton repository kind

    record = inspect_artifact(path)
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
    else:
        console = Console()
        for renderable in inspect_renderables(record):
            console.print(renderable)
    bad = [entry for entry in record["files"] if entry["verified"] is False]
    if bad:
        raise WeightsError(f"{bad[0]['file']}: {bad[0]['problem']} ({len(bad)} file(s) fail their recorded checksum)")
