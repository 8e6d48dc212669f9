"""``mtlora import-checkpoint``: a reference MTLoRA ``.pth`` -> our safetensors checkpoint."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from mtlora_deploy.cli.options import model_options, parse_set, parse_tasks


def given_fields(
    preset: str | None, config_path: str | None, tasks: str | None, set_items: tuple[str, ...]
) -> dict[str, tuple[Any, str]]:
    """The config fields the user named, each with the option it came from (later options win, as everywhere)."""
    from mtlora_deploy.errors import ConfigError
    from mtlora_deploy.model.config import load_yaml
    from mtlora_deploy.model.presets import PRESETS

    given: dict[str, tuple[Any, str]] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"--preset: got {preset!r}, expected one of {', '.join(PRESETS)}")
        given.update({k: (v, f"--preset {preset}") for k, v in PRESETS[preset].items()})
    if config_path is not None:
        given.update({k: (v, f"--config {config_path}") for k, v in load_yaml(config_path).items()})
    given.update({k: (v, f"--set {k}") for k, v in parse_set(set_items).items()})
    if tasks is not None:
        given["tasks"] = (parse_tasks(tasks), "--tasks")
    return given


@click.command("import-checkpoint")
@click.argument("reference", type=click.Path(dir_okay=False))
@model_options
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False), help="Folder for model.safetensors/json."
)
@click.option("--allow-unused", is_flag=True, help="Report keys that fit nowhere instead of failing.")
def import_checkpoint(reference, preset, config_path, tasks, set_items, output, allow_unused) -> None:
    """Convert a checkpoint written by the reference MTLoRA training code.

    Tasks, ranks, scales, MTLoRA+, image and backbone size come from the checkpoint's stored config; options you
    give must agree with it. A bare state dict (no config) needs --preset and --tasks.

    Example: mtlora import-checkpoint runs/try/reference/ckpt.pth -o runs/try/imported
    """
    from pathlib import Path

    from mtlora_deploy.cli.checks import check_output_dir

    given = given_fields(preset, config_path, tasks, set_items)  # the options first, before torch loads
    from mtlora_deploy.model.checkpoint import save_checkpoint
    from mtlora_deploy.model.reference.checkpoint import describe_detected, import_reference
    from mtlora_deploy.model.state_io import check_weights_file

    check_weights_file(Path(reference))
    check_output_dir(output)
    model, unused, detected = import_reference(reference, given, allow_unused=allow_unused)
    console = Console()
    if detected is not None:
        console.print(f"[bold]detected from {reference}:[/] {describe_detected(detected)}")
    path = save_checkpoint(
        model, Path(output) / "model", metadata={"imported_from": str(reference), "unused_keys": unused}
    )
    for key in unused:
        console.print(f"[yellow]unused reference key:[/] {key}")
    console.print(f"[green]imported[/] {reference} -> {path} ({len(model.state_dict())} tensors, {len(unused)} unused)")
