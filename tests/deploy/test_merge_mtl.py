"""MTL-LoRA merges: per task for mtl-lora (W_t = W + (alpha/r) B_t Lambda_t A), task-agnostic for the mtlora-mtl hybrid.

Parity is checked in float32 against the unmerged model (max|diff| / max|ref| <= 1e-5) with every MTL-LoRA tensor
random: B's, Lambda's and the mixture logits. alpha = 4 r keeps the branch scale the presets use (alpha / r = 4).
"""

import json

import pytest
import torch
from torch import nn

import mtlora_deploy
from mtlora_deploy.deploy.merge import build_merged, is_merged, merge_checkpoint, merge_task_agnostic
from mtlora_deploy.deploy.merge_mtl import PerTaskModels, merge_per_task
from mtlora_deploy.errors import ConfigError, WeightsError
from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.checkpoint import save_checkpoint
from mtlora_deploy.model.deployed import TaskBranchLinear
from mtlora_deploy.model.mtl_lora import MTLLoRABranch, MTLoRAMTLLinear
from mtlora_deploy.model.params import count_parameters
from tests.conftest import randomize_lora, tiny_model

TASKS = ("semseg", "human_parts", "sal", "normals")


def _randomize_mtl(model: nn.Module, seed: int = 3, std: float = 0.05) -> nn.Module:
    """Random non-zero B's (randomize_lora) plus noise on every Lambda and mixture logit."""
    randomize_lora(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_lambdas" in name or "lora_mix_logits" in name:
                param.add_(torch.randn(param.shape, generator=generator) * std * 4)
    return model.eval()


def _mtl_model(tasks=TASKS, diagonal=False, reductions=True, rank=4):
    model = tiny_model(
        "mtl-lora",
        tasks=tasks,
        mtl_rank=rank,
        mtl_alpha=4.0 * rank,
        mtl_diagonal_lambda=diagonal,
        lora_on_reductions=reductions,
    )
    return _randomize_mtl(model)


def _hybrid_model(tasks=TASKS, diagonal=False):
    return _randomize_mtl(
        tiny_model("mtlora-mtl", tasks=tasks, mtl_rank=2, mtl_alpha=8.0, mtl_diagonal_lambda=diagonal)
    )


def _relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    return ((ref - out).abs().max() / ref.abs().max()).item()


def _no_adapters_left(model: nn.Module) -> bool:
    return not any(isinstance(m, (MTLoRALinear, MTLLoRABranch)) for m in model.modules())


# ---- mtl-lora: per task ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True], ids=["full-lambda", "diagonal-lambda"])
def test_per_task_merge_equals_the_unmerged_task_output(diagonal, images):
    model = _mtl_model(diagonal=diagonal)
    with torch.no_grad():
        ref = model(images)
        for task in model.tasks:
            merged = merge_per_task(model, task)
            out = merged(images)
            assert list(out) == [task] and merged.tasks == (task,) and list(merged.decoders) == [task]
            assert _relative_error(ref[task], out[task]) <= 1e-5, task
            assert _no_adapters_left(merged) and is_merged(merged)
    assert not is_merged(model), "merging must not modify its input"


def test_per_task_merged_layers_are_plain_linears_holding_w_t():
    model = _mtl_model(tasks=("semseg", "sal"))
    merged = merge_per_task(model, "sal")
    for stage, source_stage in zip(merged.backbone.layers, model.backbone.layers, strict=True):
        for block, source in zip(stage.blocks, source_stage.blocks, strict=True):
            for path in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
                layer, adapter = block.get_submodule(path), source.get_submodule(path)
                assert type(layer) is nn.Linear
                expected = adapter.base_layer.weight + adapter.get_delta_weight("sal")
                torch.testing.assert_close(layer.weight, expected, rtol=0, atol=1e-6)
        if hasattr(stage.downsample, "reduction"):
            assert type(stage.downsample.reduction) is nn.Linear
    assert not merged.backbone.task_conditioned and not any(p.requires_grad for p in merged.parameters())


def test_task_agnostic_merge_of_mtl_lora_refuses_and_says_how(images):
    model = _mtl_model(tasks=("semseg", "sal"))
    assert not is_merged(model)
    with pytest.raises(ConfigError, match=r"task-conditioned \(2 tasks\).*merge_per_task.*one ONNX graph per task"):
        merge_task_agnostic(model)
    single = _mtl_model(tasks=("normals",))
    merged = merge_task_agnostic(single)  # one task: its per-task merge is THE merge
    with torch.no_grad():
        assert _relative_error(single(images)["normals"], merged(images)["normals"]) <= 1e-5
    assert is_merged(merged)


def test_per_task_merge_errors_are_one_line():
    model = _mtl_model(tasks=("semseg", "sal"))
    with pytest.raises(ConfigError, match="task 'edge' is not one of semseg, sal"):
        merge_per_task(model, "edge")
    with pytest.raises(ConfigError, match="expected an unmerged mtl-lora MultiTaskModel.*adapter mtlora"):
        merge_per_task(tiny_model("mtlora-r16"), "semseg")
    with pytest.raises(ConfigError, match="expected an unmerged mtl-lora"):
        merge_per_task(merge_per_task(model, "sal"), "sal")


def test_non_finite_mtl_weight_names_the_layer_and_tensor():
    model = _mtl_model(tasks=("semseg", "sal"))
    layer = "backbone.layers.1.blocks.0.mlp.fc1"
    with torch.no_grad():
        model.get_parameter(f"{layer}.lora_lambdas").view(-1)[0] = float("inf")
    with pytest.raises(WeightsError, match=rf"^{layer}\.lora_lambdas: 1 non-finite value"):
        merge_per_task(model, "semseg")


def test_per_task_merged_checkpoint_round_trip(tmp_path, images):
    model = _mtl_model(tasks=("semseg", "human_parts"))
    merged = merge_per_task(model, "human_parts")
    save_checkpoint(merged, tmp_path / "merged" / "model", kind="merged")
    loaded = mtlora_deploy.load(tmp_path / "merged")
    assert is_merged(loaded) and loaded.tasks == ("human_parts",) and loaded.config.adapter == "mtl-lora"
    assert count_parameters(loaded).total_params == count_parameters(merged).total_params
    with torch.no_grad():
        assert _relative_error(model(images)["human_parts"], loaded(images)["human_parts"]) <= 1e-5
    with pytest.raises(ConfigError, match="expected adapter mtl-lora with exactly one task"):
        build_merged(model.config)


def test_per_task_models_run_every_task_one_after_another(images):
    model = _mtl_model(tasks=("semseg", "sal", "normals"), reductions=False)
    deployed = PerTaskModels.from_model(model)
    assert deployed.tasks == model.tasks and is_merged(deployed)
    with torch.no_grad():
        ref, out = model(images), deployed(images)
        assert list(deployed(images, tasks=("sal",))) == ["sal"]
    assert all(_relative_error(ref[t], out[t]) <= 1e-5 for t in model.tasks)
    # T whole merged encoders: params.py's deployed count adds T - 1 copies of the ADAPTED weights only; the
    # per-task models also repeat everything else of the encoder (embedding, norms, biases, rel-pos, reductions)
    one = merge_per_task(model, "sal")
    adapted = sum(m.base_layer.weight.numel() for m in model.modules() if isinstance(m, MTLLoRABranch))
    encoder_rest = count_parameters(one.backbone).total_params - adapted
    extra = count_parameters(deployed).total_params - count_parameters(model).deployed_params
    assert extra == (len(model.tasks) - 1) * encoder_rest


# ---- mtlora-mtl: task-agnostic merge with MTL-LoRA task branches ---------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True], ids=["full-lambda", "diagonal-lambda"])
def test_hybrid_merge_equals_the_unmerged_single_pass(diagonal, images):
    model = _hybrid_model(diagonal=diagonal)
    merged = merge_task_agnostic(model)
    with torch.no_grad():
        ref, out = model(images), merged(images)
    assert max(_relative_error(ref[t], out[t]) for t in model.tasks) <= 1e-5
    assert _no_adapters_left(merged) and is_merged(merged) and not is_merged(model)
    assert count_parameters(merged).total_params == count_parameters(model).deployed_params


def test_hybrid_shared_path_folds_and_stage_ends_become_task_branch_linears():
    model = _hybrid_model(tasks=("semseg", "sal", "edge"))
    merged = merge_task_agnostic(model)
    for stage in merged.backbone.layers:
        blocks = list(stage.blocks)
        for block in blocks[:-1]:
            assert all(
                type(block.get_submodule(p)) is nn.Linear for p in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
            )
        last = blocks[-1]
        assert type(last.attn.qkv) is nn.Linear
        for path in ("attn.proj", "mlp.fc1", "mlp.fc2"):
            layer = last.get_submodule(path)
            assert isinstance(layer, TaskBranchLinear) and layer.shared_task_down
            assert tuple(layer.lora_A.shape) == (layer.rank + layer.task_rank, layer.in_features)  # one shared A
            assert layer.rank == model.config.task_agnostic_rank and layer.task_rank == model.config.mtl_rank


@pytest.mark.parametrize("with_task_streams", [False, True])
def test_task_branch_linear_from_the_hybrid_layer_keeps_its_streams(with_task_streams):
    torch.manual_seed(0)
    tasks = ("semseg", "sal", "edge")
    adapter = MTLoRAMTLLinear(nn.Linear(24, 40), tasks, shared_rank=6, rank=3, num_b=2, alpha=12.0, dropout=0.0)
    _randomize_mtl(adapter, std=0.1)
    merged = adapter.to_deployed()
    x = torch.randn(5, 7, 24)
    x_tasks = torch.randn(len(tasks), 5, 7, 24) if with_task_streams else None
    with torch.no_grad():
        ref_shared, ref_tasks = adapter.forward_streams(x, x_tasks)
        shared, outs = merged.forward_streams(x, x_tasks)
        for index, task in enumerate(tasks):  # the compact form equals the (Lambda_t A, B_t) pair the layer reports
            down, up, scale = adapter.task_low_rank_pair(task)
            x_t = x if x_tasks is None else x_tasks[index]
            direct = adapter.base_layer(x) + scale * x_t @ down.T @ up.T
            torch.testing.assert_close(outs[index], direct, rtol=0, atol=1e-5)
            torch.testing.assert_close(outs[index], ref_tasks[index], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared, ref_shared, rtol=0, atol=1e-5)


def test_hybrid_merged_checkpoint_round_trip(tmp_path, images):
    model = _hybrid_model(tasks=("semseg", "normals"))
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "best")
    report = merge_checkpoint(tmp_path / "run", tmp_path / "merged")
    assert report.params_after == count_parameters(model).deployed_params < report.params_before
    assert json.loads((tmp_path / "merged" / "model.json").read_text())["kind"] == "merged"
    loaded = mtlora_deploy.load(tmp_path / "merged")
    assert sum(isinstance(m, TaskBranchLinear) and m.shared_task_down for m in loaded.modules()) == 12
    with torch.no_grad():
        ref, out = model(images), loaded(images)
    assert max(_relative_error(ref[t], out[t]) for t in model.tasks) <= 1e-5


def test_merge_checkpoint_of_an_mtl_lora_run_is_a_one_line_error(tmp_path):
    save_checkpoint(_mtl_model(tasks=("semseg", "sal")), tmp_path / "run" / "checkpoints" / "best")
    with pytest.raises(ConfigError, match="task-conditioned") as info:
        merge_checkpoint(tmp_path / "run", tmp_path / "merged")
    assert "\n" not in str(info.value) and not (tmp_path / "merged").exists()
