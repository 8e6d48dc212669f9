"""``mtlora demo``: the README's end-to-end job on the built-in synthetic data."""

from __future__ import annotations

import click


@click.command("demo")
@click.option(
    "--workdir",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for every artefact; an interrupted demo continues from it.",
)
def demo(workdir) -> None:
    """Generate synthetic data, train, evaluate against the untrained model, merge, export, quantize, profile.

    Example: mtlora demo --workdir runs/demo
    """
    from mtlora_deploy.cli.checks import check_output_dir
    from mtlora_deploy.demo import run_demo

    check_output_dir(workdir, "--workdir")
    run_demo(workdir)
