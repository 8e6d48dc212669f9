"""Parameter accounting per group (LoRA, other backbone, decoders), trainable vs frozen, and after merging."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from mtlora_deploy.model.adapters import MTLoRALinear


@dataclass
class ParameterTable:
    """Counts the MTLoRA paper reports; ``deployed`` is the count once the task-agnostic LoRA is folded."""

    lora_trainable: int
    lora_frozen: int
    backbone_trainable: int
    backbone_frozen: int
    decoders_trainable: int
    decoders_frozen: int
    deployed_params: int

    @property
    def trainable_params(self) -> int:
        return self.lora_trainable + self.backbone_trainable + self.decoders_trainable

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.lora_frozen + self.backbone_frozen + self.decoders_frozen

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "trainable_params": self.trainable_params, "total_params": self.total_params}


def _split(params: list[nn.Parameter]) -> tuple[int, int]:
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, sum(p.numel() for p in params) - trainable


def folded_lora_params(model: nn.Module) -> int:
    """LoRA parameters that disappear when merging: the shared pair of every adapter without task branches.

    Adapters with task branches keep ``A_sh, B_sh`` to subtract the shared term from task outputs (deploy.md 1).
    """
    return sum(
        m.lora_shared_A.numel() + m.lora_shared_B.numel()
        for m in model.modules()
        if isinstance(m, MTLoRALinear) and not m.tasks
    )


def count_parameters(model: nn.Module) -> ParameterTable:
    """Count every parameter of a MultiTaskModel-like module once, grouped as the paper does."""
    named = list(model.named_parameters())
    lora = [p for n, p in named if "lora_" in n]
    backbone = [p for n, p in named if n.startswith("backbone.") and "lora_" not in n]
    decoders = [p for n, p in named if not n.startswith("backbone.") and "lora_" not in n]
    lt, lf = _split(lora)
    bt, bf = _split(backbone)
    dt, df = _split(decoders)
    total = lt + lf + bt + bf + dt + df
    return ParameterTable(lt, lf, bt, bf, dt, df, deployed_params=total - folded_lora_params(model))
