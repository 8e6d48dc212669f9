"""``mtlora prepare-data``: extract PASCAL_MT.tgz safely and verify it."""

from __future__ import annotations

import click


@click.command("prepare-data")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=True), help="Dataset root to create.")
def prepare_data(archive, output) -> None:
    """Extract the PASCAL-MT archive into OUTPUT and check every folder, split file and per-id file.

    Members outside OUTPUT, links pointing outside and special files are refused. Nothing appears at OUTPUT
    unless the whole set verified; an OUTPUT that is already a complete set is verified and left as it is.

    Example: mtlora prepare-data PASCAL_MT.tgz -o data/PASCAL_MT
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from mtlora_deploy.cli.checks import check_writable_parent
    from mtlora_deploy.trainer.data.prepare import prepare_pascal_mt

    check_writable_parent(output, "-o/--output")
    console = Console()
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        counts, already = prepare_pascal_mt(archive, output, progress=report)
    table = Table("split", "images", "with human parts")
    for row in counts:
        table.add_row(row.split, str(row.images), str(row.with_human_parts))
    console.print(table)
    verb = "already prepared and verified" if already else "extracted and verified"
    console.print(f"[green]{output}[/]: {verb}; train with --data {output}")
