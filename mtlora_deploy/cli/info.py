"""``mtlora info``: the parameter table and task outputs of a preset, config or checkpoint."""

from __future__ import annotations

import json

import click

from mtlora_deploy.cli.options import config_from_options, model_options
from mtlora_deploy.utils.noise import quiet_known_noise


@click.command("info")
@model_options
@click.option("--checkpoint", default=None, type=click.Path(), help="A checkpoint or run folder instead of a preset.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def info(preset, config_path, tasks, set_items, checkpoint, as_json) -> None:
    """Show trainable/frozen parameters per group, the deployed count and each task's output.

    Example: mtlora info --preset mtlora-r64 --tasks semseg,human_parts,sal,normals --json
    """
    with quiet_known_noise():
        if checkpoint:
            from mtlora_deploy import load

            model = load(checkpoint)
        else:
            config = config_from_options(preset, config_path, tasks, set_items)  # before torch loads
            from mtlora_deploy.model import build_model

            model = build_model(config, warn_without_weights=False)
    from mtlora_deploy.model.summary import describe_model

    summary = describe_model(model)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    from mtlora_deploy.report.console import print_model_summary

    print_model_summary(summary)
