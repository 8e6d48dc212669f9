"""Parameter counts derived from the layer shapes, for the tests that check ``count_parameters``.

Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7) gives 27,517,818 backbone parameters: timm's
``swin_tiny_patch4_window7_224`` has 28,288,354, less its 1000-class head (768 x 1000 + 1000 = 769,000) and its
final LayerNorm (2 x 768 = 1,536), neither of which the dense model keeps. Its four default HRNet heads (semseg 21,
human_parts 7, sal 1, normals 3 outputs; widths 18-36-72-144, hidden 1080) give 1,946,624.
"""

from __future__ import annotations

from mtlora_deploy.model.config import ModelConfig


def stage_widths(config: ModelConfig) -> list[int]:
    """Channels of the four stages: the embedding width doubles at every patch merging."""
    return [config.arch["embed_dim"] * 2**i for i in range(len(config.arch["depths"]))]


def swin_block_params(width: int, heads: int, window: int) -> int:
    """One Swin block: qkv (C -> 3C), proj (C -> C), fc1 (C -> 4C), fc2 (4C -> C) with biases = 12 C^2 + 9 C;
    two LayerNorms = 4 C; the relative-position bias table = (2w - 1)^2 per head."""
    return 12 * width**2 + 13 * width + (2 * window - 1) ** 2 * heads


def swin_backbone_params(config: ModelConfig) -> int:
    """The bare Swin the model adapts, without classifier and final LayerNorm (adapters not counted).

    Patch embedding: a 4x4 conv 3 -> C (with bias) and a LayerNorm; every stage's blocks; before each stage but
    the first a patch merging: LayerNorm over 4C and a bias-free 4C -> 2C linear.
    """
    arch, widths = config.arch, stage_widths(config)
    embedding = 3 * 16 * widths[0] + widths[0] + 2 * widths[0]
    blocks = sum(
        depth * swin_block_params(c, heads, arch["window_size"])
        for c, depth, heads in zip(widths, arch["depths"], arch["num_heads"], strict=True)
    )
    merging = sum(2 * 4 * c + 4 * c * 2 * c for c in widths[:-1])
    return embedding + blocks + merging


def decoder_params(config: ModelConfig) -> int:
    """One HRNet head per task: bias-free 1x1 reducers of the four feature maps (stage i's streams leave through
    stage i+1's patch merging, so 2C_i wide, the last one C_4), a 1x1 conv concat -> hidden with bias, BatchNorm
    (weight and bias), and a 1x1 classifier hidden -> n_out with bias."""
    widths = stage_widths(config)
    features = [*widths[1:], widths[-1]]
    reducers = sum(c * w for c, w in zip(features, config.decoder_widths, strict=True))
    hidden = config.head_channels
    shared = reducers + sum(config.decoder_widths) * hidden + hidden + 2 * hidden
    return sum(shared + hidden * config.output_channels(t) + config.output_channels(t) for t in config.tasks)
