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
docs/training.md, "Metrics", and the reference meters of MTLoRA / MTI-Net; differences are documented
on each class.
"""

from mtlora_deploy.trainer.metrics.base import (
    DEFAULT_NUM_CLASSES,
    EDGE_METRIC_NOTE,
    SAL_THRESHOLDS,
    MetricAccumulator,
)
from mtlora_deploy.trainer.metrics.edge import EdgeMeter
from mtlora_deploy.trainer.metrics.normals import NormalsMeter
from mtlora_deploy.trainer.metrics.registry import (
    PRIMARY_METRICS,
    PrimaryMetric,
    build_metrics,
    lower_is_better_tasks,
    primary_metric,
    primary_values,
)
from mtlora_deploy.trainer.metrics.saliency import SaliencyMeter
from mtlora_deploy.trainer.metrics.segmentation import SegmentationMeter

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "EDGE_METRIC_NOTE",
    "SAL_THRESHOLDS",
    "MetricAccumulator",
    "EdgeMeter",
    "NormalsMeter",
    "PRIMARY_METRICS",
    "PrimaryMetric",
    "build_metrics",
    "lower_is_better_tasks",
    "primary_metric",
    "primary_values",
    "SaliencyMeter",
    "SegmentationMeter",
]
