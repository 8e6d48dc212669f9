"""Evaluation metrics of PASCAL-MT as summable accumulators (one per task).

Every accumulator keeps only sums (counts, histograms, sums of per-image scores) on the CPU in
float64/int64, so data-parallel evaluation is exact: each rank calls ``update`` on its shard, the
caller ``all_reduce(SUM)``s every tensor of ``state_tensors()`` and loads them back with
``load_state_tensors``; ``compute()`` then equals a single process that saw every batch::

    states = [t.to(device) for t in acc.state_tensors()]
    for t in states:
        torch.distributed.all_reduce(t)
    acc.load_state_tensors(states)

The work inside ``update`` is done in torch on the tensors' own device. Definitions follow
training.md ("Metrics") and the reference meters of MTLoRA / MTI-Net; differences are documented
on each class.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import EDGE_POS_WEIGHT, IGNORE_INDEX, balanced_bce_loss

SAL_THRESHOLDS: tuple[float, ...] = tuple(torch.linspace(0.2, 0.9, 15, dtype=torch.float64).tolist())
"""Saliency thresholds on sigmoid(pred), as in the reference (``np.linspace(0.2, 0.9, 15)``)."""

DEFAULT_NUM_CLASSES: Mapping[str, int] = {"semseg": 21, "human_parts": 7}
"""PASCAL-MT class counts (background included) of the segmentation tasks."""

EDGE_METRIC_NOTE = (
    "edge odsF here is a fast proxy, not the official BSDS/SEISM odsF: predictions are not thinned "
    "by non-maximum suppression and pixels are matched within a disc tolerance (many-to-one) "
    "instead of by bipartite matching"
)
"""One line for reports that show the edge metric."""


def _squeeze_channel(x: Tensor) -> Tensor:
    """Return ``[B, H, W]`` from ``[B, 1, H, W]`` or ``[B, H, W]``."""
    return x[:, 0] if x.dim() == 4 else x


def _count_above(hist: Tensor) -> Tensor:
    """Counts of values above each threshold from ``torch.bucketize`` bucket histograms.

    With ``right=False`` a value ``v`` lands in bucket ``i`` when ``t[i-1] < v <= t[i]``, so
    ``v > t[k]`` exactly when ``i >= k + 1``: the answer is the reverse cumulative sum of buckets
    ``1..T``. ``hist`` is ``[..., T + 1]``; the result is ``[..., T]``.
    """
    return hist[..., 1:].flip(-1).cumsum(-1).flip(-1)


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` with 0 where ``den == 0`` (the reference's ``+1e-12`` convention, exactly)."""
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def _disc_max_filter(x: Tensor, radius: int) -> Tensor:
    """Grey dilation of ``[B, H, W]`` non-negative maps with a Euclidean disc of ``radius`` pixels.

    Implemented as a maximum over shifted views (13 for radius 2) so it runs on any device
    without scipy; zero padding is neutral because the inputs are probabilities or 0/1 masks.
    """
    if radius <= 0:
        return x
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (radius, radius, radius, radius), value=0.0)
    out = x.clone()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                view = padded[..., radius + dy : radius + dy + h, radius + dx : radius + dx + w]
                out = torch.maximum(out, view)
    return out


class MetricAccumulator(ABC):
    """Base of the task meters: named summable state tensors kept on the CPU.

    Subclasses register their states in ``__init__`` with ``_add_state`` and add to them in
    ``update``; every state is a sum, so states of several processes can simply be added.
    """

    def __init__(self) -> None:
        self._state: dict[str, Tensor] = {}

    def _add_state(self, name: str, shape: Sequence[int], dtype: torch.dtype) -> None:
        """Register a zero-initialised summable state."""
        self._state[name] = torch.zeros(tuple(shape), dtype=dtype)

    def _accumulate(self, name: str, value: Tensor) -> None:
        """Add ``value`` (any device) to the CPU state ``name``."""
        self._state[name] += value.detach().to("cpu", self._state[name].dtype)

    def reset(self) -> None:
        """Zero every state, e.g. before a new validation pass."""
        for tensor in self._state.values():
            tensor.zero_()

    def state_tensors(self) -> list[Tensor]:
        """Copies of the states in a fixed order, for ``all_reduce(SUM)`` across processes."""
        return [tensor.clone() for tensor in self._state.values()]

    def load_state_tensors(self, tensors: Sequence[Tensor]) -> None:
        """Replace the states with (reduced) tensors in ``state_tensors()`` order.

        Raises:
            ValueError: if the number or shapes of the tensors do not match.
        """
        if len(tensors) != len(self._state):
            raise ValueError(f"{type(self).__name__}: expected {len(self._state)} state tensors, got {len(tensors)}")
        for (name, current), new in zip(self._state.items(), tensors):
            if tuple(new.shape) != tuple(current.shape):
                raise ValueError(f"{type(self).__name__}: state '{name}' has shape {tuple(current.shape)}, "
                                 f"got {tuple(new.shape)}")
            self._state[name] = new.detach().to("cpu", current.dtype).clone()

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of predictions (logits) and labels."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Metrics from the accumulated states (NaN when nothing valid was seen)."""


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

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None) -> None:
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
                raise ValueError(f"predicted labels must be in [0, {self.num_classes}), "
                                 f"got range [{int(labels.min())}, {int(labels.max())}]")
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
            raise ValueError(f"label values must be in [0, {self.num_classes}) or {self.ignore_index}, "
                             f"got range [{int(t.min())}, {int(t.max())}]; check num_classes")
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
        result.update({f"IoU/{name}": 100.0 * float(v) for name, v in zip(self.class_names, iou)})
        return result


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
            raise ValueError(f"expected prediction and label [B, 3, H, W], "
                             f"got {tuple(pred.shape)} and {tuple(target.shape)}")
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
            raise ConfigError(f"edge metric needs num_thresholds >= 1 and tolerance_px >= 0, "
                              f"got {num_thresholds} and {tolerance_px}")
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
            return {"odsF": math.nan, "odsF_threshold": math.nan, "precision": math.nan, "recall": math.nan,
                    "loss": loss}
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


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric a task is ranked by (checkpoint selection, multi-task delta).

    Attributes:
        name: key in the task's ``compute()`` dict.
        higher_is_better: direction; False for error metrics (normals mean angle).
    """

    name: str
    higher_is_better: bool


PRIMARY_METRICS: Mapping[str, PrimaryMetric] = {
    "semseg": PrimaryMetric("mIoU", True),
    "human_parts": PrimaryMetric("mIoU", True),
    "sal": PrimaryMetric("mIoU", True),
    "normals": PrimaryMetric("mean", False),
    "edge": PrimaryMetric("odsF", True),
}


def primary_metric(task: str) -> PrimaryMetric:
    """The primary metric of ``task``; raises ConfigError for an unknown task."""
    if task not in PRIMARY_METRICS:
        raise ConfigError(f"unknown task '{task}'; known tasks: {sorted(PRIMARY_METRICS)}")
    return PRIMARY_METRICS[task]


def primary_values(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Pick each task's primary value from ``{task: compute() dict}``, e.g. for ``multi_task_delta``."""
    return {task: float(values[primary_metric(task).name]) for task, values in results.items()}


def lower_is_better_tasks(tasks: Sequence[str]) -> set[str]:
    """Tasks whose primary metric is an error (lower is better)."""
    return {task for task in tasks if not primary_metric(task).higher_is_better}


def _check_num_classes(num_classes: Mapping[str, int] | None) -> dict[str, int]:
    """Merge user class counts over the PASCAL-MT defaults and check them."""
    merged = dict(DEFAULT_NUM_CLASSES)
    for task, n in (num_classes or {}).items():
        if task not in DEFAULT_NUM_CLASSES:
            raise ConfigError(f"num_classes given for '{task}', which has no classes; "
                              f"allowed: {sorted(DEFAULT_NUM_CLASSES)}")
        if int(n) < 1:
            raise ConfigError(f"num_classes['{task}'] must be >= 1, got {n}")
        merged[task] = int(n)
    return merged


def build_metrics(tasks: Sequence[str], num_classes: Mapping[str, int] | None = None,
                  edge_tolerance_px: int = 2) -> dict[str, MetricAccumulator]:
    """One fresh accumulator per task.

    Args:
        tasks: task names (semseg, human_parts, sal, normals, edge).
        num_classes: class counts for semseg / human_parts (default 21 / 7).
        edge_tolerance_px: match distance of the edge F-measure, in pixels.

    Returns:
        task -> accumulator, in the order of ``tasks``.

    Raises:
        ConfigError: for an unknown task or a bad class count.
    """
    counts = _check_num_classes(num_classes)
    meters: dict[str, MetricAccumulator] = {}
    for task in tasks:
        primary_metric(task)  # validates the name
        if task in counts:
            meters[task] = SegmentationMeter(counts[task])
        elif task == "sal":
            meters[task] = SaliencyMeter()
        elif task == "normals":
            meters[task] = NormalsMeter()
        else:
            meters[task] = EdgeMeter(tolerance_px=edge_tolerance_px)
    return meters
