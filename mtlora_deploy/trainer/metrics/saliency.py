"""Saliency: max-over-thresholds mIoU and maxF."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import IGNORE_INDEX
from mtlora_deploy.trainer.metrics.base import (
    SAL_THRESHOLDS,
    MetricAccumulator,
    _count_above,
    _safe_div,
    _squeeze_channel,
)


class SaliencyMeter(MetricAccumulator):
    """Saliency: max-over-thresholds of image-averaged IoU, and maxF (reference ``SaliencyMeterWithNoBeta``).

    For each threshold ``t`` (default ``linspace(0.2, 0.9, 15)``) and image, the mask is
    ``sigmoid(pred) > t`` and the label is ``label >= 0.5``; per image: IoU (1 when both are
    empty, as the reference's ``jaccard``), precision ``TP/(TP+FP)`` and recall ``TP/(TP+FN)``
    (0 when their denominator is 0). IoU, precision and recall are averaged over images per
    threshold; ``mIoU = max_t mean IoU``; ``F_t = (1 + b2) P_t R_t / (b2 P_t + R_t)`` with
    ``b2 = 0.3`` from the image-averaged ``P_t, R_t`` and ``maxF = max_t F_t``. Pixels labelled
    ``ignore_index`` are left out (the loader never emits them for sal).

    ``compute`` keys: ``mIoU`` (%), ``maxF`` (%), ``mIoU_threshold``, ``maxF_threshold``.
    """

    def __init__(self, thresholds: Sequence[float] = SAL_THRESHOLDS, beta_squared: float = 0.3,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if len(thresholds) == 0 or list(thresholds) != sorted(thresholds):
            raise ConfigError(f"saliency thresholds must be a non-empty increasing list, got {list(thresholds)}")
        self.thresholds = torch.tensor(list(thresholds), dtype=torch.float64)
        self.beta_squared = beta_squared
        self.ignore_index = ignore_index
        n = len(thresholds)
        for name in ("iou_sum", "precision_sum", "recall_sum"):
            self._add_state(name, (n,), torch.float64)
        self._add_state("num_images", (1,), torch.int64)

    def _per_image_counts(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per image and threshold: true positives, predicted positives ``[B, T]``, label positives ``[B, 1]``."""
        prob = torch.sigmoid(_squeeze_channel(pred).double()).flatten(1)
        target = _squeeze_channel(target).to(prob.device).flatten(1)
        valid = target != self.ignore_index
        positive = (target >= 0.5) & valid
        b, n = prob.shape[0], len(self.thresholds)
        bucket = torch.bucketize(prob, self.thresholds.to(prob.device))
        bucket = bucket + torch.arange(b, device=prob.device)[:, None] * (n + 1)
        predicted = _count_above(torch.bincount(bucket[valid], minlength=b * (n + 1)).view(b, n + 1))
        true_pos = _count_above(torch.bincount(bucket[positive], minlength=b * (n + 1)).view(b, n + 1))
        return true_pos.double(), predicted.double(), positive.sum(1, keepdim=True).double()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` logits ``[B, 1, H, W]``, ``target`` ``[B, 1, H, W]`` in ``{0, 1}``."""
        if _squeeze_channel(pred).shape != _squeeze_channel(target).shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} sizes differ")
        tp, predicted, actual = self._per_image_counts(pred, target)
        union = predicted + actual - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(tp))
        self._accumulate("iou_sum", iou.sum(0))
        self._accumulate("precision_sum", _safe_div(tp, predicted).sum(0))
        self._accumulate("recall_sum", _safe_div(tp, actual.expand_as(tp)).sum(0))
        self._accumulate("num_images", torch.tensor([tp.shape[0]]))

    def compute(self) -> dict[str, float]:
        """Max over thresholds of the image-averaged IoU and of F_beta, in %."""
        n = int(self._state["num_images"])
        if n == 0:
            return {"mIoU": math.nan, "maxF": math.nan, "mIoU_threshold": math.nan, "maxF_threshold": math.nan}
        miou = self._state["iou_sum"] / n
        precision, recall = self._state["precision_sum"] / n, self._state["recall_sum"] / n
        b2 = self.beta_squared
        f = _safe_div((1 + b2) * precision * recall, b2 * precision + recall)
        i_iou, i_f = int(miou.argmax()), int(f.argmax())
        return {
            "mIoU": 100.0 * float(miou[i_iou]),
            "maxF": 100.0 * float(f[i_f]),
            "mIoU_threshold": float(self.thresholds[i_iou]),
            "maxF_threshold": float(self.thresholds[i_f]),
        }
