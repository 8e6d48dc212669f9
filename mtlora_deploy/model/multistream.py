"""The stage-final Swin block with one shared stream and one stream per task (docs/model.md, "Task-specific LoRA").

Attention runs once on the shared stream; ``proj``, ``fc1`` and ``fc2`` compute their full-rank product once
and add per-task low-rank terms. The shared stream (B, ...) and the T task streams (T, B, ...) travel as two
tensors, never concatenated (a stacked (1 + T) tensor costs a copy per linear, and a Concat + Split per linear in
an exported graph), so the task streams cost batched rank-r_t products and no per-task calls: one LayerNorm,
GELU and residual add for all T task streams; the window reverse runs once, on proj's (shared) input.
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformerBlock, window_partition
from torch import nn

from mtlora_deploy.model.deployed import capturing_graph, task_batched_down


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
    is two ``cat``s on CPU).
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


# The task streams' hidden layer (T, M, 4C) is formed, used and (in backward) recomputed in row chunks of this many
# elements: full size it is 77 MB per stage-1 block at 448 and batch 1 (four such tensors are kept for backward),
# above glibc's mmap threshold, so it would be page-faulted in afresh at every use; chunks stay in cache.
TASK_MLP_CHUNK_ELEMENTS = 1 << 20


def _task_hidden(u: torch.Tensor, low1: torch.Tensor, up1: torch.Tensor) -> torch.Tensor:
    """The task streams' fc1 output before GELU: ``u + low1 @ up1^T``, (M, H), (T, M, r1), (T, H, r1) -> (T, M, H)."""
    return torch.baddbmm(u.unsqueeze(0), low1, up1.transpose(1, 2))


class _TaskStreamMLP(torch.autograd.Function):
    """``low2 = gelu(u + low1 @ up1^T) @ down2^T`` per task, in row chunks; backward recomputes the hidden layer.

    Shapes: u (M, H) the un-adapted ``W1 x_sh + b1`` shared by all tasks, low1 (T, M, r1) the task streams'
    fc1 down-projections, up1 (T, H, r1) their scaled up-projections, down2 (T, r2, H) fc2's task
    down-projections; returns (T, M, r2). Only u and low1 are kept for backward, not the (T, M, H) hidden layer.
    """

    @staticmethod
    def forward(ctx, u, low1, up1, down2, rows):
        ctx.save_for_backward(u, low1, up1, down2)
        ctx.rows = rows
        out = low1.new_empty(low1.shape[0], low1.shape[1], down2.shape[1])
        for start in range(0, u.shape[0], rows):
            chunk = slice(start, start + rows)
            hidden = _task_hidden(u[chunk], low1[:, chunk], up1)
            torch.bmm(nn.functional.gelu(hidden), down2.transpose(1, 2), out=out[:, chunk])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        u, low1, up1, down2 = ctx.saved_tensors
        need_u, need_low1, need_up1, need_down2 = ctx.needs_input_grad[:4]
        grad_u = torch.empty_like(u) if need_u else None
        grad_low1 = torch.empty_like(low1) if need_low1 else None
        grad_up1 = torch.zeros_like(up1) if need_up1 else None
        grad_down2 = torch.zeros_like(down2) if need_down2 else None
        for start in range(0, u.shape[0], ctx.rows):
            chunk = slice(start, start + ctx.rows)
            low1_c, grad_c = low1[:, chunk], grad_out[:, chunk]
            hidden = _task_hidden(u[chunk], low1_c, up1)
            if need_down2:
                grad_down2.baddbmm_(grad_c.transpose(1, 2), nn.functional.gelu(hidden))
            grad_hidden = torch.ops.aten.gelu_backward(torch.bmm(grad_c, down2), hidden)
            if need_u:
                torch.sum(grad_hidden, dim=0, out=grad_u[chunk])
            if need_low1:
                torch.bmm(grad_hidden, up1, out=grad_low1[:, chunk])
            if need_up1:
                grad_up1.baddbmm_(grad_hidden.transpose(1, 2), low1_c)
        return grad_u, grad_low1, grad_up1, grad_down2, None


def task_stream_mlp(u: torch.Tensor, low1: torch.Tensor, up1: torch.Tensor, down2: torch.Tensor) -> torch.Tensor:
    """The task streams' ``fc2_down(GELU(fc1))`` (see ``_TaskStreamMLP``): (M, H), (T, M, r1), (T, H, r1),
    (T, r2, H) -> (T, M, r2).

    Chunked (``_TaskStreamMLP``) in eager mode on CPU, where the full-size hidden layer costs page faults and cache
    misses; one piece under export, tracing or compile, on GPUs (where chunks would cost kernel launches) and under
    autocast or mixed dtypes (the recomputing backward runs outside autocast).
    """
    device = u.device.type
    mixed = len({u.dtype, low1.dtype, up1.dtype, down2.dtype}) > 1 or torch.is_autocast_enabled(device)
    if capturing_graph() or device != "cpu" or mixed:
        return torch.bmm(nn.functional.gelu(_task_hidden(u, low1, up1)), down2.transpose(1, 2))
    rows = max(16, TASK_MLP_CHUNK_ELEMENTS // (low1.shape[0] * u.shape[1]))
    return _TaskStreamMLP.apply(u, low1, up1.contiguous(), down2.contiguous(), rows)


def multistream_block_forward(
    block: SwinTransformerBlock, x: torch.Tensor, tasks: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a stage-final block whose proj/fc1/fc2 are task-aware adapters: the shared and the task streams.

    The shared stream (B, ...) and the T task streams (T, B, ...) travel as two tensors, never concatenated:
    attention and the window reverse run once on the shared stream; each later op (residuals, norm2, GELU, drop
    path) runs once per tensor, the task streams batched, and the task branches as batched low-rank products.

    Args:
        block: timm block with ``attn.proj``, ``mlp.fc1``, ``mlp.fc2`` exposing ``forward_streams``.
        x: shared stream (B, H, W, C).
        tasks: task order of the returned streams (the adapters' own order).

    Returns:
        The shared output (B, H, W, C) and the task outputs stacked in ``tasks`` order (T, B, H, W, C).
    """
    _, height, width, channels = x.shape
    count = len(tasks)
    o = window_attention_core(block.attn, _to_windows(block, block.norm1(x)), _attention_mask(block, x))
    # proj is per token, so window reverse + roll runs once on its input instead of on its 1 + T outputs
    p_shared, p_tasks = block.attn.proj.forward_streams(_from_windows(block, o, height, width))
    p_shared, p_tasks = block.attn.proj_drop(p_shared), block.attn.proj_drop(p_tasks)
    residual = x.reshape(-1, height * width, channels)
    a_shared = residual + block.drop_path1(p_shared)
    a_tasks = residual + block.drop_path1(p_tasks.flatten(0, 1)).view_as(p_tasks)  # drop path per stream and sample
    m_shared, m_tasks = _mlp_streams(block, a_shared, a_tasks)
    out_shared = a_shared + block.drop_path2(m_shared)
    out_tasks = a_tasks + block.drop_path2(m_tasks.flatten(0, 1)).view_as(m_tasks)
    return out_shared.view(-1, height, width, channels), out_tasks.view(count, -1, height, width, channels)


def _fusable(mlp: nn.Module) -> bool:
    """timm's Mlp with the exact GELU and no hidden dropout or norm: the task streams can run fused."""
    act, drop1 = mlp.act, mlp.drop1
    exact_gelu = type(act) is nn.GELU and act.approximate == "none"
    no_dropout = isinstance(drop1, nn.Identity) or (isinstance(drop1, nn.Dropout) and drop1.p == 0)
    return exact_gelu and no_dropout and isinstance(mlp.norm, nn.Identity)


def _mlp_streams(
    block: SwinTransformerBlock, a_shared: torch.Tensor, a_tasks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm ``Mlp`` on both tensors: the frozen fc1/fc2 see the shared stream, the task LoRA the task streams.

    The task streams' hidden layer is used only through fc2's rank-r_t down-projection, so it runs fused
    (``task_stream_mlp``): fc1's un-adapted product once, then per row chunk the task up-projections, GELU and
    fc2's down-projections, never holding the (T, M, 4C) hidden layer.
    """
    mlp = block.mlp
    n_shared, n_tasks = block.norm2(a_shared), block.norm2(a_tasks)
    if not _fusable(mlp):
        h_shared, h_tasks = mlp.fc1.forward_streams(n_shared, n_tasks)
        g_shared = mlp.norm(mlp.drop1(mlp.act(h_shared)))
        m_shared, m_tasks = mlp.fc2.forward_streams(g_shared, mlp.norm(mlp.drop1(mlp.act(h_tasks))))
        return mlp.drop2(m_shared), mlp.drop2(m_tasks)
    fc1, fc2, count, channels = mlp.fc1, mlp.fc2, n_tasks.shape[0], n_shared.shape[-1]
    down1, up1 = fc1.task_pairs()
    down2, up2 = fc2.task_pairs()
    h_shared, u1 = fc1.shared_and_base(n_shared.reshape(-1, channels))
    low1 = task_batched_down(n_tasks, down1.expand(count, -1, -1))
    low2 = task_stream_mlp(u1, low1, up1, down2.expand(count, -1, -1))
    m_shared, u2 = fc2.shared_and_base(mlp.act(h_shared))
    m_tasks = torch.baddbmm(u2.unsqueeze(0), low2, up2.transpose(1, 2))
    return mlp.drop2(m_shared.view_as(a_shared)), mlp.drop2(m_tasks.view_as(a_tasks))
