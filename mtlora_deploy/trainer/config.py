"""Training configuration: the reference recipe as typed defaults, LR scaling made explicit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.config import ModelConfig, read_yaml_mapping
from mtlora_deploy.model.presets import resolve_config
from mtlora_deploy.utils.dataclass_io import DictRoundTrip

REFERENCE_BATCH = 512  # learning rates are given for this global batch and scaled linearly


@dataclass
class TrainConfig(DictRoundTrip):
    """The reference recipe (docs/training.md, "Recipe") with every number overridable."""

    config_kind = "train config"

    data: str = field(default="synthetic", metadata={"help": "PASCAL-MT root folder, or 'synthetic'"})
    synthetic_images: int = field(default=96, metadata={"help": "images generated when data is 'synthetic'"})
    train_split: str = field(default="train", metadata={"help": "split used for training"})
    val_split: str = field(default="val", metadata={"help": "split used for validation"})
    epochs: int = field(default=300, metadata={"help": "training epochs"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    warmup_epochs: float = field(default=20, metadata={"help": "linear warm-up length in epochs"})
    warmup_steps: int | None = field(default=None, metadata={"help": "warm-up length in steps (overrides epochs)"})
    batch_size: int = field(default=32, metadata={"help": "per-process batch size"})
    num_workers: int | None = field(
        default=None, metadata={"help": "data loader workers per process (None: 4, at most the usable CPU cores)"}
    )
    base_lr: float = field(default=5e-4, metadata={"help": "nominal peak LR for a global batch of 512"})
    warmup_lr: float = field(default=5e-7, metadata={"help": "nominal warm-up start LR (batch 512)"})
    min_lr: float = field(default=5e-6, metadata={"help": "nominal cosine floor (batch 512)"})
    lr_scaling: str = field(default="linear", metadata={"help": "linear (x batch*world/512) or none"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW decay; none on 1-D, bias, rel-pos tables"})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas"})
    eps: float = field(default=1e-8, metadata={"help": "AdamW eps"})
    clip_grad: float | None = field(default=5.0, metadata={"help": "gradient norm clip (None: off)"})
    amp: str = field(default="auto", metadata={"help": "auto (bf16 on CUDA), bf16, fp16 (with scaler) or off"})
    seed: int = field(default=0, metadata={"help": "seed for init, data order and augmentation"})
    eval_every: int = field(default=1, metadata={"help": "validate every N epochs (and at the end)"})
    log_every: int = field(default=10, metadata={"help": "log metrics every N steps"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    loss_weights: dict[str, float] = field(default_factory=dict, metadata={"help": "per-task loss weight overrides"})
    baselines: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "per-task metrics delta-m is measured against (empty: the single-task Swin-T reference)"},
    )
    baseline_name: str = field(
        default="given",
        metadata={"help": "what baselines are (untrained, given, ...): logs name delta-m delta_m_vs_NAME"},
    )

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("epochs", "batch_size", "eval_every", "log_every", "synthetic_images"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: got {self.max_steps}, expected >= 1")
        self._check_numbers()
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"amp: got {self.amp!r}, expected auto, bf16, fp16 or off")
        if self.lr_scaling not in ("linear", "none"):
            raise ConfigError(f"lr_scaling: got {self.lr_scaling!r}, expected linear or none")

    def _check_numbers(self) -> None:
        """Every number in its range before anything is built (``base_lr=-1`` must not reach the optimizer)."""
        positive = ("base_lr", "eps")
        at_least_zero = ("warmup_lr", "min_lr", "weight_decay", "warmup_epochs", "warmup_steps", "num_workers")
        for name in positive:
            if not 0 < float(getattr(self, name)) < math.inf:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected a finite number > 0")
        for name in at_least_zero:
            value = getattr(self, name)
            if value is not None and not 0 <= float(value) < math.inf:
                raise ConfigError(f"{name}: got {value}, expected a finite number >= 0")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ConfigError(f"clip_grad: got {self.clip_grad}, expected a number > 0 or null (no clipping)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas: got {list(self.betas)}, expected two numbers in [0, 1)")
        for task, weight in self.loss_weights.items():
            if not float(weight) >= 0:
                raise ConfigError(f"loss_weights.{task}: got {weight}, expected a number >= 0")

    def scaled_lrs(self, world_size: int) -> dict[str, float]:
        """Peak, warm-up and floor LRs after scaling by batch * world_size / 512 (docs/training.md, "Recipe")."""
        factor = self.batch_size * world_size / REFERENCE_BATCH if self.lr_scaling == "linear" else 1.0
        return {
            "lr": self.base_lr * factor,
            "warmup_lr": self.warmup_lr * factor,
            "min_lr": self.min_lr * factor,
            "lr_scale_factor": factor,
        }


def load_run_configs(
    preset: str | None,
    yaml_path: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
) -> tuple[ModelConfig, TrainConfig]:
    """Resolve model and train configs: defaults < preset < YAML (model:/train: sections) < flags."""
    train_data: dict[str, Any] = {}
    if yaml_path is not None:
        sections = read_yaml_mapping(yaml_path)
        if "train" in sections or "model" in sections:
            _check_sections(sections, yaml_path)
        from_yaml = sections.get("train") or {}
        if not isinstance(from_yaml, dict):
            raise ConfigError(f"config file {yaml_path}: the train: section must be a mapping of train config fields")
        TrainConfig.check_keys(from_yaml, f"config file {yaml_path} (train:)")
        train_data.update(from_yaml)
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    TrainConfig.check_keys(overrides, "`train_overrides`")
    train_data.update(overrides)
    model = resolve_config(preset, yaml_path, model_overrides)
    return model, TrainConfig.from_dict(train_data, source=yaml_path or "train config")


def _check_sections(sections: dict[str, Any], yaml_path: str) -> None:
    import difflib

    for key in sections:
        if key not in ("origin", "model", "train", "resolved"):
            close = difflib.get_close_matches(str(key), ["model", "train"], n=1)
            hint = f"did you mean {close[0]!r}?" if close else "expected model: and train:"
            raise ConfigError(f"config file {yaml_path}: unknown section {key!r}; {hint}")


def run_origin(preset: str | None, config_path: str | None, model_overrides: dict[str, Any]) -> dict[str, Any]:
    """How a run's model config was asked for: the preset, the YAML file and the fields given on top of them."""
    import json

    overrides = {k: v for k, v in model_overrides.items() if v is not None}
    return {
        "preset": preset,
        "config": None if config_path is None else str(config_path),
        "model_overrides": json.loads(json.dumps(overrides, default=list)),  # tuples as YAML lists
    }


def save_run_config(
    path: Path, model: ModelConfig, train: TrainConfig, resolved: dict[str, Any], origin: dict[str, Any] | None = None
) -> None:
    """The resolved config of a run: how it was asked for (``origin``: preset and overrides), model, train and the
    numbers derived from them (scaled LRs, steps)."""
    import yaml  # here, not at the top: a training step runs without pyyaml (only run folders need it)

    from mtlora_deploy.utils.atomic import write_bytes_atomic

    sections = {"model": model.to_dict(), "train": train.to_dict(), "resolved": resolved}
    text = yaml.safe_dump({**({"origin": origin} if origin else {}), **sections}, sort_keys=False)
    write_bytes_atomic(path, text.encode())
