"""The merged model equals the unmerged one (docs/deploy.md, "Merge"), keeps task pairs low-rank, loads as 'merged'."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import mtlora_deploy
from mtlora_deploy.deploy.merge import is_merged, merge_checkpoint, merge_task_agnostic
from mtlora_deploy.errors import WeightsError
from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.checkpoint import save_checkpoint
from mtlora_deploy.model.config import ALL_TASKS
from mtlora_deploy.model.decoders import TaskBatchedHeads
from mtlora_deploy.model.deployed import TaskBranchLinear
from mtlora_deploy.model.params import count_parameters
from tests.conftest import randomize_lora, tiny_model

SUBSETS = [("semseg",), ("sal", "normals"), ALL_TASKS]
CASES = [(p, t) for p in ("mtlora-r16", "mtlora-plus-r16", "lora") for t in SUBSETS]
CASES += [(p, t) for p in ("full", "decoders", "bitfit") for t in (("edge",), ALL_TASKS)]


def _relative_error(ref: dict, out: dict) -> float:
    return max(((ref[t] - out[t]).abs().max() / ref[t].abs().max()).item() for t in ref)


def _random_model(preset: str, tasks: tuple[str, ...]):
    model = tiny_model(preset, tasks=tasks).eval()
    randomize_lora(model)
    return model


@pytest.mark.parametrize(("preset", "tasks"), CASES, ids=[f"{p}-{len(t)}tasks-{t[0]}" for p, t in CASES])
def test_merged_model_equals_unmerged(preset, tasks, images):
    model = _random_model(preset, tasks)
    merged = merge_task_agnostic(model)
    with torch.no_grad():
        ref, out = model(images), merged(images)
    assert set(out) == set(tasks)
    assert _relative_error(ref, out) <= 1e-5
    assert count_parameters(merged).total_params == count_parameters(model).deployed_params
    assert is_merged(merged) and not any(isinstance(m, MTLoRALinear) for m in merged.modules())
    if preset.startswith(("mtlora", "lora")):
        assert not is_merged(model), "merging must not modify its input"


def test_shared_path_is_plain_linear_and_stage_ends_keep_low_rank_task_pairs():
    model = _random_model("mtlora-plus-r16", ALL_TASKS)
    merged = merge_task_agnostic(model)
    branches = {n: m for n, m in merged.named_modules() if isinstance(m, TaskBranchLinear)}
    stages = len(merged.backbone.layers)
    assert len(branches) == 3 * stages
    assert all(n.split(".blocks.")[1].split(".")[1] in ("attn", "mlp") for n in branches)
    for stage in merged.backbone.layers:
        for block in list(stage.blocks)[:-1]:
            assert all(
                type(layer) is nn.Linear for layer in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2)
            )
        assert type(stage.blocks[-1].attn.qkv) is nn.Linear
        if hasattr(stage.downsample, "reduction"):
            assert type(stage.downsample.reduction) is nn.Linear
    for branch in branches.values():
        assert tuple(branch.lora_tasks_B.shape) == (len(ALL_TASKS), branch.out_features, branch.task_rank)
        assert tuple(branch.lora_A.shape) == (branch.rank + len(ALL_TASKS) * branch.task_rank, branch.in_features)


@pytest.mark.parametrize("with_task_streams", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_task_branch_linear_streams_equal_the_adapter(with_task_streams, bias):
    torch.manual_seed(0)
    adapter = MTLoRALinear(
        nn.Linear(24, 40, bias=bias), rank=8, tasks=("semseg", "sal", "edge"), task_rank=4, task_scale=2.0
    ).eval()
    for p in [adapter.lora_shared_B, *adapter.lora_tasks_B.values()]:
        nn.init.normal_(p, std=0.1)
    merged = adapter.to_deployed()
    x = torch.randn(5, 7, 24)
    x_tasks = torch.randn(3, 5, 7, 24) if with_task_streams else None
    with torch.no_grad():
        ref_shared, ref_tasks = adapter.forward_streams(x, x_tasks)
        shared, tasks = merged.forward_streams(x, x_tasks)
        torch.testing.assert_close(merged(x), ref_shared, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared, ref_shared, rtol=0, atol=1e-5)
    assert tasks.shape == (3, 5, 7, 40)
    for index, task in enumerate(adapter.tasks):  # each task's stream against docs/deploy.md, "Merge"
        x_t = x if x_tasks is None else x_tasks[index]
        low_rank = x_t @ adapter.lora_tasks_A[task].T @ adapter.lora_tasks_B[task].T
        direct = adapter.base_layer(x) + adapter.task_scale * low_rank
        torch.testing.assert_close(tasks[index], direct, rtol=0, atol=1e-5)
        torch.testing.assert_close(tasks[index], ref_tasks[index], rtol=0, atol=1e-5)


def test_merge_is_idempotent(images):
    merged = merge_task_agnostic(_random_model("mtlora-r16", ("semseg", "sal")))
    again = merge_task_agnostic(merged)
    with torch.no_grad():
        assert _relative_error(merged(images), again(images)) == 0


@pytest.mark.parametrize("tensor", ["lora_shared_B", "lora_shared_A", "lora_tasks_B.sal"])
def test_non_finite_lora_weight_names_the_layer(tensor):
    model = _random_model("mtlora-r16", ("semseg", "sal"))
    layer = "backbone.layers.0.blocks.0.mlp.fc2"
    with torch.no_grad():
        model.get_parameter(f"{layer}.{tensor}").view(-1)[3] = float("nan")
    with pytest.raises(WeightsError, match=rf"^{layer}\.{tensor}: 1 non-finite value"):
        merge_task_agnostic(model)


def test_merged_checkpoint_round_trip(tmp_path, images):
    model = _random_model("mtlora-r16", ("semseg", "human_parts", "normals"))
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "best")
    report = merge_checkpoint(tmp_path / "run", tmp_path / "merged")
    assert report.params_after == count_parameters(model).deployed_params < report.params_before
    info = json.loads((tmp_path / "merged" / "model.json").read_text())
    assert info["kind"] == "merged" and info["metadata"]["params_after"] == report.params_after
    assert info["metadata"]["source"] == str(tmp_path / "run")
    loaded = mtlora_deploy.load(tmp_path / "merged")
    assert is_merged(loaded) and not loaded.training
    assert sum(isinstance(m, TaskBranchLinear) for m in loaded.modules()) == 12
    with torch.no_grad():
        assert _relative_error(model(images), loaded(images)) <= 1e-5
    merge_checkpoint(tmp_path / "run", tmp_path / "merged")  # overwriting an existing folder works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "run"]


def test_merge_of_a_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        merge_checkpoint(tmp_path / "nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_task_batched_heads_decode_task_subsets_like_the_unmerged_model(images):
    model = _random_model("mtlora-r16", ("semseg", "human_parts", "sal", "normals"))
    merged = merge_task_agnostic(model)
    assert isinstance(merged.decoders, TaskBatchedHeads)
    for subset in (("sal",), ("normals", "semseg")):
        with torch.no_grad():
            ref, out = model(images, subset), merged(images, subset)
        assert list(out) == list(subset)
        assert all(out[t].shape == ref[t].shape for t in subset)
        assert _relative_error(ref, out) <= 1e-5


def test_task_batched_heads_with_shared_features_equal_the_heads(images):
    model = _random_model("lora", ("semseg", "edge"))  # one shared stream: reducers run as one product
    merged = merge_task_agnostic(model)
    with torch.no_grad():
        assert _relative_error(model(images), merged(images)) <= 1e-5


def test_model_layer_does_not_import_deploy(tmp_path):
    """``model`` loads its own checkpoints (the builder registers the multitask kind) without importing ``deploy``."""
    save_checkpoint(tiny_model("mtlora-r16"), tmp_path / "ckpt")
    code = (
        "import sys; from mtlora_deploy.model.checkpoint import load_checkpoint; import mtlora_deploy.model.per_task;"
        f"model = load_checkpoint({str(tmp_path / 'ckpt')!r});"
        "deploy = [m for m in sys.modules if m.startswith('mtlora_deploy.deploy')];"
        "sys.exit(type(model).__name__ != 'MultiTaskModel' or bool(deploy))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_task_batched_heads_in_pixel_chunks_equal_one_piece_and_the_heads(monkeypatch, images):
    """Eager CPU inference runs the folded fuse + BatchNorm + ReLU + classifiers in pixel chunks: same logits."""
    from mtlora_deploy.model import decoders

    model = _random_model("mtlora-r16", ("semseg", "human_parts", "sal", "normals"))
    with torch.no_grad():  # BatchNorm statistics away from (0, 1), so that folding it is really exercised
        for head in model.decoders.values():
            head.last_layer[1].running_mean.uniform_(-0.5, 0.5)
            head.last_layer[1].running_var.uniform_(0.5, 2.0)
            head.last_layer[1].weight.uniform_(0.5, 1.5)
    merged = merge_task_agnostic(model)
    calls = []
    original = TaskBatchedHeads._fuse_classify_rows
    monkeypatch.setattr(TaskBatchedHeads, "_fuse_classify_rows", lambda *a: calls.append(1) or original(*a))
    with torch.no_grad():
        ref = model(images)
        monkeypatch.setattr(decoders, "FUSE_CHUNK_ELEMENTS", 1 << 30)
        whole = merged(images)
        assert len(calls) == 1
        monkeypatch.setattr(decoders, "FUSE_CHUNK_ELEMENTS", 16 * 4 * merged.decoders.hidden)  # 16 pixels a chunk
        chunked = merged(images)
    pixels = len(images) * (images.shape[-1] // 8) ** 2
    assert len(calls) - 1 == -(-pixels // 16) > 1
    assert _relative_error(whole, chunked) <= 1e-6
    assert _relative_error(ref, chunked) <= 1e-5
