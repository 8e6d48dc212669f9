"""``mtlora`` entry point: a lazy click group, one-line user errors, ``--debug`` for tracebacks."""

from __future__ import annotations

import importlib
import sys

import click

from mtlora_deploy import __version__
from mtlora_deploy.errors import MTLoRAError

# command name -> (module, attribute, one-line summary); modules import only when the command runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("mtlora_deploy.cli.info", "info", "Parameter table and task outputs of a preset or checkpoint."),
    "import-checkpoint": (
        "mtlora_deploy.cli.import_checkpoint",
        "import_checkpoint",
        "Convert a reference MTLoRA .pth checkpoint.",
    ),
    "export-reference": ("mtlora_deploy.cli.export_reference", "export_reference", "Write a reference MTLoRA .pth."),
    "prepare-data": ("mtlora_deploy.cli.prepare_data", "prepare_data", "Extract and verify PASCAL_MT.tgz safely."),
    "make-dataset": (
        "mtlora_deploy.cli.make_dataset",
        "make_dataset",
        "Generate the built-in synthetic PASCAL-MT set.",
    ),
    "train": ("mtlora_deploy.cli.train", "train", "Train MTLoRA or a baseline (CPU, GPU, torchrun)."),
    "evaluate": (
        "mtlora_deploy.cli.evaluate",
        "evaluate",
        "Per-task metrics and delta-m of a checkpoint or ONNX model.",
    ),
    "predict": ("mtlora_deploy.cli.predict", "predict", "Per-task visualisations of images as PNG."),
    "merge": ("mtlora_deploy.cli.merge", "merge", "Fold the task-agnostic LoRA into the backbone exactly."),
    "export": ("mtlora_deploy.cli.export", "export", "Export one ONNX graph with one output per task."),
    "calibrate": ("mtlora_deploy.cli.calibrate", "calibrate", "Draw INT8 calibration inputs from a dataset."),
    "build-engine": ("mtlora_deploy.cli.build_engine", "build_engine", "Build a TensorRT engine from an ONNX graph."),
    "export-triton": (
        "mtlora_deploy.cli.export_triton",
        "export_triton",
        "Write a Triton model repository (model step, pre/post steps, ensemble).",
    ),
    "serve": ("mtlora_deploy.cli.serve", "serve", "Serve a model or repository on a real tritonserver."),
    "profile": ("mtlora_deploy.cli.profile", "profile", "Multi-task latency/throughput reports."),
    "bench-serve": (
        "mtlora_deploy.cli.bench_serve",
        "bench_serve",
        "Served throughput, latency percentiles and formed batch sizes.",
    ),
    "inspect": (
        "mtlora_deploy.cli.inspect",
        "inspect",
        "What an ONNX graph, plan, run or merged folder holds (tasks, I/O, precision, checksums).",
    ),
    "compare": (
        "mtlora_deploy.cli.compare",
        "compare",
        "Train a list of presets and tabulate them like the MTLoRA paper.",
    ),
    "demo": ("mtlora_deploy.cli.demo", "demo", "The end-to-end job on synthetic data (the README's first command)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on use, so ``mtlora --help`` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if importlib.util.find_spec(module) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple:
        """The subcommand to run, recorded in ``ctx.obj`` so an error raised in it names its flags."""
        name, command, rest = super().resolve_command(ctx, args)
        ctx.ensure_object(dict)["command"] = command
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mtlora")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.option(
    "--verbose",
    is_flag=True,
    help="Also show the libraries' own warnings, log records and progress lines (held back by default).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """mtlora: multi-task LoRA models from training to TensorRT.

    Example: mtlora --verbose info --preset mtlora-r64 --tasks semseg,human_parts,sal,normals
    """
    from mtlora_deploy.cli.output import output_policy

    ctx.ensure_object(dict).update(debug=debug, verbose=verbose)
    ctx.with_resource(output_policy(verbose))


def os_error_line(exc: OSError) -> str:
    """An OSError that no writer turned into a toolkit error, as one line naming the path(s)."""
    from mtlora_deploy.utils.atomic import describe_os_error

    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    return f"{paths}: {describe_os_error(exc)}" if paths else f"{describe_os_error(exc)} (--debug shows where)"


def error_line(exc: MTLoRAError | OSError, command: click.Command | None) -> str:
    """The one line a user error prints: the library's `field` names as the flags of ``command``."""
    from mtlora_deploy.cli.flags import render

    return render(str(exc), command) if isinstance(exc, MTLoRAError) else os_error_line(exc)


def main() -> None:
    """Run the CLI; user errors and OS errors (a full disk, no permission) become one red line and exit code 1
    (the traceback with ``--debug``)."""
    settings: dict = {}  # the group records the parsed --debug and the subcommand it runs here
    try:
        cli.main(standalone_mode=False, obj=settings)
    except (MTLoRAError, OSError) as exc:
        if settings.get("debug"):
            raise
        click.secho(f"Error: {error_line(exc, settings.get('command'))}", fg="red", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
