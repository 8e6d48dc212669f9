"""The stage-final block's window gathers are timm's roll + partition / reverse + roll, exactly."""

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

from mtlora_deploy.model.multistream import _from_windows, _to_windows, attach_window_order
from tests.conftest import tiny_model


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
