"""Training configuration: the reference recipe as typed defaults, LR scaling made explicit."""

from __future__ import annotations

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
    synthetic_images: int = field(default=96, metadata={"help": "images generated for --data synthetic"})
    train_split: str = field(default="train", metadata={"help": "split used for training"})
    val_split: str = field(default="val", metadata={"help": "split used for validation"})
    epochs: int = field(default=300, metadata={"help": "training epochs"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    warmup_epochs: float = field(default=20, metadata={"help": "linear warm-up length in epochs"})
    warmup_steps: int | None = field(default=None, metadata={"help": "warm-up length in steps (overrides epochs)"})
    batch_size: int = field(default=32, metadata={"help": "per-process batch size"})
    num_workers: int = field(default=4, metadata={"help": "data loader workers per process"})
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
    baselines: dict[str, float] = field(default_factory=dict, metadata={"help": "single-task metrics for delta-m"})

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        for name in ("epochs", "batch_size", "eval_every", "log_every", "synthetic_images"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)}, expected >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps: got {self.max_steps}, expected >= 1")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"amp: got {self.amp!r}, expected auto, bf16, fp16 or off")
        if self.lr_scaling not in ("linear", "none"):
            raise ConfigError(f"lr_scaling: got {self.lr_scaling!r}, expected linear or none")

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
    TrainConfig.check_keys(overrides, "--train-set")
    train_data.update(overrides)
    model = resolve_config(preset, yaml_path, model_overrides)
    return model, TrainConfig.from_dict(train_data, source=yaml_path or "train config")


def _check_sections(sections: dict[str, Any], yaml_path: str) -> None:
    import difflib

    for key in sections:
        if key not in ("model", "train", "resolved"):
            close = difflib.get_close_matches(str(key), ["model", "train"], n=1)
            hint = f"did you mean {close[0]!r}?" if close else "expected model: and train:"
            raise ConfigError(f"config file {yaml_path}: unknown section {key!r}; {hint}")


def save_run_config(path: Path, model: ModelConfig, train: TrainConfig, resolved: dict[str, Any]) -> None:
    """The resolved config of a run: model, train and the numbers derived from them (scaled LRs, steps)."""
    import yaml  # here, not at the top: a training step runs without pyyaml (only run folders need it)

    from mtlora_deploy.utils.atomic import write_bytes_atomic

    text = yaml.safe_dump({"model": model.to_dict(), "train": train.to_dict(), "resolved": resolved}, sort_keys=False)
    write_bytes_atomic(path, text.encode())
