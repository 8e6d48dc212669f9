"""The int8 calibration cache: activation ranges of one fp32 graph, computed once and reused.

Calibrating Swin-T at 448 on 500 images takes tens of minutes on a CPU; building the Q/DQ graph from
known ranges takes seconds. So the ranges are written to a JSON file that names exactly what they
belong to (the fp32 graph's sha256, the calibration set's digests and provenance, the method and its
settings) and are reused when the int8 graph is rebuilt, e.g. with other excluded nodes. A cache made
for another graph, another calibration set or another method is never used silently.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.atomic import write_json_atomic

CACHE_FORMAT = "mtlora-deploy-int8-ranges"
CACHE_VERSION = 1


@dataclass
class RangeCache:
    """Symmetric activation ranges of one graph and everything they depend on.

    Attributes:
        graph_sha256: sha256 of the fp32 ``.onnx`` file the ranges were measured on.
        settings: :meth:`RangeSettings.to_dict` (method, bins, percentile).
        calibration: the calibration set: file, its sha256, array sha256, image count, split, dataset root.
        ranges: ``{tensor: [low, high]}`` (``low == -high``: zero points stay 0).
        images: how many images were seen; seconds: how long the pass took.
        tool: what computed the ranges (module and ONNX Runtime version).
    """

    graph_sha256: str
    settings: dict[str, Any]
    calibration: dict[str, Any]
    ranges: dict[str, list[float]]
    images: int
    seconds: float
    tool: str
    graph_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.settings["method"])

    def mismatches(self, graph_sha256: str, settings: dict[str, Any], calibration_sha256: str | None) -> list[str]:
        """What differs from the requested calibration (empty: the cache can be used)."""
        problems = []
        if self.graph_sha256 != graph_sha256:
            problems.append(
                f"it was made for another graph (sha256 {self.graph_sha256[:12]}..., "
                f"this one is {graph_sha256[:12]}...)"
            )
        if self.settings != settings:
            problems.append(f"it holds {_describe(self.settings)} ranges, {_describe(settings)} was asked for")
        if calibration_sha256 is not None and self.calibration.get("sha256") != calibration_sha256:
            problems.append(
                f"it was calibrated on {self.calibration.get('file')} "
                f"(sha256 {str(self.calibration.get('sha256'))[:12]}...), not on this calibration file"
            )
        return problems

    def summary(self) -> dict[str, Any]:
        """What goes into the int8 graph's metadata (no per-tensor ranges)."""
        return {
            "graph_sha256": self.graph_sha256,
            "settings": self.settings,
            "images": self.images,
            "seconds": round(self.seconds, 1),
            "tool": self.tool,
            "tensors": len(self.ranges),
        }


def _describe(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def write_range_cache(path: str | Path, cache: RangeCache) -> Path:
    """Write ``cache`` as JSON atomically (a killed run leaves the previous cache or none)."""
    write_json_atomic(path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, **asdict(cache)})
    return Path(path)


def read_range_cache(path: str | Path) -> RangeCache:
    """Read a cache written by :func:`write_range_cache`; anything else is a one-line ``ConfigError``."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"calibration cache {path} is not readable JSON ({exc}); delete it to recalibrate") from exc
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ConfigError(f"calibration cache {path} is not an mtlora int8 range cache (format {CACHE_FORMAT!r})")
    if payload.get("version") != CACHE_VERSION:
        raise ConfigError(
            f"calibration cache {path} has version {payload.get('version')}, this toolkit reads "
            f"{CACHE_VERSION}; delete it to recalibrate"
        )
    fields = {k: v for k, v in payload.items() if k not in ("format", "version")}
    try:
        return RangeCache(**fields)
    except TypeError as exc:
        raise ConfigError(f"calibration cache {path} is malformed ({exc}); delete it to recalibrate") from exc


def write_tensorrt_cache(path: str | Path, ranges: dict[str, list[float]], method: str) -> Path:
    """The same ranges as a TensorRT calibration cache (header line, then ``tensor: <big-endian fp32 scale>``).

    The scale is ``amax / 127``; ModelOpt's ONNX PTQ (``calibration_cache_path``) and TensorRT read this format.
    """
    kind = "EntropyCalibration2" if method == "entropy" else "MinMaxCalibration"
    lines = [f"TRT-10000-{kind}"]
    for name, (low, high) in ranges.items():
        scale = max(abs(low), abs(high)) / 127.0
        lines.append(f"{name}: {struct.pack('!f', scale).hex()}")
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
