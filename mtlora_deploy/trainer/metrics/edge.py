"""Edges: a thresholded F-measure with pixel tolerance (a proxy of BSDS odsF)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import EDGE_POS_WEIGHT, IGNORE_INDEX, balanced_bce_loss
from mtlora_deploy.trainer.metrics.base import (
    MetricAccumulator,
    _count_above,
    _disc_max_filter,
    _safe_div,
    _squeeze_channel,
)


class EdgeMeter(MetricAccumulator):
    """Edge: dataset-level best-threshold F-measure with a pixel tolerance (an odsF proxy) and the loss.

    Not the official BSDS/SEISM odsF (see ``EDGE_METRIC_NOTE``). For each threshold ``t`` in
    ``linspace(0.01, 0.99, num_thresholds)`` on ``sigmoid(pred)``, with ``E_t = sigmoid(pred) > t``,
    label edges ``G = label >= 0.5`` and ``D_r`` the binary dilation by a Euclidean disc of
    ``tolerance_px`` pixels, summed over the dataset::

        P_t = |E_t & D_r(G)| / |E_t|     R_t = |G & D_r(E_t)| / |G|     odsF = max_t 2 P_t R_t / (P_t + R_t)

    ``D_r(E_t)`` is read off one grey dilation of the probabilities (``max over the disc > t``), so
    every threshold costs only a histogram. ``loss`` is the training edge loss (balanced BCE,
    positive weight 0.95) averaged over all elements, which is what the reference reports.

    ``compute`` keys: ``odsF`` (%), ``odsF_threshold``, ``precision`` and ``recall`` at that
    threshold (%), ``loss``.
    """

    def __init__(self, num_thresholds: int = 99, tolerance_px: int = 2, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if num_thresholds < 1 or tolerance_px < 0:
            raise ConfigError(
                f"edge metric needs num_thresholds >= 1 and tolerance_px >= 0, got {num_thresholds} and {tolerance_px}"
            )
        self.thresholds = torch.linspace(0.01, 0.99, num_thresholds, dtype=torch.float64)
        self.tolerance_px = tolerance_px
        self.ignore_index = ignore_index
        for name in ("predicted", "predicted_matched", "label_matched"):
            self._add_state(name, (num_thresholds,), torch.int64)
        self._add_state("label_edges", (1,), torch.int64)
        self._add_state("loss_sum", (1,), torch.float64)
        self._add_state("loss_count", (1,), torch.int64)

    def _above_thresholds(self, values: Tensor) -> Tensor:
        """Number of ``values`` above each threshold, ``[T]``."""
        thresholds = self.thresholds.to(values.device)
        return _count_above(torch.bincount(torch.bucketize(values, thresholds), minlength=len(thresholds) + 1))

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` logits ``[B, 1, H, W]``, ``target`` ``[B, 1, H, W]`` in ``{0, 1}``."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(target.shape)} sizes differ")
        target = target.to(pred.device)
        loss = balanced_bce_loss(pred, target, pos_weight=EDGE_POS_WEIGHT, ignore_index=self.ignore_index)
        self._accumulate("loss_sum", (loss.double() * target.numel()).reshape(1))
        self._accumulate("loss_count", torch.tensor([target.numel()]))
        prob = torch.sigmoid(_squeeze_channel(pred).double())
        label = _squeeze_channel(target)
        valid = label != self.ignore_index
        edges = (label >= 0.5) & valid
        near_edges = _disc_max_filter(edges.double(), self.tolerance_px) > 0
        self._accumulate("predicted", self._above_thresholds(prob[valid]))
        self._accumulate("predicted_matched", self._above_thresholds(prob[valid & near_edges]))
        self._accumulate("label_matched", self._above_thresholds(_disc_max_filter(prob, self.tolerance_px)[edges]))
        self._accumulate("label_edges", edges.sum().reshape(1))

    def compute(self) -> dict[str, float]:
        """Best-threshold F-measure (with P and R there) in %, and the mean edge loss."""
        count = int(self._state["loss_count"])
        loss = float(self._state["loss_sum"]) / count if count else math.nan
        n_edges = self._state["label_edges"].double()
        if count == 0 or int(n_edges) == 0:
            return {
                "odsF": math.nan,
                "odsF_threshold": math.nan,
                "precision": math.nan,
                "recall": math.nan,
                "loss": loss,
            }
        precision = _safe_div(self._state["predicted_matched"].double(), self._state["predicted"].double())
        recall = self._state["label_matched"].double() / n_edges
        f = _safe_div(2 * precision * recall, precision + recall)
        best = int(f.argmax())
        return {
            "odsF": 100.0 * float(f[best]),
            "odsF_threshold": float(self.thresholds[best]),
            "precision": 100.0 * float(precision[best]),
            "recall": 100.0 * float(recall[best]),
            "loss": loss,
        }
