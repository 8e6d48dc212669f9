"""``mtlora compare``: train a list of presets on one budget and print the MTLoRA paper's table."""

from __future__ import annotations

import shlex

import click

from mtlora_deploy.cli.options import lr_option, override_option, parse_set, parse_tasks


def _command_line(options: dict) -> str:
    """The command that reproduces this comparison (given options only), for compare.md."""
    words = ["mtlora", "compare"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            words += [w for item in value for w in (flag, item)]
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


@click.command("compare")
@click.option(
    "--presets",
    default=None,
    help="Comma-separated presets [default: single-task,full,decoders,bitfit,lora,mtlora-r16,mtlora-r32,"
    "mtlora-r64,mtlora-plus-r16,mtl-lora,mtlora-mtl]; single-task rows are always added.",
)
@click.option("--data", default="synthetic", show_default=True, help="PASCAL-MT root folder, or 'synthetic'.")
@click.option(
    "--steps", type=click.IntRange(min=1), default=None, help="Optimizer steps per row [default: the 300-epoch recipe]."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Batch size of every row."
)
@lr_option(5e-4, "as train")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of every row.")
@click.option("--tasks", default=None, help="Comma-separated tasks [default: semseg,human_parts,sal,normals].")
@override_option("--set", "set_items", "Model config field for every row.")
@override_option("--train-set", "train_items", "Train config field, every row.")
@click.option(
    "--synthetic-images", type=click.IntRange(min=1), default=96, show_default=True, help="Size of the synthetic set."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (training and timing).")
@click.option(
    "--latency-batch",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Batch size of the latency column.",
)
@click.option(
    "--latency-iterations", type=click.IntRange(min=1), default=20, show_default=True, help="Timed latency iterations."
)
@click.option(
    "--latency-warmup",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Untimed iterations before timing.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads for training and timing [default: torch's].",
)
@click.option(
    "--output",
    "-o",
    default="runs/compare",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the runs, compare.json, compare.md and pareto.png (rerun it to resume).",
)
def compare(
    presets,
    data,
    steps,
    batch_size,
    lr,
    seed,
    tasks,
    set_items,
    train_items,
    synthetic_images,
    device,
    latency_batch,
    latency_iterations,
    latency_warmup,
    threads,
    output,
) -> None:
    """Train every preset (and one single-task model per task) with the same steps, batch, LR and seed, then
    tabulate per-task metrics, delta-m against the single-task rows, trainable and deployed parameters and
    the deployed model's latency; write compare.json, compare.md and a Pareto plot. Finished rows are reused.

    Example: mtlora compare --presets lora,mtlora-r16,mtl-lora --set backbone=swin_test_tiny --set image_size=64 --steps 100 --batch-size 8 --lr 0.2 -o runs/compare
    """
    from mtlora_deploy.cli.checks import check_output_dir
    from mtlora_deploy.compare.settings import DEFAULT_PRESETS

    check_output_dir(output)
    model_overrides = parse_set(set_items)
    if tasks is not None:
        model_overrides["tasks"] = list(parse_tasks(tasks))
    chosen = tuple(parse_tasks(presets)) if presets else DEFAULT_PRESETS
    measurement = {
        "synthetic_images": synthetic_images,
        "device": device,
        "latency_batch": latency_batch,
        "latency_iterations": latency_iterations,
        "latency_warmup": latency_warmup,
        "threads": threads,
    }
    given = {
        "presets": presets,
        "data": data,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "tasks": tasks,
        "set": set_items,
        "train_set": train_items,
        **measurement,
        "output": output,
    }
    train_overrides = parse_set(train_items)
    from mtlora_deploy.compare.api import run_comparison  # torch: once the options have been checked

    run_comparison(
        chosen,
        data,
        steps,
        batch_size,
        lr,
        seed,
        output,
        model_overrides,
        train_overrides,
        command=_command_line(given),
        **measurement,
    )
