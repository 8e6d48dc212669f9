"""Library names -> the flags of the command that ran.

Library code names the parameter or config field an error or warning is about as `name` in backticks
(:class:`~mtlora_deploy.errors.MTLoRAError`); :func:`render` writes each such name as the flag the user types to set
it in the current command (``batch`` -> ``--batch``, ``base_lr`` -> ``--lr``, a model config field -> ``--set
pretrained``). A name the command has no flag for keeps its backticks: it is a field of the library, and no message
names a flag the command does not have.
"""

from __future__ import annotations

import re

import click

NAME = re.compile(r"`([a-z][a-z0-9_]*)`")

FIELD_PARAMS: dict[str, tuple[str, ...]] = {
    "optimization_level": ("opt_level",),
    "calibration": ("calib",),
    "calibration_method": ("calib_method",),
    "calibration_cache": ("calib_cache",),
    "nodes_to_exclude": ("exclude",),
    "data_root": ("data",),
    "output_dir": ("output",),
    "workspace_bytes": ("workspace_gib",),
    "batches": ("batch",),
    "precisions": ("precision",),
    "legacy": ("legacy_exporter",),
    "url": ("server",),
    "overrides": ("set_items",),
    "model_overrides": ("set_items",),
    "train_overrides": ("train_items",),
    "ports": ("http_port", "grpc_port", "metrics_port"),
}
"""Library field -> the click parameter(s) that set it, where the names differ and neither the parameter's name
nor its flag spells the field (``targets`` is ``--target``'s parameter, ``num_workers`` ``--workers``': no entry).
Several parameters are written as one ``--a/--b`` name."""
GROUP_FLAGS = {"debug": "mtlora --debug", "verbose": "mtlora --verbose"}
"""The ``mtlora`` group's own options, for a name no subcommand option spells."""


def _flag(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name
    long = [opt for opt in param.opts if opt.startswith("--")]
    return max(long or param.opts, key=len)


def _spelled(param: click.Parameter) -> set[str]:
    """The names a parameter answers to: its own and its flags' (``--opt-level`` -> ``opt_level``)."""
    names = {param.name} if param.name else set()
    return names | {opt.lstrip("-").replace("-", "_") for opt in param.opts if opt.startswith("--")}


def _config_fields(kind: str) -> set[str]:
    if kind == "set_items":
        from mtlora_deploy.model.config import ModelConfig

        return set(ModelConfig.__dataclass_fields__)
    from mtlora_deploy.trainer.config import TrainConfig

    return set(TrainConfig.__dataclass_fields__)


def flag_for(command: click.Command | None, name: str) -> str | None:
    """The flag of ``command`` that sets the library field ``name``, or None when it has none.

    A parameter named ``name`` wins, then :data:`FIELD_PARAMS`, then a flag spelling ``name``; else a model config
    field is ``--set NAME`` and a train config field ``--train-set NAME`` where the command has those options, and
    the group's ``debug``/``verbose`` are ``mtlora --debug``/``mtlora --verbose``.
    """
    if command is None:
        return None
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    for param in params:
        if param.name == name:
            return _flag(param)
    aliased = [_flag(p) for wanted in FIELD_PARAMS.get(name, ()) for p in params if p.name == wanted]
    if aliased:
        return "/".join(aliased)
    for param in params:
        if name in _spelled(param):
            return _flag(param)
    for param in params:
        if param.name in ("set_items", "train_items") and name in _config_fields(param.name):
            return f"{_flag(param)} {name}"
    return GROUP_FLAGS.get(name)


def render(text: str, command: click.Command | None) -> str:
    """``text`` with each `name` that ``command`` has a flag for written as that flag."""
    return NAME.sub(lambda match: flag_for(command, match.group(1)) or match.group(0), text)


def current_command() -> click.Command | None:
    """The command running now (the innermost click context's), or None outside one."""
    ctx = click.get_current_context(silent=True)
    return ctx.command if ctx is not None else None
