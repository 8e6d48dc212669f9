"""The stage-final block's window gathers are timm's roll + partition / reverse + roll, exactly."""

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

from mtlora_deploy.model.multistream import _from_windows, _to_windows, attach_window_order
from tests.conftest import randomize_lora, tiny_model


def _block(shift: int, resolution: tuple[int, int] = (14, 21)) -> SwinTransformerBlock:
    return SwinTransformerBlock(dim=8, input_resolution=resolution, num_heads=2, window_size=7, shift_size=shift)


def _timm_to_windows(block, x):
    if any(block.shift_size):
        x = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
    pad_h = (7 - x.shape[1] % 7) % 7
    pad_w = (7 - x.shape[2] % 7) % 7
    x = torch.nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return window_partition(x, block.window_size).view(-1, block.window_area, x.shape[-1])


def _timm_from_windows(block, windows, height, width):
    padded_h, padded_w = height + (7 - height % 7) % 7, width + (7 - width % 7) % 7
    windows = windows.view(-1, 7, 7, windows.shape[-1])
    x = window_reverse(windows, block.window_size, padded_h, padded_w)[:, :height, :width, :]
    return torch.roll(x, shifts=block.shift_size, dims=(1, 2)) if any(block.shift_size) else x


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("attached", [True, False])
def test_gathers_equal_roll_partition_and_reverse(shift, attached):
    block = _block(shift)
    if attached:
        attach_window_order(block)
    x = torch.randn(3, 14, 21, 8)
    windows = _to_windows(block, x)
    torch.testing.assert_close(windows, _timm_to_windows(block, x), rtol=0, atol=0)
    stacked = torch.randn_like(windows.repeat(2, 1, 1))  # e.g. 1 + T streams of a batch of 3
    back = _from_windows(block, stacked, 14, 21).view(6, 14, 21, 8)
    torch.testing.assert_close(back, _timm_from_windows(block, stacked, 14, 21), rtol=0, atol=0)
    torch.testing.assert_close(_from_windows(block, windows, 14, 21).view_as(x), x, rtol=0, atol=0)


def test_gathers_with_padding_and_another_resolution_than_stored():
    block = _block(3)
    attach_window_order(block)  # stored at 14 x 21; the call below is 10 x 12 (padded to 14 x 14)
    x = torch.randn(2, 10, 12, 8)
    windows = _to_windows(block, x)
    torch.testing.assert_close(windows, _timm_to_windows(block, x), rtol=0, atol=0)
    back = _from_windows(block, windows, 10, 12).view_as(x)
    torch.testing.assert_close(back, _timm_from_windows(block, windows, 10, 12), rtol=0, atol=0)
    torch.testing.assert_close(back, x, rtol=0, atol=0)


def test_window_order_buffers_are_not_checkpoint_state():
    model = tiny_model("mtlora-r16")
    blocks = [stage.blocks[-1] for stage in model.backbone.layers]
    assert all(hasattr(b, "stream_window_order") for b in blocks)
    assert not any("stream_window" in key for key in model.state_dict())


def _plain_task_mlp(u, low1, up1, down2):
    hidden = torch.baddbmm(u.unsqueeze(0), low1, up1.transpose(1, 2))
    return torch.bmm(torch.nn.functional.gelu(hidden), down2.transpose(1, 2))


@pytest.mark.parametrize("needs", ["all", "low1", "weights"])
def test_fused_task_stream_mlp_equals_autograd_of_the_plain_ops(monkeypatch, needs):
    """Chunked forward and a backward that recomputes the hidden layer: the values and gradients of plain autograd."""
    from mtlora_deploy.model import multistream

    generator = torch.Generator().manual_seed(0)
    tasks, rows, hidden = 3, 50, 12
    tensors = [
        torch.randn(rows, hidden, generator=generator, dtype=torch.float64),
        torch.randn(tasks, rows, 4, generator=generator, dtype=torch.float64),
        torch.randn(tasks, hidden, 4, generator=generator, dtype=torch.float64),
        torch.randn(tasks, 2, hidden, generator=generator, dtype=torch.float64),
    ]
    wanted = {"all": (0, 1, 2, 3), "low1": (1,), "weights": (2, 3)}[needs]
    for index in wanted:
        tensors[index].requires_grad_(True)
    grad_out = torch.randn(tasks, rows, 2, generator=generator, dtype=torch.float64)
    monkeypatch.setattr(multistream, "TASK_MLP_CHUNK_ELEMENTS", 16 * tasks * hidden)  # 16 rows a chunk: 4 chunks
    fused = multistream.task_stream_mlp(*tensors)
    fused_grads = torch.autograd.grad(fused, [tensors[i] for i in wanted], grad_out)
    plain = _plain_task_mlp(*tensors)
    plain_grads = torch.autograd.grad(plain, [tensors[i] for i in wanted], grad_out)
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    for got, expected in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("preset", ["mtlora-r16", "mtlora-mtl"])
def test_training_block_with_the_fused_task_mlp_equals_the_plain_block(monkeypatch, preset):
    """Training mode (LoRA dropout, drop path): same outputs and LoRA gradients as the unfused stage-final MLP."""
    from mtlora_deploy.model import multistream

    model = tiny_model(preset, tasks=("semseg", "sal", "normals"), drop_path_rate=0.3).train()
    randomize_lora(model, std=0.2)
    block = model.backbone.layers[0].blocks[-1]
    x = torch.randn(2, *block.input_resolution, block.dim)
    trainable = [p for n, p in block.named_parameters() if "lora_" in n]
    monkeypatch.setattr(multistream, "TASK_MLP_CHUNK_ELEMENTS", 16 * 3 * block.mlp.fc1.out_features)

    def run():
        torch.manual_seed(5)  # the same dropout masks and drop-path draws for both paths
        shared, tasks = multistream.multistream_block_forward(block, x, model.tasks)
        loss = (shared * 1.3).sum() + (tasks * torch.arange(1.0, 4.0).view(3, 1, 1, 1, 1)).sum()
        return shared, tasks, torch.autograd.grad(loss, trainable)

    assert multistream._fusable(block.mlp)
    fused = run()
    monkeypatch.setattr(multistream, "_fusable", lambda mlp: False)
    plain = run()
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-5, atol=1e-6)
    for got, expected in zip(fused[2], plain[2], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert any(g.abs().max() > 0 for g in fused[2])


def test_stage_final_block_trains_under_cpu_autocast():
    """bf16 autocast takes the one-piece task MLP (the chunked backward runs outside autocast): grads flow."""
    model = tiny_model("mtlora-r16", tasks=("semseg", "sal")).train()
    randomize_lora(model, std=0.2)
    block = model.backbone.layers[0].blocks[-1]
    x = torch.randn(2, *block.input_resolution, block.dim)
    from mtlora_deploy.model.multistream import multistream_block_forward

    with torch.autocast("cpu", dtype=torch.bfloat16):
        shared, tasks = multistream_block_forward(block, x, model.tasks)
        loss = shared.float().sum() + tasks.float().sum()
    loss.backward()
    grads = [p.grad for n, p in block.named_parameters() if "lora_tasks" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
