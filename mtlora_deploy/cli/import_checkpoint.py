"""``mtlora import-checkpoint``: a reference MTLoRA ``.pth`` -> our safetensors checkpoint."""

from __future__ import annotations

import click
from rich.console import Console

from mtlora_deploy.cli.options import config_from_options, model_options


@click.command("import-checkpoint")
@click.argument("reference", type=click.Path(dir_okay=False))
@model_options
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for model.safetensors/json."
)
@click.option("--allow-unused", is_flag=True, help="Report keys that fit nowhere instead of failing.")
def import_checkpoint(reference, preset, config_path, tasks, set_items, output, allow_unused) -> None:
    """Convert a checkpoint written by the reference MTLoRA training code.

    Example: mtlora import-checkpoint ref.pth --preset mtlora-r64 --tasks semseg,human_parts,sal,normals -o imported/
    """
    from pathlib import Path

    from mtlora_deploy.model.checkpoint import save_checkpoint
    from mtlora_deploy.model.reference import import_reference_checkpoint

    from mtlora_deploy.cli.checks import check_output_dir
    from mtlora_deploy.model.weights import check_weights_file

    check_weights_file(Path(reference))
    check_output_dir(output)
    config = config_from_options(preset, config_path, tasks, set_items)
    model, unused = import_reference_checkpoint(reference, config, allow_unused=allow_unused)
    path = save_checkpoint(
        model, Path(output) / "model", metadata={"imported_from": str(reference), "unused_keys": unused}
    )
    console = Console()
    for key in unused:
        console.print(f"[yellow]unused reference key:[/] {key}")
    console.print(f"[green]imported[/] {reference} -> {path} ({len(model.state_dict())} tensors, {len(unused)} unused)")
