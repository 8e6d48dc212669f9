"""Semantic segmentation and human parts: dataset-level confusion matrix -> mIoU."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import IGNORE_INDEX
from mtlora_deploy.trainer.metrics.base import (
    MetricAccumulator,
    _squeeze_channel,
)


class SegmentationMeter(MetricAccumulator):
    """Dataset-level confusion matrix -> per-class IoU, mIoU and pixel accuracy (semseg, human_parts).

    ``IoU_c = TP / (TP + FP + FN)`` over all non-ignored pixels of the dataset; ``mIoU`` is the
    mean over classes, in %. A class that appears neither in the labels nor in the predictions has
    an undefined IoU: it is reported as NaN and left out of the mean (the reference counts it as
    0; on PASCAL-MT val every class occurs, so both give the same number). Images whose label is
    all ignore (human_parts without people) add nothing.

    Args:
        num_classes: number of classes C (background included).
        ignore_index: label value that is skipped.
        class_names: optional names for the per-class keys (default: the class index).

    ``compute`` keys: ``mIoU``, ``pixel_acc`` (both %), ``IoU/<name>`` per class (%).
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self._add_state("confusion", (num_classes, num_classes), torch.int64)

    def _to_labels(self, pred: Tensor) -> Tensor:
        """Logits ``[B, C, H, W]`` -> argmax labels; integer label maps pass through."""
        if not pred.is_floating_point():
            labels = _squeeze_channel(pred).long()
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ValueError(
                    f"predicted labels must be in [0, {self.num_classes}), "
                    f"got range [{int(labels.min())}, {int(labels.max())}]"
                )
            return labels
        if pred.dim() != 4 or pred.shape[1] != self.num_classes:
            raise ValueError(f"expected logits [B, {self.num_classes}, H, W], got {tuple(pred.shape)}")
        return pred.argmax(dim=1)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` logits ``[B, C, H, W]`` (or labels), ``target`` ``[B, H, W]``."""
        labels = self._to_labels(pred)
        target = _squeeze_channel(target).to(labels.device).long()
        if labels.shape != target.shape:
            raise ValueError(f"prediction {tuple(labels.shape)} and label {tuple(target.shape)} sizes differ")
        valid = target != self.ignore_index
        t, p = target[valid], labels[valid]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            raise ValueError(
                f"label values must be in [0, {self.num_classes}) or {self.ignore_index}, "
                f"got range [{int(t.min())}, {int(t.max())}]; check num_classes"
            )
        n = self.num_classes
        confusion = torch.bincount(t * n + p, minlength=n * n).reshape(n, n)
        self._accumulate("confusion", confusion)

    def compute(self) -> dict[str, float]:
        """Per-class IoU, mIoU and pixel accuracy in %, from the summed confusion matrix."""
        conf = self._state["confusion"].double()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
        total = conf.sum()
        result = {
            "mIoU": 100.0 * float(iou.nanmean()) if bool((union > 0).any()) else math.nan,
            "pixel_acc": 100.0 * float(tp.sum() / total) if total > 0 else math.nan,
        }
        result.update({f"IoU/{name}": 100.0 * float(v) for name, v in zip(self.class_names, iou, strict=True)})
        return result
