"""Options shared by the commands that build a model: preset < YAML < --tasks / --set overrides."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import click
import yaml

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.presets import PRESETS, resolve_config


def parse_tasks(value: str | None) -> tuple[str, ...] | None:
    """``semseg,sal`` -> ("semseg", "sal"); None stays None (keep the config's tasks)."""
    if value is None:
        return None
    return tuple(t.strip() for t in value.split(",") if t.strip())


def parse_set(items: tuple[str, ...]) -> dict[str, Any]:
    """``--set key=value`` pairs, values parsed as YAML scalars/lists (``image_size=224``, ``tasks=[sal]``)."""
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
    func = click.option(
        "--set", "set_items", multiple=True, metavar="KEY=VALUE", help="Override any model config field."
    )(func)
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
        signature = inspect.signature(getattr(importlib.import_module(module), name))
        return signature.parameters[self.parameter or self.name].default

    def get_help_extra(self, ctx: click.Context) -> Any:
        extra = super().get_help_extra(ctx)
        extra["default"] = str(self.library_default())
        return extra


def given(**options: Any) -> dict[str, Any]:
    """The options the user set (None means not given), as keyword arguments for the library function."""
    return {key: value for key, value in options.items() if value is not None}
