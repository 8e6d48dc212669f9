"""Write a model trained here as a checkpoint the reference MTLoRA code evaluates (``main.py --resume X --eval``).

The ``.pth`` holds ``model`` in the reference key layout (docs/model.md, "Reference code"; buffers too) and ``config``
as a plain nested dict in the reference's yacs key layout (plain types, so ``torch.load`` reads it with or without
``weights_only``). No optimizer/lr_scheduler entries: the reference's ``load_checkpoint`` then loads only the model.
Beside it, a YAML file to pass as the reference's ``--cfg`` (only keys its defaults define).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.checkpoint import load_checkpoint, read_checkpoint_info
from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.reference.keys import REFERENCE_BUFFERS, ours_to_reference
from mtlora_deploy.model.reference.options import FIXED_MTLORA_OPTIONS
from mtlora_deploy.utils.atomic import atomic_path, write_bytes_atomic

EXPORTABLE_ADAPTERS = ("mtlora", "none")


def check_exportable(config: ModelConfig) -> None:
    """The reference code can express MTLoRA (and MTLoRA+) and adapter-free models with its HRNet heads."""
    if config.adapter not in EXPORTABLE_ADAPTERS:
        raise ConfigError(
            f"export-reference: adapter {config.adapter!r} has no reference-code equivalent; "
            f"exportable: {', '.join(EXPORTABLE_ADAPTERS)}"
        )
    if config.head_channels != 4 * sum(config.decoder_widths):
        raise ConfigError(
            f"export-reference: head_channels={config.head_channels}, but the reference head is 4 x "
            f"sum(decoder_widths) = {4 * sum(config.decoder_widths)}"
        )


def reference_model_section(config: ModelConfig) -> dict[str, Any]:
    """``DATA`` and ``MODEL`` of the reference config for ``config`` (what its ``--cfg`` YAML may contain)."""
    arch, stages = config.arch, len(config.arch["depths"])
    model: dict[str, Any] = {
        "TYPE": "swin",
        "NAME": f"mtlora_deploy_{config.backbone}_{config.image_size}",
        "DROP_PATH_RATE": float(config.drop_path_rate),
        "SWIN": {
            "PATCH_SIZE": 4,
            "EMBED_DIM": int(arch["embed_dim"]),
            "DEPTHS": [int(d) for d in arch["depths"]],
            "NUM_HEADS": [int(h) for h in arch["num_heads"]],
            "WINDOW_SIZE": int(arch["window_size"]),
            "APE": False,
        },
        "DECODER_HEAD": {task: "hrnet" for task in config.tasks},
        "DECODER_CHANNELS": [int(w) for w in config.decoder_widths],
        "MTLORA": {"ENABLED": config.adapter == "mtlora"},
    }
    if config.adapter == "mtlora":
        model["MTLORA"].update(_mtlora_section(config, stages))
    return {"DATA": {"IMG_SIZE": int(config.image_size)}, "MODEL": model}


def _mtlora_section(config: ModelConfig, stages: int) -> dict[str, Any]:
    def each(value: Any) -> list:
        return [value] * stages

    return {
        "R": each(int(config.task_agnostic_rank)),
        "SHARED_SCALE": each(float(config.lora_scale)),
        "TASK_SCALE": each(float(config.task_specific_scale)),
        "DROPOUT": each(float(config.lora_dropout)),
        **FIXED_MTLORA_OPTIONS,
        "FREEZE_PRETRAINED": True,
        "DOWNSAMPLER_ENABLED": bool(config.lora_on_reductions),
        "R_PER_TASK": {
            **{t: each(int(config.task_specific_rank)) for t in config.tasks},
            "shared": each(int(config.task_agnostic_rank)),
        },
        "SCALE_PER_TASK": {t: each(float(config.task_specific_scale)) for t in config.tasks},
    }


def reference_config(config: ModelConfig) -> dict[str, Any]:
    """The whole stored config: ``--cfg`` sections plus what the reference's command line adds (TASKS...)."""
    data = reference_model_section(config)
    data["TASKS"] = list(config.tasks)
    data["MODEL"]["FREEZE_BACKBONE"] = config.trainable == "decoders"
    data["TASKS_CONFIG"] = {"ALL_TASKS": {"NUM_OUTPUT": {t: config.output_channels(t) for t in config.tasks}}}
    return data


def reference_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our tensors in the reference layout, plus the buffers the reference stores (attention masks, rel-pos index)."""
    state = model.state_dict()
    buffers = {
        name: buf for name, buf in model.named_buffers() if name not in state and name.endswith(REFERENCE_BUFFERS)
    }
    merged = {**state, **buffers}
    return {k: v.detach().cpu().contiguous() for k, v in ours_to_reference(merged).items()}


def export_reference_checkpoint(model: nn.Module, path: str | Path, epoch: int = 0) -> tuple[Path, Path]:
    """Write ``path`` (.pth) and its ``--cfg`` YAML beside it (same stem); returns both paths."""
    config: ModelConfig = model.config
    check_exportable(config)
    path = Path(path)
    checkpoint = {
        "model": reference_state_dict(model),
        "config": reference_config(config),
        "epoch": int(epoch),
        "max_accuracy": 0.0,
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    cfg_path = path.with_suffix(".yaml")
    write_bytes_atomic(cfg_path, yaml.safe_dump(reference_model_section(config), sort_keys=False).encode())
    return path, cfg_path


def export_reference_run(source: str | Path, output: str | Path) -> tuple[Path, Path, ModelConfig]:
    """A run folder / checkpoint of ours -> the reference ``.pth`` + ``--cfg`` YAML; returns both and the config."""
    info = read_checkpoint_info(source)
    if info.get("kind", "multitask") != "multitask":
        raise ConfigError(
            f"export-reference: {source} is a {info.get('kind')!r} model; export the trained (unmerged) checkpoint"
        )
    epoch = info.get("metadata", {}).get("epoch", 0)
    model = load_checkpoint(source)
    pth, cfg = export_reference_checkpoint(model, output, epoch=int(epoch) if isinstance(epoch, (int, float)) else 0)
    return pth, cfg, model.config
