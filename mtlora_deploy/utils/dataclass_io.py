"""Dict round trips of config dataclasses (JSON/YAML), shared by the model and train configs.

Values are checked against the field's annotation before ``__post_init__`` runs, so ``image_size: sixty-four``
or ``image_size=64.0`` is a one-line error naming the field and the expected type, never a bare TypeError.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from typing import Any

from mtlora_deploy.errors import ConfigError


class DictRoundTrip:
    """Mixin for config dataclasses: ``to_dict`` in plain types, ``from_dict`` with typed, named errors.

    Unknown keys in user input (``--set``, YAML) are errors naming the nearest valid key (:meth:`check_keys`);
    ``from_dict`` itself only warns, so a file written by a newer toolkit stays readable by an older one.
    """

    config_kind = "config"

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (lists instead of tuples) for JSON and YAML."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def check_keys(cls, data: dict[str, Any], source: str) -> None:
        """Refuse keys that are not fields, suggesting the closest field name (a typo must never train silently)."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else "valid keys: " + ", ".join(known)
                raise ConfigError(f"{source}: unknown {cls.config_kind} key {key!r}; {hint}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        """Build from a dict, ignoring (with a warning naming them) keys this version does not know."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of {cls.config_kind} fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown {cls.config_kind} keys {unknown}", stacklevel=2)
        hints = typing.get_type_hints(cls)
        return cls(**{k: coerce(k, v, hints[k]) for k, v in data.items() if k in known})


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """``value`` checked (and widened: int -> float, list -> tuple) to ``annotation``, else a ConfigError."""
    ok, converted = _convert(value, annotation)
    if not ok:
        raise ConfigError(f"{name}: got {value!r} ({type(value).__name__}), expected {_describe(annotation)}")
    return converted


def _convert(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return True, None
        for arg in (a for a in args if a is not type(None)):
            ok, converted = _convert(value, arg)
            if ok:
                return True, converted
        return False, None
    if annotation is Any:
        return True, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        return _to_float(value)
    if annotation is str:
        return isinstance(value, str), value
    if origin is tuple:
        return _convert_tuple(value, args)
    if origin is dict:
        if not isinstance(value, dict):
            return False, None
        pairs = [(_convert(k, args[0]), _convert(v, args[1])) for k, v in value.items()]
        if not all(k[0] and v[0] for k, v in pairs):
            return False, None
        return True, {k[1]: v[1] for k, v in pairs}
    return True, value


def _to_float(value: Any) -> tuple[bool, Any]:
    if isinstance(value, bool):
        return False, None
    if isinstance(value, (int, float)):
        return True, float(value)
    if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            return True, float(value)
        except ValueError:
            return False, None
    return False, None


def _convert_tuple(value: Any, args: tuple) -> tuple[bool, Any]:
    if isinstance(value, str) and args[-1] is Ellipsis and args[0] is str:
        value = [v.strip() for v in value.split(",") if v.strip()]  # tasks: semseg,sal
    if not isinstance(value, (list, tuple)):
        return False, None
    element_types = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
    if len(element_types) != len(value):
        return False, None
    items = [_convert(v, t) for v, t in zip(value, element_types, strict=False)]
    return (True, tuple(c for _, c in items)) if all(ok for ok, _ in items) else (False, None)


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if args[-1] is Ellipsis:
            return f"a list of {_describe(args[0]).replace('an ', '').replace('a ', '')}s"
        return f"a list of {len(args)} {_describe(args[0]).replace('an ', '').replace('a ', '')}s"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
