"""The adapters compute docs/model.md's formulas: identity at init, and the stage-final multi-stream equations."""

import copy

import pytest
import torch
from torch import nn

from mtlora_deploy.model.adapters import MTLoRALinear
from mtlora_deploy.model.multistream import multistream_block_forward
from tests.conftest import randomize_lora, tiny_model


def _plain_copy_of(model):
    """The same weights in a model without adapters (adapter='none')."""
    plain = tiny_model("full", tasks=model.tasks)
    state = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    plain.load_state_dict(state, strict=True)
    return plain.eval()


@pytest.mark.parametrize("preset", ["mtlora-r16", "mtlora-plus-r16", "lora"])
def test_zero_b_gives_exactly_the_base_model(preset, images):
    model = tiny_model(preset).eval()
    plain = _plain_copy_of(model)
    with torch.no_grad():
        out, ref = model(images), plain(images)
    for task in model.tasks:
        torch.testing.assert_close(out[task], ref[task], rtol=0, atol=1e-5)


def test_nonzero_b_changes_every_task_differently(images):
    model = tiny_model().eval()
    randomize_lora(model)
    plain = _plain_copy_of(model)
    with torch.no_grad():
        out, ref = model(images), plain(images)
    diffs = {t: (out[t] - ref[t]).abs().max().item() for t in model.tasks}
    assert all(d > 1e-3 for d in diffs.values()), diffs


def test_adapter_init_matches_spec():
    torch.manual_seed(0)
    adapter = MTLoRALinear(nn.Linear(96, 288), rank=16, tasks=("a", "b"), task_rank=4)
    bound = 1 / 96**0.5
    assert adapter.lora_shared_A.abs().max() <= bound and adapter.lora_shared_A.abs().max() > 0.9 * bound
    assert torch.count_nonzero(adapter.lora_shared_B) == 0
    assert all(torch.count_nonzero(b) == 0 for b in adapter.lora_tasks_B.values())
    assert adapter.scale == 4.0 and adapter.task_scale == 4.0


def test_dropout_only_touches_the_lora_branch():
    torch.manual_seed(0)
    adapter = MTLoRALinear(nn.Linear(8, 8), rank=2, dropout=0.5).train()
    x = torch.randn(4, 8)
    # with B = 0 the output is the frozen path on the undropped x, whatever the dropout mask
    torch.testing.assert_close(adapter(x), adapter.base_layer(x))


def _linear(x, module, weight_delta=None):
    weight = module.base_layer.weight + (weight_delta if weight_delta is not None else 0)
    return x @ weight.T + module.base_layer.bias


def _shared(x, m):
    return _linear(x, m) + m.scale * (x @ m.lora_shared_A.T) @ m.lora_shared_B.T


def _task(x_shared, x_task, m, t):
    return _linear(x_shared, m) + m.task_scale * (x_task @ m.lora_tasks_A[t].T) @ m.lora_tasks_B[t].T


def _attention_output_before_proj(block, u):
    """timm's own attention path with the shared qkv folded and proj removed (proj is per-token linear)."""
    reference = copy.deepcopy(block)
    qkv = reference.attn.qkv
    folded = nn.Linear(qkv.in_features, qkv.out_features)
    folded.weight.data = qkv.base_layer.weight + qkv.get_delta_weight()
    folded.bias.data = qkv.base_layer.bias.clone()
    reference.attn.qkv, reference.attn.proj = folded, nn.Identity()
    reference.attn.fused_attn = False  # the textbook softmax(q k^T * scale + bias + mask) path
    return reference._attn(reference.norm1(u))


def test_stage_final_block_matches_the_spec_formulas():
    model = tiny_model("mtlora-r16", tasks=("semseg", "sal", "normals")).eval()
    randomize_lora(model, std=0.2)
    block = model.backbone.layers[2].blocks[-1]  # 2 blocks: the stage-final one is shifted
    assert any(block.shift_size)
    u = torch.randn(2, 4, 4, 96)
    with torch.no_grad():
        x, z = multistream_block_forward(block, u, model.tasks)
        o = _attention_output_before_proj(block, u)
        proj, fc1, fc2, norm2 = block.attn.proj, block.mlp.fc1, block.mlp.fc2, block.norm2
        gelu = nn.functional.gelu
        a = u + _shared(o, proj)
        h = _shared(norm2(a), fc1)
        expected_x = a + _shared(gelu(h), fc2)
        torch.testing.assert_close(x, expected_x, rtol=1e-4, atol=1e-5)
        assert z.shape == (len(model.tasks), *u.shape)  # task streams stacked in task order
        for index, t in enumerate(model.tasks):
            a_t = u + _task(o, o, proj, t)
            h_t = _task(norm2(a), norm2(a_t), fc1, t)
            m_t = _task(gelu(h), gelu(h_t), fc2, t)
            torch.testing.assert_close(z[index], a_t + m_t, rtol=1e-4, atol=1e-5)
            assert (z[index] - x).abs().max() > 1e-3  # the task stream really differs from the shared one


def test_task_streams_pass_through_the_next_stage_patch_merging(images):
    model = tiny_model("mtlora-r16", tasks=("semseg", "sal")).eval()
    randomize_lora(model, std=0.2)
    captured = {}
    stage1 = model.backbone.layers[1]
    original = stage1.downsample.forward
    stage1.downsample.forward = lambda x: captured.setdefault(len(captured), original(x))
    with torch.no_grad():
        feats = model.backbone(images)
    # stage 2's merging ran on the shared stream, then once on the 2 task streams of stage 1 stacked (2 * batch)
    batch = len(images)
    assert len(captured) == 2 and captured[0].shape[0] == batch and captured[1].shape[0] == 2 * batch
    torch.testing.assert_close(feats["semseg"][0], captured[1][:batch].permute(0, 3, 1, 2))
    torch.testing.assert_close(feats["sal"][0], captured[1][batch:].permute(0, 3, 1, 2))


def test_lora_dropout_is_drawn_on_the_shared_input_only():
    """proj: every task's branch sees the shared term's dropped-out input; fc1/fc2: task streams undropped."""
    torch.manual_seed(0)
    adapter = MTLoRALinear(nn.Linear(6, 5), rank=2, dropout=0.5, tasks=("a", "b"), task_rank=2).train()
    for p in [adapter.lora_shared_B, *adapter.lora_tasks_B.values()]:
        nn.init.normal_(p)
    x, x_tasks = torch.randn(3, 6), torch.randn(2, 3, 6)
    _, tasks = adapter.forward_streams(x, x_tasks)
    expected = adapter.base_layer(x) + adapter.task_scale * (x_tasks[0] @ adapter.lora_tasks_A["a"].T) @ (
        adapter.lora_tasks_B["a"].T
    )
    torch.testing.assert_close(tasks[0], expected)
    torch.manual_seed(1)
    shared, tasks = adapter.forward_streams(x)
    torch.manual_seed(1)
    dropped = adapter.lora_dropout(x)
    for index, t in enumerate(adapter.tasks):
        low = (dropped @ adapter.lora_tasks_A[t].T) @ adapter.lora_tasks_B[t].T
        torch.testing.assert_close(tasks[index], adapter.base_layer(x) + adapter.task_scale * low)
    shared_low = (dropped @ adapter.lora_shared_A.T) @ adapter.lora_shared_B.T
    torch.testing.assert_close(shared, adapter.base_layer(x) + adapter.scale * shared_low)
