"""``ProfileSettings``: every option of ``mtlora profile`` as one typed, checked dataclass."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mtlora_deploy.errors import ConfigError

BACKENDS = ("torch", "torch-compiled", "onnxruntime", "tensorrt")
DEFAULT_BACKENDS = ("torch", "onnxruntime", "tensorrt")  # each input's natural runtime; compiling is opt-in
AUTOCAST_PRECISIONS = ("fp32", "fp16", "bf16")  # torch autocast dtypes; artefact precisions: utils.artifacts
COMPARISONS = ("per_task", "merged", "bare_backbone", "head_cost")


@dataclass(frozen=True)
class ProfileSettings:
    """What ``run_profile`` measures and how (dataclass defaults < the CLI's flags)."""

    backends: tuple[str, ...] = field(default=DEFAULT_BACKENDS, metadata={"help": "backends to run inputs on"})
    precisions: tuple[str, ...] = field(default=("fp32",), metadata={"help": "torch autocast precisions"})
    batches: tuple[int, ...] = field(default=(1, 8, 32), metadata={"help": "batch sizes"})
    duration: float = field(default=1.0, metadata={"help": "timed seconds per (candidate, batch)"})
    iterations: int = field(default=10, metadata={"help": "timed calls per (candidate, batch) at least"})
    warmup: int = field(default=10, metadata={"help": "untimed calls before timing"})
    rounds: int = field(default=10, metadata={"help": "interleaved rounds (the intervals' unit; >= 6 for one)"})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda[:N]"})
    include_copies: bool = field(default=False, metadata={"help": "time host<->device copies too"})
    comparisons: tuple[str, ...] = field(default=COMPARISONS, metadata={"help": "comparison variants of torch models"})
    compile_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "TorchCompiledBackend options"})
    use_cuda_graph: bool = field(default=False, metadata={"help": "TensorRT plans replay a CUDA graph"})
    memory: bool = field(default=False, metadata={"help": "CPU: peak RSS per candidate in a fresh subprocess"})
    seed: int = field(default=0, metadata={"help": "seed of the random input images"})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads during the run"})
    budget_s: float | None = field(
        default=None,
        metadata={"help": "hard limit on the whole profile (+ one call); calls and rounds shrink, nothing is dropped"},
    )
    keep_going: bool = field(default=False, metadata={"help": "any error in a candidate is a note, not a stop"})

    def __post_init__(self) -> None:
        for name in ("backends", "precisions", "comparisons"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "batches", tuple(int(b) for b in self.batches))
        for name, values, allowed in (
            ("backends", self.backends, BACKENDS),
            ("precisions", self.precisions, AUTOCAST_PRECISIONS),
            ("comparisons", self.comparisons, COMPARISONS),
        ):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"got {bad[0]!r}, expected any of {', '.join(allowed)}", field=name)
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(
                f"got {list(self.batches)}, expected positive batch sizes such as 1,8,32", field="batches"
            )
        if self.iterations < 1 or self.warmup < 0 or self.duration < 0:
            raise ConfigError(
                f"`iterations`/`warmup`/`duration`: got {self.iterations}/{self.warmup}/"
                f"{self.duration}, expected iterations >= 1, warmup >= 0, duration >= 0"
            )
        if self.rounds < 2:
            raise ConfigError(
                f"got {self.rounds}, expected at least 2 (intervals resample rounds; 10 is a good default)",
                field="rounds",
            )

    def updated(self, **overrides: Any) -> ProfileSettings:
        """A copy with ``overrides`` (None values ignored); an unknown name is an error naming the nearest one."""
        names = [f.name for f in fields(self)]
        for key in overrides:
            if key not in names:
                near = difflib.get_close_matches(key, names, n=1)
                raise ConfigError(
                    f"profile setting {key!r} does not exist"
                    + (f"; did you mean {near[0]!r}?" if near else f"; settings: {', '.join(names)}")
                )
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})
