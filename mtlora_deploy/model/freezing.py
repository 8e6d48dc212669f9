"""Which parameters train: the reference MTLoRA freezing and the baselines' rules."""

from __future__ import annotations

import re

from torch import nn

from mtlora_deploy.model.config import ModelConfig

# Reference MTLoRA: LoRA, every LayerNorm, patch embedding, rel-pos tables, (plain MTLoRA) reductions train.
# The MTL-LoRA adapters (mtl-lora, mtlora-mtl) follow the same rules: their lora_A, lora_lambdas, lora_B and
# lora_mix_logits train, their base_layer is frozen, reductions train unless wrapped (lora_on_reductions).
_REFERENCE_TRAINABLE = re.compile(
    r"(lora_|\.norm\d?\.|^patch_embed\.|relative_position_bias_table|downsample\.reduction\.weight$)"
)


def is_trainable_backbone_param(name: str, config: ModelConfig) -> bool:
    """Whether backbone parameter ``name`` (relative to the backbone) trains under ``config.trainable``."""
    if config.trainable == "full":
        return True
    if config.trainable == "decoders":
        return False
    if config.trainable == "bitfit":
        return name.endswith("bias")
    if ".base_layer." in name:
        return False
    return bool(_REFERENCE_TRAINABLE.search(name))


def apply_trainable(model: nn.Module, config: ModelConfig) -> None:
    """Set ``requires_grad`` on every parameter of a MultiTaskModel; everything outside the backbone trains."""
    for name, param in model.backbone.named_parameters():
        param.requires_grad_(is_trainable_backbone_param(name, config))
    for param in model.decoders.parameters():
        param.requires_grad_(True)
