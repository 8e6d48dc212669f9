"""Dict round trips of config dataclasses (JSON/YAML), shared by the model and train configs."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any


class DictRoundTrip:
    """Mixin for config dataclasses: ``to_dict`` in plain types, ``from_dict`` that warns on unknown keys.

    Unknown keys warn rather than fail: a file written by a newer toolkit stays readable by an older one.
    """

    config_kind = "config"

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (lists instead of tuples) for JSON and YAML."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        """Build from a dict, ignoring (with a warning naming them) keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(f"{source}: ignoring unknown {cls.config_kind} keys {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in data.items() if k in known})
