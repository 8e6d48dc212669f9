"""``mtlora export-reference``: a model trained here -> a checkpoint the reference MTLoRA code evaluates."""

from __future__ import annotations

import click


@click.command("export-reference")
@click.argument("source", type=click.Path())
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False), help="Reference .pth to write (atomically)."
)
def export_reference(source, output) -> None:
    """Write SOURCE (run folder, checkpoint folder or file) in the reference code's checkpoint layout.

    Beside OUTPUT goes a YAML file (same name, .yaml) to pass to the reference's main.py as --cfg.

    The reference head is 4 x sum(decoder_widths) wide, so the demo's small head cannot be written; the run of
    mtlora train's example can.

    Example: mtlora export-reference runs/try -o runs/try/reference/ckpt.pth
    """
    from rich.console import Console

    from mtlora_deploy.cli.checks import check_output_file
    from mtlora_deploy.model.reference.export import export_reference_run

    check_output_file(output)
    pth, cfg, config = export_reference_run(source, output)
    console = Console()
    console.print(f"[green]exported[/] {source} -> {pth} (+ {cfg})")
    console.print(
        f"evaluate with the reference code: python main.py --cfg {cfg} --pascal <PASCAL_MT> "
        f"--tasks {','.join(config.tasks)} --resume {pth} --eval"
    )
