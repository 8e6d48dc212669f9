"""Parameter accounting per group (LoRA, other backbone, decoders), trainable vs frozen, and after merging."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.mtl_lora import MTLLoRABranch, MTLLoRALinear


@dataclass
class ParameterTable:
    """Counts the MTLoRA paper reports; ``deployed`` is what the deployed graph(s) hold (see ``deployed_change``)."""

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

    Adapters with task branches keep ``A_sh, B_sh`` to take the shared term out of task outputs (docs/deploy.md,
    "Merge").
    """
    return sum(
        m.lora_shared_A.numel() + m.lora_shared_B.numel()
        for m in model.modules()
        if isinstance(m, MTLoRALinear) and not m.tasks
    )


def _branch_numel(module: MTLLoRABranch) -> int:
    return sum(p.numel() for p in (module.lora_A, module.lora_lambdas, module.lora_B, module.lora_mix_logits))


def deployed_change(module: nn.Module) -> int:
    """How many parameters deploying ``module`` adds (or, negative, removes).

    - ``MTLoRALinear`` without tasks: the shared pair folds into W.
    - ``MTLLoRALinear`` (``mtl-lora``): merged per task, ``W_t = W + delta_t``: the branch goes, T - 1 extra
      copies of W come (one graph per task, or one graph running the T task-conditioned encoders).
    - ``MTLoRAMTLLinear`` (``mtlora-mtl``): the shared pair stays (as in MTLoRA's stage-final adapters); the
      branch becomes its exact compact form, the shared A plus one ``B_t Lambda_t`` (out x r) per task.
    """
    if isinstance(module, MTLoRALinear):
        return -(module.lora_shared_A.numel() + module.lora_shared_B.numel()) if not module.tasks else 0
    if isinstance(module, MTLLoRALinear):
        return (len(module.tasks) - 1) * module.base_layer.weight.numel() - _branch_numel(module)
    if isinstance(module, MTLLoRABranch):
        compact = module.rank * (module.in_features + len(module.tasks) * module.out_features)
        return compact - _branch_numel(module)
    return 0


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
    deployed = total + sum(deployed_change(m) for m in model.modules())
    return ParameterTable(lt, lf, bt, bf, dt, df, deployed_params=deployed)
