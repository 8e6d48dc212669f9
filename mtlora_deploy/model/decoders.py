"""Per-task HRNet-style decoders (the MTLoRA reference heads)."""

from __future__ import annotations

import torch
from torch import nn


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
