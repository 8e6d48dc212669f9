"""Per-task HRNet-style decoders (the MTLoRA reference heads)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mtlora_deploy.model.deployed import capturing_graph

# eager CPU inference runs the task-batched fuse in pixel chunks of this many hidden elements (see _fuse_classify)
FUSE_CHUNK_ELEMENTS = 1 << 20


class HRNetHead(nn.Module):
    """Reduce four scales with bias-free 1x1 convs, upsample to the finest, concat, conv-BN-ReLU-conv.

    Swin-T widths: 192->18, 384->36, 768->72, 768->144; 270 -> 1080 -> n_out at 1/8 of the input.
    """

    def __init__(self, in_channels: list[int], widths: tuple[int, ...], hidden: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False) for c, w in zip(in_channels, widths, strict=True))
        concat = sum(widths)
        self.last_layer = nn.Sequential(
            nn.Conv2d(concat, hidden, 1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Four NCHW maps -> logits at the resolution of the first."""
        reduced = [conv(f) for conv, f in zip(self.reduce, feats, strict=True)]
        size = reduced[0].shape[-2:]
        upsampled = [reduced[0]] + [
            nn.functional.interpolate(r, size=size, mode="bilinear", align_corners=False) for r in reduced[1:]
        ]
        return self.last_layer(torch.cat(upsampled, dim=1))


class TaskBatchedHeads(nn.Module):
    """The T ``HRNetHead``s of a deployed model as task-batched ops (the merged model's ``decoders``).

    Same numbers as running the heads one by one: the 1x1 reducers are one batched product per scale (over
    task-stacked NHWC features, or one product with the T weights row-stacked when the features are shared), the
    upsampling one call per scale for all tasks, the T 270 -> 1080 convs (stored as one grouped conv, groups = T,
    and one BatchNorm over T * 1080 channels) one batched product over pixel-major features with the BatchNorm
    folded in, and the final bilinear upsampling one call over the tasks' stacked logits. Only the last
    1080 -> n_out convs stay per task (their widths differ). Eval only: BatchNorm uses its running statistics.
    Parameter count equals the T heads'.
    """

    def __init__(
        self,
        tasks: tuple[str, ...],
        in_channels: list[int],
        widths: tuple[int, ...],
        hidden: int,
        out_channels: tuple[int, ...],
    ) -> None:
        super().__init__()
        count, concat = len(tasks), sum(widths)
        self.tasks, self.widths, self.hidden = tuple(tasks), tuple(widths), hidden
        self.out_channels = tuple(out_channels)
        self.reduce = nn.ParameterList(
            nn.Parameter(torch.zeros(count, w, c)) for c, w in zip(in_channels, widths, strict=False)
        )
        self.fuse = nn.Conv2d(count * concat, count * hidden, 1, groups=count)
        self.norm = nn.BatchNorm2d(count * hidden)
        self.classifier_weight = nn.Parameter(torch.zeros(sum(out_channels), hidden))
        self.classifier_bias = nn.Parameter(torch.zeros(sum(out_channels)))

    @classmethod
    @torch.no_grad()
    def from_heads(cls, heads: nn.ModuleDict) -> TaskBatchedHeads:
        """Stack the tensors of ``{task: HRNetHead}`` (equal widths) into one module, in the dict's order."""
        first = next(iter(heads.values()))
        fuse, norm, last = first.last_layer[0], first.last_layer[1], first.last_layer[3]
        module = cls(
            tuple(heads),
            [conv.in_channels for conv in first.reduce],
            tuple(c.out_channels for c in first.reduce),
            fuse.out_channels,
            tuple(h.last_layer[3].out_channels for h in heads.values()),
        ).to(device=last.weight.device, dtype=last.weight.dtype)
        for index, reduce in enumerate(module.reduce):
            reduce.copy_(torch.stack([h.reduce[index].weight[:, :, 0, 0] for h in heads.values()]))
        module.fuse.weight.copy_(torch.cat([h.last_layer[0].weight for h in heads.values()]))
        module.fuse.bias.copy_(torch.cat([h.last_layer[0].bias for h in heads.values()]))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(module.norm, name).copy_(torch.cat([getattr(h.last_layer[1], name) for h in heads.values()]))
        module.norm.eps, module.norm.num_batches_tracked.data = norm.eps, norm.num_batches_tracked.clone()
        module.classifier_weight.copy_(torch.cat([h.last_layer[3].weight[:, :, 0, 0] for h in heads.values()]))
        module.classifier_bias.copy_(torch.cat([h.last_layer[3].bias for h in heads.values()]))
        return module.eval().requires_grad_(False)

    def forward(
        self, feats: list[torch.Tensor], size: tuple[int, int], tasks: tuple[str, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        """Four NHWC maps -> ``{task: logits (B, n_out, *size)}``.

        Args:
            feats: ``MultiTaskSwin.stream_features`` output: each map shared (B, h, w, C) or stacked per task in
                ``self.tasks`` order (T, B, h, w, C).
            size: the output (input image) size.
            tasks: the tasks to decode (default all); a subset runs only their slices of every batched op.
        """
        tasks = self.tasks if tasks is None else tuple(tasks)
        index = [self.tasks.index(t) for t in tasks]
        subset = None if index == list(range(len(self.tasks))) else torch.tensor(index, device=feats[0].device)
        reduced = [self._reduce(f, w, subset) for f, w in zip(feats, self.reduce, strict=False)]
        grid = reduced[0].shape[-2:]
        upsampled = [reduced[0]]
        upsampled += [F.interpolate(r, size=grid, mode="bilinear", align_corners=False) for r in reduced[1:]]
        count = len(tasks)
        # pixel-major (B, h, w, T, concat): the reducers' and the upsampling's layout, and the batched fuse's input
        pixels = torch.cat([u.permute(0, 2, 3, 1).unflatten(-1, (count, -1)) for u in upsampled], dim=-1)
        logits = self._fuse_classify(pixels.reshape(-1, count, pixels.shape[-1]), index, subset)
        # -1: exported graphs keep the batch dynamic
        logits = logits.view(-1, *pixels.shape[1:3], logits.shape[-1]).permute(0, 3, 1, 2).contiguous()
        logits = F.interpolate(logits, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
        out, start = {}, 0
        for task, i in zip(
            tasks, index, strict=False
        ):  # slices, not split: exporters keep each output's channels static
            out[task] = logits[:, start : start + self.out_channels[i]]
            start += self.out_channels[i]
        return out

    @staticmethod
    def _reduce(feat: torch.Tensor, weight: torch.Tensor, subset: torch.Tensor | None) -> torch.Tensor:
        """One scale's T bias-free 1x1 reducers -> (B, T * w, h, w), NCHW with the tasks' channels adjacent."""
        if subset is not None:
            weight = weight.index_select(0, subset)
        count, width, channels = weight.shape
        if feat.dim() == 4:  # shared features: one product with the T weights row-stacked
            return F.linear(feat, weight.reshape(count * width, channels)).permute(0, 3, 1, 2)
        if subset is not None:
            feat = feat.index_select(0, subset)
        out = torch.matmul(feat.flatten(1, 3), weight.transpose(1, 2))  # (T, B*h*w, w)
        return out.view(count, -1, *feat.shape[2:4], width).permute(1, 0, 4, 2, 3).flatten(1, 2)

    def _folded_fuse(self, subset: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The T 270 -> 1080 convs with the eval BatchNorm folded in: weight (T, 270, 1080), bias (T, 1, 1080)."""
        norm, count = self.norm, len(self.tasks)
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight = self.fuse.weight.flatten(1) * scale[:, None]
        bias = (self.fuse.bias - norm.running_mean) * scale + norm.bias
        weight, bias = weight.view(count, self.hidden, -1), bias.view(count, 1, self.hidden)
        if subset is not None:
            weight, bias = weight.index_select(0, subset), bias.index_select(0, subset)
        return weight.transpose(1, 2), bias

    def _fuse_classify(self, pixels: torch.Tensor, index: list[int], subset: torch.Tensor | None) -> torch.Tensor:
        """(P, T, concat) pixels -> (P, sum n_out) logits: fuse + BN + ReLU as one batched product over the tasks,
        then each task's classifier. Eager CPU inference runs it in pixel chunks (the (T, P, 1080) hidden map is
        54 MB at 448: page-faulted afresh every forward), everything else in one piece."""
        weight, bias = self._folded_fuse(subset)
        if capturing_graph() or torch.is_grad_enabled() or pixels.device.type != "cpu":
            return self._fuse_classify_rows(pixels, weight, bias, index)
        step = max(16, FUSE_CHUNK_ELEMENTS // (len(index) * self.hidden))
        rows = [pixels[start : start + step] for start in range(0, pixels.shape[0], step)]
        return torch.cat([self._fuse_classify_rows(chunk, weight, bias, index) for chunk in rows])

    def _fuse_classify_rows(
        self, pixels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, index: list[int]
    ) -> torch.Tensor:
        hidden = F.relu(torch.baddbmm(bias, pixels.transpose(0, 1), weight))
        return torch.cat([self._classify(hidden[j], i) for j, i in enumerate(index)], dim=-1)

    def _classify(self, hidden: torch.Tensor, task_index: int) -> torch.Tensor:
        """Task ``task_index``'s 1080 -> n_out classifier on its hidden rows (P, 1080) -> (P, n_out)."""
        start = sum(self.out_channels[:task_index])
        rows = slice(start, start + self.out_channels[task_index])
        return F.linear(hidden, self.classifier_weight[rows], self.classifier_bias[rows])
