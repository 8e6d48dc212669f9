"""``mtlora train``: train a preset/YAML config into a run folder (CPU, one GPU, or torchrun)."""

from __future__ import annotations

from pathlib import Path

import click

from mtlora_deploy.cli.options import lr_option, override_option, parse_set, parse_tasks


@click.command("train")
@click.option("--preset", default=None, help="Method preset (mtlora-r64, lora, full, decoders, bitfit, ...).")
@click.option("--config", "config_path", default=None, type=click.Path(), help="YAML with model: and train: sections.")
@click.option("--tasks", default=None, help="Comma-separated tasks.")
@click.option("--data", default=None, help="PASCAL-MT root folder, or 'synthetic' (generated into the run folder).")
@click.option(
    "--run-dir", "-o", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/PRESET)."
)
@click.option(
    "--resume", "resume_dir", default=None, type=click.Path(file_okay=False), help="Continue this run folder."
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (reference: 300).")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="Schedule length in optimizer steps (replaces epochs).",
)
@click.option(
    "--stop-after", type=click.IntRange(min=1), default=None, help="Stop (and checkpoint) at this step; resume later."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Per-process batch size (reference: 32).")
@lr_option(None, "reference: 5e-4", name="base_lr")
@click.option(
    "--workers", "num_workers", type=click.IntRange(min=0), default=None, help="Data loader workers per process."
)
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--amp", default=None, type=click.Choice(["auto", "bf16", "fp16", "off"]), help="Mixed precision on CUDA."
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (reference: 0).")
@override_option("--set", "set_items", "Override a model config field.")
@override_option("--train-set", "train_items", "Override a train config field.")
def train(
    preset,
    config_path,
    tasks,
    data,
    run_dir,
    resume_dir,
    epochs,
    max_steps,
    stop_after,
    batch_size,
    base_lr,
    num_workers,
    device,
    amp,
    seed,
    set_items,
    train_items,
) -> None:
    """Train MTLoRA or a baseline; the run folder gets config, logs, best/last checkpoints.

    Resume after a crash or Ctrl-C with --resume RUN_DIR (nothing else needed). Several GPUs:
    torchrun --nproc-per-node 8 -m mtlora_deploy train ...

    Example: mtlora train --preset mtlora-r16 --data synthetic --set backbone=swin_test_tiny --set image_size=64 --epochs 2 -o runs/try
    """
    from mtlora_deploy.cli.checks import check_output_dir

    if run_dir is not None:
        check_output_dir(run_dir, "--run-dir/-o")
    if resume_dir is not None:
        from mtlora_deploy.trainer.api import resume_run

        resume_run(Path(resume_dir), stop_after=stop_after, max_steps=max_steps, device=device)
        return
    model_overrides = parse_set(set_items)
    if tasks is not None:
        model_overrides["tasks"] = parse_tasks(tasks)
    flags = {
        "data": data,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "base_lr": base_lr,
        "num_workers": num_workers,
        "device": device,
        "amp": amp,
        "seed": seed,
    }
    overrides = train_overrides(flags, train_items)
    from mtlora_deploy.trainer.api import start_run  # torch: once the options have been checked

    start_run(preset, config_path, model_overrides, overrides, run_dir, stop_after=stop_after)


def train_overrides(flags: dict, train_items: tuple[str, ...]) -> dict:
    """The train config fields given on the command line: ``--train-set KEY=VALUE`` and the flags, a field given
    both ways being an error (neither may be dropped silently)."""
    from mtlora_deploy.cli.flags import current_command, flag_for
    from mtlora_deploy.errors import ConfigError

    items, given = parse_set(train_items), {k: v for k, v in flags.items() if v is not None}
    for key in sorted(set(items) & set(given)):
        flag = flag_for(current_command(), key)
        raise ConfigError(f"--train-set {key}={items[key]} and {flag} {given[key]} both set {key}; keep one")
    return {**items, **given}
