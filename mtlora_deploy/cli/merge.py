"""``mtlora merge``: fold the task-agnostic LoRA into the backbone exactly and save the merged model."""

from __future__ import annotations

import click


@click.command("merge")
@click.argument("source", type=click.Path())
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the merged model.safetensors + model.json (written atomically).",
)
def merge(source, output) -> None:
    """Merge W' = W + s B A into every layer; stage-final task branches stay low-rank.

    SOURCE is a run folder, checkpoint folder or checkpoint file. The result loads with mtlora_deploy.load(OUTPUT)
    and is what `mtlora export` exports.

    Example: mtlora merge runs/demo/train -o runs/demo/merged
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_output_dir
    from mtlora_deploy.deploy.merge import merge_checkpoint
    from mtlora_deploy.deploy.tables import merge_table
    from mtlora_deploy.utils.noise import quiet_known_noise

    check_output_dir(output)
    console = Console()
    with quiet_known_noise(), console.status(f"merging {source}"):
        report = merge_checkpoint(source, output)
    console.print(merge_table(report))
    console.print(f"[green]merged[/] {source} -> {report.output}/model.safetensors")
