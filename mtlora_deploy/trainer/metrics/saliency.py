"""Saliency: max-over-thresholds mIoU, maxF (F1) and beta_maxF (F_0.3), as the reference evaluation."""

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

REFERENCE_BETA_THRESHOLDS: tuple[float, ...] = tuple(torch.arange(0.05, 1, 0.05).double().tolist())
"""Thresholds of the reference's ``SaliencyMeterWithBeta`` (``torch.arange(0.05, 1, 0.05)``, float32 values)."""


class SaliencyMeter(MetricAccumulator):
    """Saliency as the reference's ``SaliencyMeter`` reports it: mIoU, maxF and "Beta maxF".

    ``mIoU`` and ``maxF`` are the reference's ``SaliencyMeterWithNoBeta``: for each threshold ``t`` (default
    ``linspace(0.2, 0.9, 15)``) and image, the mask is ``sigmoid(pred) > t`` and the label is ``label >= 0.5``; per
    image: IoU (1 when both are empty, as the reference's ``jaccard``), precision ``TP/(TP+FP)`` and recall
    ``TP/(TP+FN)`` (0 when their denominator is 0). IoU, precision and recall are averaged over images per threshold;
    ``mIoU = max_t mean IoU``; ``maxF = max_t 2 P_t R_t / (P_t + R_t)`` (F1, beta^2 = 1) of the image-averaged
    ``P_t, R_t``.

    ``beta_maxF`` is the reference's ``SaliencyMeterWithBeta`` ("Beta maxF"): precision and recall pooled over every
    pixel of the data set, ``F = (1 + b2) P R / (b2 P + R)`` with ``b2 = beta_squared`` (0.3), 0 where undefined, max
    over the 19 thresholds ``0.05, 0.10, ..., 0.95`` compared (``>=``) with what that meter thresholds. The
    reference feeds it probabilities and squashes them with a sigmoid once more, so it thresholds
    ``sigmoid(sigmoid(pred))``; this meter does the same so the numbers agree (on the probability the thresholds
    act at ``logit(t)``: only 0.20, 0.41, 0.62 and 0.85 differ from "every pixel" and "none").

    Pixels labelled ``ignore_index`` are left out (the loader never emits them for sal).

    ``compute`` keys: ``mIoU``, ``maxF``, ``beta_maxF`` (%), ``mIoU_threshold``, ``maxF_threshold``.
    """

    def __init__(
        self, thresholds: Sequence[float] = SAL_THRESHOLDS, beta_squared: float = 0.3, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        if len(thresholds) == 0 or list(thresholds) != sorted(thresholds):
            raise ConfigError(f"saliency thresholds must be a non-empty increasing list, got {list(thresholds)}")
        self.thresholds = torch.tensor(list(thresholds), dtype=torch.float64)
        self.beta_thresholds = torch.tensor(REFERENCE_BETA_THRESHOLDS, dtype=torch.float64)
        self.beta_squared = beta_squared
        self.ignore_index = ignore_index
        n = len(thresholds)
        for name in ("iou_sum", "precision_sum", "recall_sum"):
            self._add_state(name, (n,), torch.float64)
        self._add_state("num_images", (1,), torch.int64)
        for name in ("pooled_true_pos", "pooled_predicted"):
            self._add_state(name, (len(REFERENCE_BETA_THRESHOLDS),), torch.int64)
        self._add_state("pooled_actual", (1,), torch.int64)

    def _prepare(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Probabilities ``[B, HW]`` (float64), valid-pixel and label-positive masks ``[B, HW]``."""
        prob = torch.sigmoid(_squeeze_channel(pred).double()).flatten(1)
        target = _squeeze_channel(target).to(prob.device).flatten(1)
        valid = target != self.ignore_index
        return prob, valid, (target >= 0.5) & valid

    def _counts_above(self, values: Tensor, thresholds: Tensor, mask: Tensor, right: bool) -> Tensor:
        """Per image and threshold, the masked pixels with ``value > t`` (``>= t`` when ``right``): ``[B, T]``."""
        b, n = values.shape[0], len(thresholds)
        bucket = torch.bucketize(values, thresholds.to(values.device), right=right)
        bucket = bucket + torch.arange(b, device=values.device)[:, None] * (n + 1)
        return _count_above(torch.bincount(bucket[mask], minlength=b * (n + 1)).view(b, n + 1))

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` logits ``[B, 1, H, W]``, ``target`` ``[B, 1, H, W]`` in ``{0, 1}``."""
        if _squeeze_channel(pred).shape != _squeeze_channel(target).shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} sizes differ")
        prob, valid, positive = self._prepare(pred, target)
        predicted = self._counts_above(prob, self.thresholds, valid, right=False).double()
        tp = self._counts_above(prob, self.thresholds, positive, right=False).double()
        actual = positive.sum(1, keepdim=True).double()
        union = predicted + actual - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(tp))
        self._accumulate("iou_sum", iou.sum(0))
        self._accumulate("precision_sum", _safe_div(tp, predicted).sum(0))
        self._accumulate("recall_sum", _safe_div(tp, actual.expand_as(tp)).sum(0))
        self._accumulate("num_images", torch.tensor([tp.shape[0]]))
        squashed = torch.sigmoid(prob)  # the reference's second sigmoid (see the class docstring)
        self._accumulate("pooled_predicted", self._counts_above(squashed, self.beta_thresholds, valid, True).sum(0))
        self._accumulate("pooled_true_pos", self._counts_above(squashed, self.beta_thresholds, positive, True).sum(0))
        self._accumulate("pooled_actual", positive.sum().view(1))

    def compute(self) -> dict[str, float]:
        """Max over thresholds of the image-averaged IoU and F1, and of the pooled F_beta, in %."""
        n = int(self._state["num_images"])
        if n == 0:
            keys = ("mIoU", "maxF", "beta_maxF", "mIoU_threshold", "maxF_threshold")
            return {key: math.nan for key in keys}
        miou = self._state["iou_sum"] / n
        precision, recall = self._state["precision_sum"] / n, self._state["recall_sum"] / n
        f1 = _safe_div(2 * precision * recall, precision + recall)
        i_iou, i_f = int(miou.argmax()), int(f1.argmax())
        return {
            "mIoU": 100.0 * float(miou[i_iou]),
            "maxF": 100.0 * float(f1[i_f]),
            "beta_maxF": 100.0 * self._pooled_beta_max_f(),
            "mIoU_threshold": float(self.thresholds[i_iou]),
            "maxF_threshold": float(self.thresholds[i_f]),
        }

    def _pooled_beta_max_f(self) -> float:
        tp = self._state["pooled_true_pos"].double()
        precision = _safe_div(tp, self._state["pooled_predicted"].double())
        recall = _safe_div(tp, self._state["pooled_actual"].double().expand_as(tp))
        b2 = self.beta_squared
        return float(_safe_div((1 + b2) * precision * recall, b2 * precision + recall).max())
