"""Options shared by several commands, each defined once: the model (preset < YAML < --tasks / --set overrides),
the graph precision, calibration set, image size and int4 block size, the learning rate and config overrides.

Nothing here (nor in what it imports) loads torch, ONNX or ONNX Runtime: ``--help`` and option errors come before
any of them (tests/cli/test_startup.py).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.presets import PRESETS, resolve_config
from mtlora_deploy.utils.artifacts import BLOCK_SIZES, DEFAULT_BLOCK_SIZE, PRECISIONS, check_block_size


def parse_tasks(value: str | None) -> tuple[str, ...] | None:
    """``semseg,sal`` -> ("semseg", "sal"); None stays None (keep the config's tasks)."""
    if value is None:
        return None
    return tuple(t.strip() for t in value.split(",") if t.strip())


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs, values parsed as YAML scalars/lists (``image_size=224``, ``tasks=[sal]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set: got {item!r}, expected KEY=VALUE (e.g. --set task_agnostic_rank=32)")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def parse_baselines(items: tuple[str, ...]) -> dict[str, float] | None:
    """``--baseline semseg=67.2`` pairs: a known task and a number each (None when none are given)."""
    from mtlora_deploy.model.config import ALL_TASKS

    out: dict[str, float] = {}
    for item in items:
        task, sep, raw = item.partition("=")
        if not sep or task.strip() not in ALL_TASKS:
            raise ConfigError(f"--baseline: got {item!r}, expected TASK=VALUE with TASK one of {', '.join(ALL_TASKS)}")
        try:
            out[task.strip()] = float(raw)
        except ValueError:
            raise ConfigError(f"--baseline {item}: {raw!r} is not a number (e.g. --baseline semseg=67.21)") from None
    return out or None


def model_options(func: Callable) -> Callable:
    """Decorate a command with --preset, --config, --tasks and --set."""
    func = override_option("--set", "set_items", "Override any model config field.")(func)
    func = click.option("--tasks", default=None, help="Comma-separated tasks, e.g. semseg,human_parts,sal,normals.")(
        func
    )
    func = click.option(
        "--config", "config_path", default=None, type=click.Path(), help="YAML file with a model: section."
    )(func)
    func = click.option("--preset", default=None, type=click.Choice(list(PRESETS)), help="Named method preset.")(func)
    return func


def config_from_options(
    preset: str | None, config_path: str | None, tasks: str | None, set_items: tuple[str, ...]
) -> ModelConfig:
    """Resolve the model config the way every command does."""
    overrides = parse_set(set_items)
    if tasks is not None:
        overrides["tasks"] = parse_tasks(tasks)
    return resolve_config(preset, config_path, overrides)


class LibraryDefault(click.Option):
    """An option whose default is the library function's own (one definition, never restated in the CLI).

    The option parses to None when not given; :func:`given` then leaves it out of the call, so the function's
    signature default applies. ``--help`` shows that default, importing the function only to render the help.
    """

    def __init__(self, *args: Any, function: str, parameter: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, default=None, **kwargs)
        self.function, self.parameter = function, parameter

    def library_default(self) -> Any:
        """The default of ``parameter`` (this option's name unless given) in ``function`` ("module:name")."""
        module, name = self.function.split(":")
        return signature_default(module, name, self.parameter or self.name)

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        extra["default"] = str(self.library_default())
        return extra


def signature_default(module: str, function: str, parameter: str) -> Any:
    """A parameter's default in a library function, read from the module's source when it is a literal (``"cpu"``,
    ``32``, ``None``) so that ``--help`` does not import the library (torch); imported otherwise."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function), None)
        default = _default_node(node.args, parameter) if node is not None else None
        if default is not None:
            try:
                return ast.literal_eval(default)
            except ValueError:
                pass  # a name or an expression: the imported signature has its value
    signature = inspect.signature(getattr(importlib.import_module(module), function))
    return signature.parameters[parameter].default


def _default_node(args: ast.arguments, parameter: str) -> ast.expr | None:
    """The default expression of ``parameter`` in a parsed signature (None: it has none, or no such parameter)."""
    positional = [*args.posonlyargs, *args.args]
    with_defaults = positional[len(positional) - len(args.defaults) :]
    defaults = dict(zip([a.arg for a in with_defaults], args.defaults, strict=True))
    defaults |= {a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None}
    return defaults.get(parameter)


def given(**options: Any) -> dict[str, Any]:
    """The options the user set (None means not given), as keyword arguments for the library function."""
    return {key: value for key, value in options.items() if value is not None}


def precision_option(help: str, default: str | None = None) -> Callable[[Callable], Callable]:
    """``--precision``: one of the graph precisions; required when the command has no ``default``."""
    return click.option(
        "--precision",
        default=default,
        required=default is None,
        show_default=default is not None,
        type=click.Choice(PRECISIONS),
        help=help,
    )


def calib_option(func: Callable) -> Callable:
    """``--calib``: the calibration set a precision variant is made with."""
    return click.option(
        "--calib",
        default=None,
        type=click.Path(),
        help="Calibration .npz (mtlora calibrate): needed for int8 and fp8 (fp16, bf16, weight-only: optional, for "
        "the overflow scan).",
    )(func)


def image_size_option(help: str) -> Callable[[Callable], Callable]:
    """``--image-size``: the model's square input side (None: the command's own source of it)."""
    return click.option("--image-size", default=None, type=click.IntRange(min=1), help=help)


def block_size_option(func: Callable) -> Callable:
    """``--block-size``: int4-wo weights per scale, one of ``BLOCK_SIZES`` (checked as the command line is parsed)."""
    sizes = f"{', '.join(map(str, BLOCK_SIZES[:-1]))} or {BLOCK_SIZES[-1]}"
    return click.option(
        "--block-size",
        default=None,
        type=int,
        callback=lambda ctx, param, value: value if value is None else check_block_size(value),
        help=f"int4-wo made from an fp32 graph: int4 weights per scale along the reduction axis ({sizes}) "
        f"[default: {DEFAULT_BLOCK_SIZE}].",
    )(func)


def lr_option(default: float | None, help: str, name: str = "lr") -> Callable[[Callable], Callable]:
    """``--lr``: the nominal base learning rate for batch 512 (scaled to the batch size used), > 0."""
    return click.option(
        "--lr",
        name,
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=default is not None,
        help=f"Nominal base LR for batch 512, > 0 ({help}).",
    )


def override_option(flag: str, name: str, help: str) -> Callable[[Callable], Callable]:
    """``--set`` / ``--train-set``: repeatable KEY=VALUE config overrides (parsed by :func:`parse_set`)."""
    return click.option(flag, name, multiple=True, metavar="KEY=VALUE", help=help)
