"""The stage-final Swin block with one shared stream and one stream per task (model.md, TS-LoRA).

Attention runs once on the shared stream; ``proj``, ``fc1`` and ``fc2`` compute their full-rank product once
and add per-task low-rank terms. The shared and task streams travel stacked as one (1 + T, B, ...) tensor, so
the task streams cost batched rank-r_t products and no per-task calls: one window reverse, LayerNorm, GELU and
residual add for all streams.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition
from torch import nn


def window_attention_core(attn: nn.Module, x_windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """timm ``WindowAttention.forward`` up to (not including) ``proj``: (nW*B, N, C) -> (nW*B, N, C)."""
    num_windows_batch, tokens, _ = x_windows.shape
    qkv = attn.qkv(x_windows).reshape(num_windows_batch, tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = attn._get_rel_pos_bias()
    if mask is not None:
        num_win = mask.shape[0]
        mask = mask.view(1, num_win, 1, tokens, tokens).expand(num_windows_batch // num_win, -1, attn.num_heads, -1, -1)
        bias = bias + mask.reshape(-1, attn.num_heads, tokens, tokens)
    dropout_p = attn.attn_drop.p if attn.training else 0.0
    out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
    return out.transpose(1, 2).reshape(num_windows_batch, tokens, -1)


def window_order(block: SwinTransformerBlock, height: int, width: int) -> torch.Tensor:
    """For each token of the (H, W) map in raster order, its position among the block's windows: long (H, W).

    The inverse of ``_to_windows`` (roll by ``-shift_size``, pad, window partition) as one index, so that
    ``windows[order]`` is window reverse, crop and roll in a single gather instead of three copies (the roll alone
    is two ``cat``s on CPU), which matters when 1 + T streams go through it.
    """
    (win_h, win_w), (shift_h, shift_w) = block.window_size, block.shift_size
    padded_w = width + (win_w - width % win_w) % win_w
    rows = (torch.arange(height) - shift_h) % height
    cols = (torch.arange(width) - shift_w) % width
    window = (rows // win_h)[:, None] * (padded_w // win_w) + (cols // win_w)[None, :]
    return window * (win_h * win_w) + (rows % win_h)[:, None] * win_w + (cols % win_w)[None, :]


def attach_window_order(block: SwinTransformerBlock) -> None:
    """Store ``window_order`` at the block's input resolution, and its inverse, as non-persistent buffers."""
    order = window_order(block, *block.input_resolution)
    block.register_buffer("stream_window_order", order, persistent=False)
    block.register_buffer("stream_window_source", torch.argsort(order.flatten()), persistent=False)


def _window_indices(block: SwinTransformerBlock, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order (H*W,), its inverse (H*W,)): the stored buffers at their resolution, else computed."""
    order = getattr(block, "stream_window_order", None)
    if order is not None and tuple(order.shape) == (height, width):
        return order.flatten(), block.stream_window_source
    order = window_order(block, height, width).flatten()
    return order, torch.argsort(order)


def _to_windows(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor:
    """Shift and partition (B, H, W, C) into (nW*B, N, C) exactly as timm's ``_attn`` does.

    Without padding this is one gather (the inverse permutation of ``window_order``).
    """
    _, height, width, channels = x.shape
    pad_h = (block.window_size[0] - height % block.window_size[0]) % block.window_size[0]
    pad_w = (block.window_size[1] - width % block.window_size[1]) % block.window_size[1]
    if pad_h == pad_w == 0:
        source = _window_indices(block, height, width)[1].to(x.device)
        return x.reshape(-1, height * width, channels).index_select(1, source).view(-1, block.window_area, channels)
    if any(block.shift_size):
        x = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
    x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return window_partition(x, block.window_size).view(-1, block.window_area, channels)


def _from_windows(block: SwinTransformerBlock, windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of ``_to_windows`` for any stacked batch: (nW*B', N, C) -> (B', H*W, C), one gather."""
    channels = windows.shape[-1]
    padded_h = height + (block.window_size[0] - height % block.window_size[0]) % block.window_size[0]
    padded_w = width + (block.window_size[1] - width % block.window_size[1]) % block.window_size[1]
    order = _window_indices(block, height, width)[0].to(windows.device)
    return windows.reshape(-1, padded_h * padded_w, channels).index_select(1, order)


def _attention_mask(block: SwinTransformerBlock, x: torch.Tensor) -> torch.Tensor | None:
    return block.get_attn_mask(x) if getattr(block, "dynamic_mask", False) else block.attn_mask


def multistream_block_forward(
    block: SwinTransformerBlock, x: torch.Tensor, tasks: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``multistream_block_streams`` split into the shared output (B, H, W, C) and the task outputs (T, B, H, W, C)."""
    streams = multistream_block_streams(block, x, tasks)
    return streams[0], streams[1:]


def multistream_block_streams(block: SwinTransformerBlock, x: torch.Tensor, tasks: tuple[str, ...]) -> torch.Tensor:
    """Run a stage-final block whose proj/fc1/fc2 are task-aware adapters, every stream stacked.

    The shared stream and the T task streams travel as one (1 + T, B, ...) tensor: window reverse, roll,
    residuals, norm2, GELU and drop path run once over all of them, the task branches as batched products.

    Args:
        block: timm block with ``attn.proj``, ``mlp.fc1``, ``mlp.fc2`` exposing ``forward_stacked``.
        x: shared stream (B, H, W, C).
        tasks: task order of the returned streams (the adapters' own order).

    Returns:
        Every stream stacked (1 + T, B, H, W, C): the shared output first, then the tasks in ``tasks`` order.
    """
    _, height, width, channels = x.shape
    streams = len(tasks) + 1
    o = window_attention_core(block.attn, _to_windows(block, block.norm1(x)), _attention_mask(block, x))
    stacked = block.attn.proj_drop(block.attn.proj.forward_stacked(o).flatten(0, 1))
    stacked = _from_windows(block, stacked, height, width).unflatten(0, (streams, -1))
    residual = x.reshape(1, -1, height * width, channels)
    a_all = residual + _drop_path(block.drop_path1, stacked)
    m_all = _mlp_streams(block, a_all)
    out_all = a_all + _drop_path(block.drop_path2, m_all)
    return out_all.view(streams, -1, height, width, channels)


def _drop_path(drop: nn.Module, stacked: torch.Tensor) -> torch.Tensor:
    """Drop path over (S, B, ...): one (S*B, 1, 1) mask, i.e. an independent draw per stream and sample."""
    return drop(stacked.flatten(0, 1)).view_as(stacked)


def _mlp_streams(block: SwinTransformerBlock, a_all: torch.Tensor) -> torch.Tensor:
    """timm ``Mlp`` on every stream (1 + T, ...): the frozen fc1/fc2 see the shared stream, the task LoRA its own."""
    mlp = block.mlp
    n_all = block.norm2(a_all)
    g_all = mlp.norm(mlp.drop1(mlp.act(mlp.fc1.forward_stacked(n_all[0], n_all[1:]))))
    return mlp.drop2(mlp.fc2.forward_stacked(g_all[0], g_all[1:]))
