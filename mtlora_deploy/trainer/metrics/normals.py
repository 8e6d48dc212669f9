"""Surface normals: angular error statistics from a fine histogram."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import IGNORE_INDEX
from mtlora_deploy.trainer.metrics.base import (
    MetricAccumulator,
)


class NormalsMeter(MetricAccumulator):
    """Angular error of surface normals in degrees over valid pixels.

    The angle between prediction and label is ``atan2(|p x l|, p . l)``, which needs no
    normalisation (it is scale-invariant) and stays accurate near 0 degrees where ``acos`` in
    float32 is not; a zero prediction counts as 90 degrees, as the reference's ``acos(0)``. A
    pixel is valid when no channel of its label is ``ignore_index``.

    ``mean`` is what the paper reports (the reference calls it "rmse"). The median comes from a
    histogram of ``bin_width`` degrees (bin centres, error at most half a bin), which keeps the
    state a sum. ``11.25``/``22.5``/``30`` are the % of pixels with error strictly
    below those angles, as in the reference.

    ``compute`` keys: ``mean``, ``median``, ``rmse`` (degrees), ``11.25``, ``22.5``, ``30`` (%).
    """

    WITHIN_DEGREES: tuple[float, ...] = (11.25, 22.5, 30.0)

    def __init__(self, bin_width: float = 0.01, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0 < bin_width <= 1:
            raise ConfigError(f"normals histogram bin_width must be in (0, 1] degrees, got {bin_width}")
        self.bin_width = bin_width
        self.num_bins = math.ceil(180.0 / bin_width)
        self.ignore_index = ignore_index
        self._add_state("sum", (1,), torch.float64)
        self._add_state("sum_sq", (1,), torch.float64)
        self._add_state("count", (1,), torch.int64)
        self._add_state("within", (len(self.WITHIN_DEGREES),), torch.int64)
        self._add_state("histogram", (self.num_bins,), torch.int64)

    @staticmethod
    def angles_degrees(pred: Tensor, label: Tensor) -> Tensor:
        """Per-pixel angle ``[B, H, W]`` in degrees between ``[B, 3, H, W]`` vectors."""
        pred, label = pred.float(), label.float()
        dot = (pred * label).sum(dim=1)
        cross = torch.linalg.vector_norm(torch.linalg.cross(pred, label, dim=1), dim=1)
        angle = torch.rad2deg(torch.atan2(cross, dot))
        zero_pred = torch.linalg.vector_norm(pred, dim=1) == 0
        return torch.where(zero_pred, torch.full_like(angle, 90.0), angle)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` ``[B, 3, H, W]``, ``target`` unit normals with 255 where ignored."""
        target = target.to(pred.device)
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(
                f"expected prediction and label [B, 3, H, W], got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        valid = (target != self.ignore_index).all(dim=1)
        angles = self.angles_degrees(pred, torch.where(valid[:, None], target, torch.zeros_like(target)))[valid]
        angles = angles.double()
        self._accumulate("sum", angles.sum().reshape(1))
        self._accumulate("sum_sq", angles.square().sum().reshape(1))
        self._accumulate("count", torch.tensor([angles.numel()]))
        limits = torch.tensor(self.WITHIN_DEGREES, dtype=torch.float64, device=angles.device)
        self._accumulate("within", (angles[:, None] < limits).sum(0))
        bins = (angles / self.bin_width).floor().long().clamp(0, self.num_bins - 1)
        self._accumulate("histogram", torch.bincount(bins, minlength=self.num_bins))

    def _order_statistic(self, k: int) -> float:
        """The ``k``-th smallest angle (0-based), as the centre of its histogram bin."""
        cumulative = self._state["histogram"].cumsum(0)
        b = int(torch.searchsorted(cumulative, torch.tensor([k], dtype=cumulative.dtype), right=True))
        return (b + 0.5) * self.bin_width

    def _median(self) -> float:
        """Median as numpy defines it (mean of the two middle values for an even count), within half a bin."""
        n = int(self._state["count"])
        return 0.5 * (self._order_statistic((n - 1) // 2) + self._order_statistic(n // 2))

    def compute(self) -> dict[str, float]:
        """Mean, median, RMSE (degrees) and % within 11.25/22.5/30 degrees."""
        n = int(self._state["count"])
        if n == 0:
            return {key: math.nan for key in ("mean", "median", "rmse", "11.25", "22.5", "30")}
        within = (100.0 * self._state["within"].double() / n).tolist()
        return {
            "mean": float(self._state["sum"]) / n,
            "median": self._median(),
            "rmse": math.sqrt(float(self._state["sum_sq"]) / n),
            "11.25": within[0],
            "22.5": within[1],
            "30": within[2],
        }
