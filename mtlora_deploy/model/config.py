"""Typed model configuration with YAML round-trip and named presets.

Precedence is dataclass default < preset < YAML < explicit overrides, as in litgpt/torchtune.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.utils.dataclass_io import DictRoundTrip

ALL_TASKS = ("semseg", "human_parts", "sal", "normals", "edge")
TASK_OUTPUT_CHANNELS = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3, "edge": 1}
DEFAULT_TASKS = ("semseg", "human_parts", "sal", "normals")

ADAPTERS = ("mtlora", "lora", "mtl-lora", "mtlora-mtl", "none")
MTL_ADAPTERS = ("mtl-lora", "mtlora-mtl")  # adapters with an MTL-LoRA branch (docs/mtl_lora.md)
TRAINABLE_MODES = ("reference", "full", "decoders", "bitfit")

# Backbone architectures: timm variants plus a tiny one for fast CPU tests (same code path, smaller numbers).
BACKBONE_ARCHS: dict[str, dict[str, Any]] = {
    "swin_tiny_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7),
    "swin_small_patch4_window7_224": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7),
    "swin_base_patch4_window7_224": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7),
    "swin_test_tiny": dict(embed_dim=24, depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 6), window_size=2),
}
TIMM_BASE_FOR = {"swin_test_tiny": "swin_tiny_patch4_window7_224"}


@dataclass
class ModelConfig(DictRoundTrip):
    """Everything needed to rebuild a multi-task model; stored in every checkpoint and ONNX file."""

    config_kind = "model config"

    backbone: str = field(
        default="swin_tiny_patch4_window7_224", metadata={"help": "timm Swin variant or swin_test_tiny"}
    )
    image_size: int = field(default=448, metadata={"help": "square input size; must tile into windows at every stage"})
    tasks: tuple[str, ...] = field(
        default=DEFAULT_TASKS, metadata={"help": "tasks, any subset of " + ",".join(ALL_TASKS)}
    )
    adapter: str = field(
        default="mtlora",
        metadata={
            "help": "mtlora (TA + TS LoRA), lora (TA only), mtl-lora (MTL-LoRA everywhere, one encoder pass per task), "
            "mtlora-mtl (MTLoRA with MTL-LoRA task branches) or none"
        },
    )
    trainable: str = field(default="reference", metadata={"help": "reference freezing, full, decoders or bitfit"})
    task_agnostic_rank: int = field(default=64, metadata={"help": "rank r of the shared LoRA in every block"})
    task_specific_rank: int = field(default=4, metadata={"help": "rank r_t of the per-task LoRA at stage ends"})
    lora_scale: float = field(default=4.0, metadata={"help": "constant multiplier s of the TA-LoRA (not alpha/r)"})
    task_specific_scale: float = field(default=4.0, metadata={"help": "constant multiplier s_t of the TS-LoRA"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch input only"})
    lora_on_reductions: bool = field(default=False, metadata={"help": "MTLoRA+: TA-LoRA on patch-merging reductions"})
    mtl_rank: int = field(default=32, metadata={"help": "MTL-LoRA: rank r of A, every Lambda_t and every B_i"})
    mtl_num_b: int = field(default=3, metadata={"help": "MTL-LoRA: number n of shared up-projections B_i"})
    mtl_temperature: float = field(default=0.1, metadata={"help": "MTL-LoRA: softmax temperature tau of the B mixture"})
    mtl_alpha: float = field(default=128.0, metadata={"help": "MTL-LoRA: the branch is scaled by mtl_alpha / mtl_rank"})
    mtl_diagonal_lambda: bool = field(default=False, metadata={"help": "MTL-LoRA: Lambda_t diagonal, not r x r"})
    drop_path_rate: float = field(default=0.2, metadata={"help": "stochastic depth, linear over all blocks"})
    decoder_widths: tuple[int, ...] = field(default=(18, 36, 72, 144), metadata={"help": "per-scale reducer widths"})
    head_channels: int = field(default=1080, metadata={"help": "hidden width of the HRNet-style head"})
    num_classes: dict[str, int] = field(default_factory=dict, metadata={"help": "output channels per task override"})
    pretrained: str | None = field(default=None, metadata={"help": "local .pth/.safetensors or timm[:NAME]"})

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        self.decoder_widths = tuple(int(w) for w in self.decoder_widths)
        self.num_classes = dict(self.num_classes or {})
        _check_choice("backbone", self.backbone, tuple(BACKBONE_ARCHS))
        _check_choice("adapter", self.adapter, ADAPTERS)
        _check_choice("trainable", self.trainable, TRAINABLE_MODES)
        if not self.tasks:
            raise ConfigError("tasks: at least one task is needed; choose from " + ",".join(ALL_TASKS))
        for task in self.tasks:
            _check_choice("tasks", task, ALL_TASKS)
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks: {','.join(self.tasks)} names a task twice")
        if self.adapter in ("mtlora", "lora", "mtlora-mtl") and self.task_agnostic_rank < 1:
            raise ConfigError(f"task_agnostic_rank: got {self.task_agnostic_rank}, expected >= 1 with a LoRA adapter")
        if self.adapter == "mtlora" and self.task_specific_rank < 1:
            raise ConfigError(f"task_specific_rank: got {self.task_specific_rank}, expected >= 1 for mtlora")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout: got {self.lora_dropout}, expected 0 <= p < 1")
        self._check_mtl()
        if len(self.decoder_widths) != 4:
            raise ConfigError(f"decoder_widths: got {self.decoder_widths}, expected 4 widths (one per stage)")
        self._check_image_size()

    def _check_mtl(self) -> None:
        """MTL-LoRA fields (checked for every adapter, like lora_dropout: a bad value is a typo wherever it is)."""
        for name in ("mtl_rank", "mtl_num_b"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: got {value!r}, expected an integer >= 1")
        for name in ("mtl_temperature", "mtl_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name}: got {value!r}, expected a number > 0")
            setattr(self, name, float(value))
        if not isinstance(self.mtl_diagonal_lambda, bool):
            raise ConfigError(f"mtl_diagonal_lambda: got {self.mtl_diagonal_lambda!r}, expected true or false")

    def _check_image_size(self) -> None:
        check_window_tiling(self, self.image_size, "image_size")

    @property
    def arch(self) -> dict[str, Any]:
        """Swin architecture numbers (embed_dim, depths, num_heads, window_size) of the backbone."""
        return dict(BACKBONE_ARCHS[self.backbone])

    def output_channels(self, task: str) -> int:
        """Logit channels of a task's head (21 for semseg, 7 parts, 1 sal, 3 normals, 1 edge by default)."""
        return int(self.num_classes.get(task, TASK_OUTPUT_CHANNELS[task]))

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with fields replaced (validated again)."""
        return ModelConfig.from_dict({**self.to_dict(), **overrides})


def check_window_tiling(config: ModelConfig, image_size: int, field: str = "image_size") -> None:
    """Every stage's token grid must be a whole number of windows (no padding, same window at every size).

    The one rule for training and export alike. The last stage is the strictest:
    ``image_size / (4 * 2**(stages-1))`` must be a multiple of the window.
    """
    arch = config.arch
    window, stages = arch["window_size"], len(arch["depths"])
    unit = 4 * 2 ** (stages - 1) * window
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ConfigError(f"got {image_size!r}, expected a positive integer multiple of {unit}", field=field)
    if image_size <= 0 or image_size % unit:
        grids = ", ".join(f"{image_size / (4 * 2**i):g}" for i in range(stages))
        raise ConfigError(
            f"got {image_size}; the token grids ({grids}) must each be a multiple of the "
            f"{window}x{window} window of {config.backbone}; use a multiple of {unit} (e.g. {unit}, {2 * unit})",
            field=field,
        )


def _check_choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: got {value!r}, expected one of {', '.join(map(str, allowed))}")


def save_yaml(config: ModelConfig, path: str | Path) -> None:
    """Write the config as YAML (a `model:` section, so train configs can add more sections)."""
    import yaml  # here, not at the top: the model and its presets import without pyyaml

    Path(path).write_text(yaml.safe_dump({"model": config.to_dict()}, sort_keys=False))


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping, with one-line errors for a missing, invalid or non-mapping file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read the `model:` section of a YAML file as a dict (the whole file if it has no sections)."""
    data = read_yaml_mapping(path)
    return data.get("model", data) if isinstance(data.get("model", data), dict) else {}
