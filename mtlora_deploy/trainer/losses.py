"""Per-task losses of the MTLoRA / MTI-Net / ATRC recipe and their weighted multi-task sum.

The conventions follow the reference code (``mtl_loss_schemes.py`` of MTLoRA, itself
``losses/loss_functions.py`` of MTI-Net) so that loss values and the meaning of the task weights
carry over; the differences are written out per function and are limited to making degenerate
batches (every label ignored) return a finite zero with a gradient instead of NaN.

Label conventions (from the data loader): ``255`` marks ignored pixels in every task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlora_deploy.errors import ConfigError

IGNORE_INDEX = 255

DEFAULT_LOSS_WEIGHTS: Mapping[str, float] = {
    "semseg": 1.0,
    "human_parts": 2.0,
    "sal": 5.0,
    "normals": 10.0,
    "edge": 50.0,
}
"""Task weights of the reference recipe (docs/model.md, "Losses")."""

EDGE_POS_WEIGHT = 0.95
"""Fixed positive-class weight of the edge loss (reference ``edge_w``)."""


def _squeeze_channel(label: Tensor) -> Tensor:
    """Accept class maps as ``[B, H, W]`` or ``[B, 1, H, W]`` and return ``[B, H, W]``."""
    return label[:, 0] if label.dim() == 4 else label


def cross_entropy_loss(logits: Tensor, label: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel-wise cross-entropy averaged over the non-ignored pixels of the batch.

    Same value as the reference ``SoftMaxwithLoss`` (``NLLLoss(ignore_index=255)`` with mean
    reduction) whenever a pixel is valid. The reference returns NaN (0 / 0) when every pixel is
    ignored, which happens for human_parts on batches without people; here the sum is divided by
    ``max(n_valid, 1)`` so such a batch gives 0 with a (zero) gradient.

    Args:
        logits: ``[B, C, H, W]`` class scores.
        label: ``[B, H, W]`` or ``[B, 1, H, W]`` integer classes, ``ignore_index`` = ignore.
        ignore_index: label value excluded from the loss.

    Returns:
        A scalar tensor.
    """
    label = _squeeze_channel(label).long()
    total = F.cross_entropy(logits.float(), label, ignore_index=ignore_index, reduction="sum")
    n_valid = (label != ignore_index).sum().clamp_min(1)
    return total / n_valid


def normals_l1_loss(pred: Tensor, label: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """L1 between the L2-normalised prediction and the label over the valid elements.

    Reference ``NormalsLoss(normalize=True, size_average=True, norm=1)``: the prediction is divided
    by ``||pred||_2 + 1e-12`` along the channel axis, the absolute differences are summed over every
    element (pixel x channel) whose label is not ``ignore_index`` and divided by the number of such
    elements (so a fully valid pixel contributes three elements). An all-ignored batch gives 0.

    Args:
        pred: ``[B, 3, H, W]`` raw normals prediction.
        label: ``[B, 3, H, W]`` unit normals, ``ignore_index`` in every channel where ignored.
        ignore_index: label value excluded from the loss.

    Returns:
        A scalar tensor.
    """
    pred = pred.float()
    pred = pred / (torch.linalg.vector_norm(pred, ord=2, dim=1, keepdim=True) + 1e-12)
    valid = label != ignore_index
    diff = torch.where(valid, (pred - label.float()).abs(), torch.zeros_like(pred))
    return diff.sum() / valid.sum().clamp_min(1)


def balanced_bce_loss(
    logits: Tensor, label: Tensor, pos_weight: float | None = None, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Class-balanced binary cross-entropy, reference ``BalancedCrossEntropyLoss(size_average=True)``.

    With ``y = (label >= 0.5)``, per-pixel ``l = BCEWithLogits(x, y)``, positives ``P`` and
    negatives ``N``::

        loss = (w * sum_{i in P} l_i + (1 - w) * sum_{i in N} l_i) / numel(label)

    - ``pos_weight=None`` (saliency, HED style): ``w = |N| / (|P| + |N|)`` counted over the whole
      batch, so the rarer class gets the larger weight.
    - ``pos_weight=0.95`` (edge): ``w`` is that constant; negatives get ``0.05``.

    The divisor is always the element count of the label tensor (reference ``size_average``),
    not the sum of weights. Pixels labelled ``ignore_index`` are excluded from the sums and from
    the counts behind ``w`` (the reference's ``void_pixels``); the loader never emits them for
    sal/edge, where this is identical to the reference. The numerically stable BCE-with-logits is
    the same expression as the reference's hand-written ``loss_val``.

    Args:
        logits: ``[B, 1, H, W]`` (or any shape equal to ``label``) raw scores.
        label: same shape, values in ``{0, 1}`` (``ignore_index`` = ignore).
        pos_weight: fixed weight of the positive class, or None for the HED batch balance.
        ignore_index: label value excluded from the loss.

    Returns:
        A scalar tensor.
    """
    if logits.shape != label.shape:
        raise ValueError(f"balanced_bce_loss: logits {tuple(logits.shape)} and label {tuple(label.shape)} differ")
    valid = label != ignore_index
    positive = (label >= 0.5) & valid
    negative = (label < 0.5) & valid
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), positive.float(), reduction="none")
    zero = torch.zeros_like(per_pixel)
    loss_pos = torch.where(positive, per_pixel, zero).sum()
    loss_neg = torch.where(negative, per_pixel, zero).sum()
    w: Tensor | float = negative.sum() / valid.sum().clamp_min(1) if pos_weight is None else float(pos_weight)
    return (w * loss_pos + (1 - w) * loss_neg) / max(label.numel(), 1)


def _edge_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Edge loss: balanced BCE with the fixed positive weight 0.95."""
    return balanced_bce_loss(logits, label, pos_weight=EDGE_POS_WEIGHT)


def _sal_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Saliency loss: HED-style balanced BCE (weight from the batch)."""
    return balanced_bce_loss(logits, label, pos_weight=None)


TASK_LOSSES: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = {
    "semseg": cross_entropy_loss,
    "human_parts": cross_entropy_loss,
    "sal": _sal_loss,
    "normals": normals_l1_loss,
    "edge": _edge_loss,
}
"""Loss function per task name; each takes ``(logits, label)`` and returns a scalar."""


def _resolve_weights(tasks: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Merge user weights over the reference defaults and check them at the boundary."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise ConfigError(f"loss weights given for tasks {unknown} that are not trained; tasks: {list(tasks)}")
    resolved = {task: float(weights.get(task, DEFAULT_LOSS_WEIGHTS[task])) for task in tasks}
    bad = {task: w for task, w in resolved.items() if not (math.isfinite(w) and w >= 0)}
    if bad:
        raise ConfigError(f"loss weights must be finite and >= 0, got {bad}; fix the 'loss_weights' option")
    return resolved


class MultiTaskLoss(nn.Module):
    """Weighted sum of the per-task losses: ``total = sum_t weight_t * loss_t``.

    Args:
        tasks: task names, each one of ``TASK_LOSSES``.
        weights: optional per-task weights overriding ``DEFAULT_LOSS_WEIGHTS``
            (semseg 1, human_parts 2, sal 5, normals 10, edge 50).

    Raises:
        ConfigError: for an empty task list, an unknown task or a negative/unknown weight.
    """

    def __init__(self, tasks: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        tasks = list(tasks)
        if not tasks:
            raise ConfigError("MultiTaskLoss needs at least one task; pass e.g. tasks=['semseg']")
        unknown = [task for task in tasks if task not in TASK_LOSSES]
        if unknown:
            raise ConfigError(f"no loss for tasks {unknown}; known tasks: {sorted(TASK_LOSSES)}")
        self.tasks = tasks
        self.weights = _resolve_weights(tasks, weights)

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute every task loss and their weighted sum.

        Args:
            outputs: task -> logits at label resolution (see each loss for shapes).
            batch: the loader's dict; ``batch[task]`` is the label of each task.

        Returns:
            ``(total, losses)``: the weighted scalar sum, and task -> unweighted scalar loss.
        """
        missing = [task for task in self.tasks if task not in outputs or task not in batch]
        if missing:
            raise KeyError(f"MultiTaskLoss: tasks {missing} are missing from the model outputs or the batch")
        losses = {task: TASK_LOSSES[task](outputs[task], batch[task]) for task in self.tasks}
        total = torch.stack([self.weights[task] * losses[task] for task in self.tasks]).sum()
        return total, losses

    def extra_repr(self) -> str:
        """Show the weights in ``print(model)``."""
        return f"weights={self.weights}"
