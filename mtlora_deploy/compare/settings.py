"""What a comparison trains and how: the preset rows, one shared budget (steps, batch, LR, seed) and the data.

Every row gets the same training budget, data and seed; only the preset differs. The single-task rows (one
full fine-tuned model per task) are always added, since delta-m is measured against them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import DEFAULT_TASKS
from mtlora_deploy.model.presets import PRESETS

SINGLE_TASK = "single-task"
DEFAULT_PRESETS = (
    SINGLE_TASK, "full", "decoders", "bitfit", "lora", "mtlora-r16", "mtlora-r32", "mtlora-r64", "mtlora-plus-r16",
    "mtl-lora", "mtlora-mtl",
)  # fmt: skip
WARMUP_SHARE = 20 / 300  # the reference recipe warms up for 20 of its 300 epochs


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when there is one, else the CPU (as for training)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class RowSpec:
    """One training run of the comparison: a preset, and for a single-task row its task."""

    preset: str
    task: str | None = None

    @property
    def name(self) -> str:
        """The row's label: the preset, or ``single-task:TASK``."""
        return f"{self.preset}:{self.task}" if self.task else self.preset

    @property
    def folder(self) -> str:
        """Its run folder's name under ``OUTPUT/runs``."""
        return f"{self.preset}-{self.task}" if self.task else self.preset


@dataclass
class CompareSettings:
    """The shared budget and the measurement settings (every field is printed with the table)."""

    presets: tuple[str, ...] = field(default=DEFAULT_PRESETS, metadata={"help": "presets to train, in table order"})
    data: str = field(default="synthetic", metadata={"help": "PASCAL-MT root folder, or 'synthetic'"})
    steps: int | None = field(default=None, metadata={"help": "optimizer steps per run (None: the 300-epoch recipe)"})
    batch_size: int = field(default=32, metadata={"help": "per-process batch size of every run"})
    lr: float = field(default=5e-4, metadata={"help": "nominal base LR for batch 512 (scaled like mtlora train)"})
    seed: int = field(default=0, metadata={"help": "seed of every run (init, data order, augmentation)"})
    model_overrides: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "model config fields for every preset"}
    )
    train_overrides: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra train config fields"})
    synthetic_images: int = field(default=96, metadata={"help": "images of the synthetic set (generated once)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N for training and timing"})
    latency_batch: int = field(default=1, metadata={"help": "batch size of the latency measurement"})
    latency_iterations: int = field(default=20, metadata={"help": "timed iterations of the latency measurement"})
    latency_warmup: int = field(default=5, metadata={"help": "untimed iterations before timing"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads for training and timing"})

    def __post_init__(self) -> None:
        self.presets = tuple(self.presets)
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown or not self.presets:
            raise ConfigError(
                f"got {','.join(unknown) or 'none'}, expected names from {', '.join(PRESETS)}", field="presets"
            )
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"got {self.steps}, expected >= 1", field="steps")
        for name in ("batch_size", "synthetic_images", "latency_batch", "latency_iterations"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"got {getattr(self, name)}, expected >= 1", field=name)
        if not self.lr > 0:
            raise ConfigError(f"got {self.lr}, expected a positive learning rate", field="lr")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks every multi-task row predicts (``model_overrides["tasks"]``, default the four PASCAL-MT tasks)."""
        return tuple(self.model_overrides.get("tasks") or DEFAULT_TASKS)

    def rows(self) -> list[RowSpec]:
        """The runs to train: one single-task row per task first, then the presets in the order given."""
        singles = [RowSpec(SINGLE_TASK, task) for task in self.tasks]
        return singles + [RowSpec(p) for p in dict.fromkeys(self.presets) if p != SINGLE_TASK]

    def model_config_for(self, row: RowSpec) -> dict[str, Any]:
        """The ``--set`` overrides of one row (a single-task row predicts its task only)."""
        return {**self.model_overrides, "tasks": [row.task] if row.task else list(self.tasks)}

    def train_config(self, data_root: str) -> dict[str, Any]:
        """The train overrides every row shares; validation runs once, at the end of the budget."""
        train = {
            "data": data_root,
            "batch_size": self.batch_size,
            "base_lr": self.lr,
            "seed": self.seed,
            "eval_every": 10**9,
            "device": self.device,
        }
        if resolve_device(self.device) == "cpu":
            train["num_workers"] = 0  # loader processes only compete with the model for the CPU cores
        if self.steps is not None:
            train.update(max_steps=self.steps, warmup_steps=max(1, round(self.steps * WARMUP_SHARE)))
        return {**train, **self.train_overrides}

    def latency_settings(self) -> dict[str, Any]:
        """What a recorded latency was measured with (a change re-measures, never retrains)."""
        return {
            "batch": self.latency_batch,
            "iterations": self.latency_iterations,
            "warmup": self.latency_warmup,
            "threads": self.threads,
            "device": self.device,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {**out, "presets": list(self.presets), "tasks": list(self.tasks)}
