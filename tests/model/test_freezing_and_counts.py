"""Only the reference trainable set receives gradients; counts match docs/model.md, "Parameter counts"."""

from pathlib import Path

import pytest
import torch

from mtlora_deploy.model.params import count_parameters
from mtlora_deploy.model.reference.keys import ours_to_reference
from tests.conftest import full_size_structure, tiny_model
from tests.model.param_formulas import decoder_params, stage_widths, swin_backbone_params

REFERENCE_KEYS = Path(__file__).parents[1] / "data" / "reference_keys.tsv"


def _grads_after_backward(model, images):
    model.train()
    out = model(images)
    sum(v.float().mean() for v in out.values()).backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.mark.parametrize("preset", ["mtlora-r16", "mtlora-plus-r16", "lora", "full", "decoders", "bitfit"])
def test_only_trainable_parameters_receive_gradients(preset, images):
    model = tiny_model(preset, lora_dropout=0.0, drop_path_rate=0.0)
    with torch.no_grad():  # non-zero B so A receives gradient too
        for n, p in model.named_parameters():
            if "lora_" in n and "_B" in n:
                p.normal_(0, 0.05)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    got = _grads_after_backward(model, images)
    assert got <= trainable
    assert len(got) >= 0.95 * len(trainable)


def test_freezing_rules_per_preset():
    def trainable(preset):
        return {n for n, p in tiny_model(preset).named_parameters() if p.requires_grad}

    mtlora = trainable("mtlora-r16")
    assert not any(".base_layer." in n for n in mtlora)
    assert "backbone.layers.1.downsample.reduction.weight" in mtlora
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in mtlora
    assert "backbone.patch_embed.proj.weight" in mtlora
    plus = trainable("mtlora-plus-r16")
    assert "backbone.layers.1.downsample.reduction.base_layer.weight" not in plus
    assert "backbone.layers.1.downsample.reduction.lora_shared_A" in plus
    assert all(n.startswith("decoders.") for n in trainable("decoders"))
    bitfit = trainable("bitfit")
    assert all(n.startswith("decoders.") or n.endswith("bias") for n in bitfit)
    assert "backbone.layers.0.blocks.0.attn.qkv.bias" in bitfit


def test_swin_t_mtlora_r64_trainable_set_is_the_reference_set():
    model = full_size_structure("mtlora-r64")
    rows = [line.split("\t") for line in REFERENCE_KEYS.read_text().splitlines()[1:]]
    reference_trainable = {key for key, _, _, flag in rows if flag == "yes"}
    ours = set(ours_to_reference({n: p for n, p in model.named_parameters() if p.requires_grad}))
    assert ours == reference_trainable


def _lora_formula(dims, depths, rank, task_rank, tasks):
    """docs/model.md, "Parameter counts": 16 r C per block (TA), 12 r_t C per task in each stage-final block (TS)."""
    ta = sum(16 * rank * c * d for c, d in zip(dims, depths, strict=True))
    ts = sum(12 * task_rank * c * tasks for c in dims)
    return ta + ts


@pytest.mark.parametrize("rank", [16, 32, 64])
def test_swin_t_counts_match_the_paper(rank):
    model = full_size_structure(f"mtlora-r{rank}")
    table = count_parameters(model)
    assert table.lora_trainable == _lora_formula([96, 192, 384, 768], [2, 2, 6, 2], rank, 4, 4)
    assert table.decoders_trainable == decoder_params(model.config) == 1_946_624  # param_formulas: Swin-T's
    backbone = table.lora_frozen + table.backbone_trainable + table.backbone_frozen
    assert backbone == swin_backbone_params(model.config) == 27_517_818  # timm Swin-T less head and final norm
    paper = {16: 4.95e6, 32: 6.08e6, 64: 8.34e6}[rank]  # docs/training.md: the MTLoRA paper's trainable counts
    assert abs(table.trainable_params - paper) < 0.005e6
    # merging folds the shared pair of every adapter without task branches (16 r C per block), except in each
    # stage-final block, whose proj/fc1/fc2 keep theirs for the task branches (only qkv's 4 r C folds)
    widths, depths = stage_widths(model.config), model.config.arch["depths"]
    folded = sum(16 * rank * c * (d - 1) + 4 * rank * c for c, d in zip(widths, depths, strict=True))
    assert table.deployed_params == table.total_params - folded
    if rank == 64:  # docs/deploy.md, "Merge": about 34.3 M as trained, about 30.9 M deployed
        assert round(table.total_params / 1e6, 1) == 34.3
        assert round(table.deployed_params / 1e6, 1) == 30.8 or round(table.deployed_params / 1e6, 1) == 30.9


def test_tiny_counts_match_the_formula():
    model = tiny_model("mtlora-r16", task_agnostic_rank=8, task_specific_rank=2, tasks=("semseg", "sal", "edge"))
    table = count_parameters(model)
    assert stage_widths(model.config) == [24, 48, 96, 192]
    assert table.lora_trainable == _lora_formula([24, 48, 96, 192], [1, 1, 2, 1], 8, 2, 3)
    assert table.lora_frozen + table.backbone_trainable + table.backbone_frozen == swin_backbone_params(model.config)
    assert table.decoders_trainable == decoder_params(model.config)
