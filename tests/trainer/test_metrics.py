"""Metric accumulators against values worked out by hand, and the summable-state contract."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import balanced_bce_loss
from mtlora_deploy.trainer.metrics import (
    SAL_THRESHOLDS,
    EdgeMeter,
    MetricAccumulator,
    NormalsMeter,
    SaliencyMeter,
    SegmentationMeter,
    build_metrics,
    lower_is_better_tasks,
    primary_metric,
    primary_values,
)


def one_hot_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``[B, C, H, W]`` whose argmax is ``labels`` ``[B, H, W]``."""
    return torch.nn.functional.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def logits_of(prob: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.logit(torch.tensor(prob, dtype=torch.float64)).float().reshape(shape)


# ---- semseg / human_parts --------------------------------------------------------------------


def test_segmentation_hand_confusion_2x3() -> None:
    # label        prediction
    # 0 0 1        0 1 1
    # 1 2 255      1 0 2      (last pixel ignored)
    # class 0: TP 1 (0,0); FP 1 (label 2 predicted 0); FN 1 (label 0 predicted 1) -> IoU 1/3
    # class 1: TP 2; FP 1 (label 0 predicted 1); FN 0                             -> IoU 2/3
    # class 2: TP 0; FP 0 (the 2 on the ignored pixel does not count); FN 1        -> IoU 0
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    meter = SegmentationMeter(3)
    meter.update(one_hot_logits(pred, 3), target)
    out = meter.compute()
    assert out["IoU/0"] == pytest.approx(100 / 3)
    assert out["IoU/1"] == pytest.approx(200 / 3)
    assert out["IoU/2"] == 0.0
    assert out["mIoU"] == pytest.approx(100 / 3)
    assert out["pixel_acc"] == pytest.approx(60.0)  # 3 correct of 5 valid
    assert meter.state_tensors()[0].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_segmentation_accepts_label_maps_and_channel_dim() -> None:
    target = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
    meter = SegmentationMeter(3, class_names=["bg", "a", "b"])
    meter.update(pred[:, None], target[:, None])
    assert meter.compute()["IoU/a"] == pytest.approx(200 / 3)


def test_segmentation_absent_class_is_nan_and_left_out_of_mean() -> None:
    meter = SegmentationMeter(4)
    meter.update(one_hot_logits(torch.tensor([[[0, 1]]]), 4), torch.tensor([[[0, 1]]]))
    out = meter.compute()
    assert math.isnan(out["IoU/2"]) and math.isnan(out["IoU/3"])
    assert out["mIoU"] == pytest.approx(100.0)


def test_human_parts_all_ignored_images_add_nothing() -> None:
    meter = SegmentationMeter(7)
    meter.update(torch.randn(2, 7, 4, 4), torch.full((2, 4, 4), 255))
    assert int(meter.state_tensors()[0].sum()) == 0
    assert math.isnan(meter.compute()["mIoU"])
    meter.update(one_hot_logits(torch.tensor([[[0, 3]]]), 7), torch.tensor([[[0, 3]]]))
    assert meter.compute()["mIoU"] == pytest.approx(100.0)


def test_segmentation_rejects_wrong_class_count() -> None:
    meter = SegmentationMeter(3)
    with pytest.raises(ValueError, match="num_classes"):
        meter.update(one_hot_logits(torch.tensor([[[0, 1]]]), 3), torch.tensor([[[0, 5]]]))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        meter.update(torch.randn(1, 4, 1, 2), torch.tensor([[[0, 1]]]))


# ---- saliency --------------------------------------------------------------------------------


def test_saliency_max_over_thresholds_by_hand() -> None:
    # thresholds 0.20, 0.25, ..., 0.90 on sigmoid; mask = prob > t.
    # image 1: label [1 1 0 0], prob [.95 .57 .33 .10]
    #   t <= .30      : mask {.95,.57,.33} IoU 2/3, P 2/3, R 1
    #   .35 <= t <= .55: mask {.95,.57}     IoU 1,   P 1,   R 1
    #   t >= .60      : mask {.95}         IoU 1/2, P 1,   R 1/2
    # image 2: label [0 0 0 0], prob [.62 .1 .1 .1]
    #   t <= .60: IoU 0, P 0, R 0 (no label positives)   t >= .65: both empty -> IoU 1, P 0, R 0
    # mean IoU: 1/3 (t<=.3), 1/2 (.35-.55), 1/4 (.6), 3/4 (t>=.65)  -> mIoU 75 at t = 0.65
    # P, R: (1/3, 1/2) -> F1 0.4; (1/2, 1/2) -> F1 0.5; (1/2, 1/4) -> F1 1/3  -> maxF 50 at 0.35
    pred = torch.cat(
        [logits_of([0.95, 0.57, 0.33, 0.10], (1, 1, 2, 2)), logits_of([0.62, 0.10, 0.10, 0.10], (1, 1, 2, 2))]
    )
    target = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).reshape(2, 1, 2, 2)
    meter = SaliencyMeter()
    meter.update(pred, target)
    out = meter.compute()
    assert out["mIoU"] == pytest.approx(75.0)
    assert out["mIoU_threshold"] == pytest.approx(0.65)
    assert out["maxF"] == pytest.approx(50.0)
    assert out["maxF_threshold"] == pytest.approx(0.35)
    iou_per_threshold = meter.state_tensors()[0] / 2
    expected = [1 / 3] * 3 + [1 / 2] * 5 + [1 / 4] + [3 / 4] * 6
    assert iou_per_threshold.tolist() == pytest.approx(expected)


def test_saliency_thresholds_are_the_reference_ones() -> None:
    assert SAL_THRESHOLDS == pytest.approx(tuple(np.linspace(0.2, 0.9, 15)))


def test_saliency_matches_numpy_reference_loop() -> None:
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(4, 1, 6, 6, generator=g) * 2
    target = (torch.rand(4, 1, 6, 6, generator=g) > 0.6).float()
    target[3] = 0.0
    meter = SaliencyMeter()
    meter.update(pred, target)
    prob, gt = torch.sigmoid(pred).squeeze(1).numpy(), target.squeeze(1).numpy().astype(bool)
    ious, precs, recs = np.zeros((4, 15)), np.zeros((4, 15)), np.zeros((4, 15))
    for j, t in enumerate(np.linspace(0.2, 0.9, 15)):
        for i in range(4):
            m = prob[i] > t
            tp, fp, fn = (m & gt[i]).sum(), (m & ~gt[i]).sum(), (~m & gt[i]).sum()
            ious[i, j] = 1.0 if not (m.any() or gt[i].any()) else tp / (m | gt[i]).sum()
            precs[i, j], recs[i, j] = tp / (tp + fp + 1e-12), tp / (tp + fn + 1e-12)
    p, r = precs.mean(0), recs.mean(0)
    f = 2 * p * r / (p + r + 1e-12)  # SaliencyMeterWithNoBeta
    out = meter.compute()
    assert out["mIoU"] == pytest.approx(100 * ious.mean(0).max(), rel=1e-9)
    assert out["maxF"] == pytest.approx(100 * f.max(), rel=1e-6)
    # SaliencyMeterWithBeta: it gets 255 * sigmoid(pred), divides by 255, squashes with a sigmoid again and pools
    squashed = torch.sigmoid(255 * torch.sigmoid(pred.squeeze(1)) / 255.0)
    tp, pp = torch.zeros(19), torch.zeros(19)
    for k, t in enumerate(torch.arange(0.05, 1, 0.05)):
        hit = (squashed >= t).long()
        tp[k], pp[k] = (hit * target.squeeze(1).long()).sum(), hit.sum()
    prec, rec = tp / pp, tp / target.sum()
    fb = 1.3 * prec * rec / (0.3 * prec + rec)
    fb[fb != fb] = 0
    assert out["beta_maxF"] == pytest.approx(100 * fb.max().item(), rel=1e-6)


def test_saliency_maxf_is_f1_and_beta_maxf_is_pooled_f03_by_hand() -> None:
    # one image, label positives with prob [.95 .93 .42 .32], negatives [.62 .52 .47 .22]; mask = prob > t
    #   t = .20        : tp 4 / pred 8  P 1/2  R 1    F1 2/3
    #   t = .25, .30   : tp 4 / pred 7  P 4/7  R 1    F1 8/11 = .7273   <- maxF
    #   t = .35, .40   : tp 3 / pred 6  P 1/2  R 3/4  F1 .6
    #   t = .45        : tp 2 / pred 5  P 2/5  R 1/2  F1 .4444
    #   t = .50        : tp 2 / pred 4  P 1/2  R 1/2  F1 .5
    #   t = .55, .60   : tp 2 / pred 3  P 2/3  R 1/2  F1 .5714
    #   t >= .65       : tp 2 / pred 2  P 1    R 1/2  F1 2/3,  F_0.3 = 1.3 * .5 / (.3 + .5) = .8125
    # beta_maxF thresholds sigmoid(prob) >= t, i.e. prob >= logit(t): t <= .55 -> all 8 (F_0.3 = .65 / 1.15),
    #   t = .60 -> prob >= .405 (P 1/2, R 3/4), t = .65 -> >= .619 (P 2/3, R 1/2), t = .70 -> >= .847 (P 1, R 1/2,
    #   F_0.3 .8125), t >= .75 -> none (0)  -> beta_maxF 81.25
    probs = [0.95, 0.93, 0.42, 0.32, 0.62, 0.52, 0.47, 0.22]
    pred = logits_of(probs, (1, 1, 2, 4))
    target = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]).reshape(1, 1, 2, 4)
    meter = SaliencyMeter()
    meter.update(pred, target)
    out = meter.compute()
    assert out["maxF"] == pytest.approx(100 * 8 / 11)
    assert out["maxF_threshold"] == pytest.approx(0.25)
    assert out["beta_maxF"] == pytest.approx(81.25)


# ---- normals ---------------------------------------------------------------------------------


def normals_case() -> tuple[torch.Tensor, torch.Tensor]:
    """Four valid pixels with errors 90, 0, 45 and 20 degrees, and one ignored pixel."""
    c, s = math.cos(math.radians(20)), math.sin(math.radians(20))
    pred = [(1, 0, 0), (0, 0, 2), (1, 1, 0), (c, s, 0), (1, 0, 0)]
    label = [(0, 1, 0), (0, 0, 1), (1, 0, 0), (1, 0, 0), (255, 255, 255)]
    as_map = lambda v: torch.tensor(v, dtype=torch.float32).T.reshape(1, 3, 1, 5)  # noqa: E731
    return as_map(pred), as_map(label)


def test_normals_known_angles() -> None:
    pred, label = normals_case()
    meter = NormalsMeter()
    meter.update(pred, label)
    out = meter.compute()
    assert out["mean"] == pytest.approx((90 + 0 + 45 + 20) / 4, abs=1e-4)
    assert out["rmse"] == pytest.approx(math.sqrt((8100 + 0 + 2025 + 400) / 4), abs=1e-4)
    assert out["median"] == pytest.approx((20 + 45) / 2, abs=0.01)  # numpy's median of {0, 20, 45, 90}
    assert out["11.25"] == pytest.approx(25.0)
    assert out["22.5"] == pytest.approx(50.0)
    assert out["30"] == pytest.approx(50.0)


def test_normals_exact_90_and_0_degrees_and_zero_prediction() -> None:
    meter = NormalsMeter()
    label = torch.tensor([0.0, 0.0, 1.0]).reshape(1, 3, 1, 1).expand(1, 3, 1, 3).contiguous()
    pred = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.0]]).reshape(1, 3, 1, 3)
    pred[0, 0, 0, 1] = 1.0
    # pixel 0: zero prediction -> 90 (acos(0) in the reference); pixel 1: (1,0,0) vs (0,0,1) -> 90;
    # pixel 2: (0,0,3) vs (0,0,1) -> 0
    meter.update(pred, label)
    angles = NormalsMeter.angles_degrees(pred, label)
    assert angles.flatten().tolist() == pytest.approx([90.0, 90.0, 0.0], abs=1e-5)
    assert meter.compute()["median"] == pytest.approx(90.0, abs=0.005)


def test_normals_small_angles_are_accurate() -> None:
    # 1e-4 rad = 0.0057296 deg; acos in float32 would return 0 or ~0.02 here
    pred = torch.tensor([1.0, 1e-4, 0.0]).reshape(1, 3, 1, 1)
    label = torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)
    assert NormalsMeter.angles_degrees(pred, label).item() == pytest.approx(math.degrees(1e-4), rel=1e-4)


def test_normals_median_from_histogram_matches_numpy() -> None:
    g = torch.Generator().manual_seed(5)
    pred, label = torch.randn(2, 3, 9, 9, generator=g), torch.randn(2, 3, 9, 9, generator=g)
    label = torch.nn.functional.normalize(label, dim=1)
    label[0, :, :3] = 255.0
    meter = NormalsMeter()
    meter.update(pred, label)
    valid = (label != 255).all(1)
    angles = NormalsMeter.angles_degrees(pred, label)[valid].double().numpy()
    out = meter.compute()
    assert out["median"] == pytest.approx(np.median(angles), abs=0.01)
    assert out["mean"] == pytest.approx(angles.mean(), rel=1e-9)


# ---- edge ------------------------------------------------------------------------------------


def edge_case() -> tuple[torch.Tensor, torch.Tensor]:
    """7x7: label edge = column 1; prediction column 2 at 0.9 (rows 0-3) / 0.3 (rows 4-6), one FP at 0.7."""
    prob = torch.full((7, 7), 0.001, dtype=torch.float64)
    prob[:4, 2], prob[4:, 2], prob[3, 6] = 0.9, 0.3, 0.7
    label = torch.zeros(1, 1, 7, 7)
    label[..., :, 1] = 1.0
    return torch.logit(prob).float().reshape(1, 1, 7, 7), label


def test_edge_f_measure_by_hand() -> None:
    # tolerance 1 px (disc). Label pixel (r,1) is matched by prediction (r,2); (4,1)-(3,2) is sqrt(2) away.
    #   t < 0.3      : 8 predicted, 7 near a label edge -> P 7/8; all 7 label pixels matched -> R 1; F 14/15
    #   0.3 <= t < 0.7: 5 predicted, 4 matched -> P 4/5; 4 of 7 label pixels matched -> F 2/3
    #   0.7 <= t < 0.9: P 1, R 4/7 -> F 8/11
    pred, label = edge_case()
    meter = EdgeMeter(tolerance_px=1)
    meter.update(pred, label)
    out = meter.compute()
    assert out["odsF"] == pytest.approx(100 * 14 / 15)
    assert out["odsF_threshold"] == pytest.approx(0.01)
    assert out["precision"] == pytest.approx(87.5) and out["recall"] == pytest.approx(100.0)
    assert out["loss"] == pytest.approx(balanced_bce_loss(pred, label, pos_weight=0.95).item(), rel=1e-6)


def test_edge_without_tolerance_a_one_pixel_shift_scores_zero() -> None:
    pred, label = edge_case()
    meter = EdgeMeter(tolerance_px=0)
    meter.update(pred, label)
    assert meter.compute()["odsF"] == 0.0


def disc(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def test_edge_matches_scipy_binary_dilation_per_threshold() -> None:
    g = torch.Generator().manual_seed(7)
    pred = torch.randn(2, 1, 12, 12, generator=g) * 3
    label = (torch.rand(2, 1, 12, 12, generator=g) > 0.85).float()
    meter = EdgeMeter(num_thresholds=9, tolerance_px=2)
    meter.update(pred, label)
    prob, gt = torch.sigmoid(pred.double())[:, 0].numpy(), label[:, 0].numpy().astype(bool)
    struct = disc(2)
    best = 0.0
    for t in np.linspace(0.01, 0.99, 9):
        e = prob > t
        near_gt = np.stack([ndimage.binary_dilation(x, struct) for x in gt])
        near_e = np.stack([ndimage.binary_dilation(x, struct) for x in e])
        p = (e & near_gt).sum() / max(e.sum(), 1)
        r = (gt & near_e).sum() / gt.sum()
        best = max(best, 2 * p * r / (p + r) if p + r > 0 else 0.0)
    assert meter.compute()["odsF"] == pytest.approx(100 * best)


# ---- summable state (DDP all_reduce contract) ------------------------------------------------


def random_batch(task: str, seed: int, num_classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, s = 3, 10
    if task == "semseg":
        target = torch.randint(0, num_classes, (b, s, s), generator=g)
        target[0, :2] = 255
        return torch.randn(b, num_classes, s, s, generator=g), target
    if task == "normals":
        target = torch.nn.functional.normalize(torch.randn(b, 3, s, s, generator=g), dim=1)
        target[1, :, 3:] = 255.0
        return torch.randn(b, 3, s, s, generator=g), target
    return torch.randn(b, 1, s, s, generator=g) * 2, (torch.rand(b, 1, s, s, generator=g) > 0.7).float()


def fresh(task: str) -> MetricAccumulator:
    return build_metrics([task], num_classes={"semseg": 5})[task]


def assert_same_results(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == pytest.approx(b[key], rel=1e-12), key


@pytest.mark.parametrize("task", ["semseg", "sal", "normals", "edge"])
def test_summed_states_equal_one_accumulator_over_both_batches(task: str) -> None:
    batches = [random_batch(task, seed) for seed in (1, 2)]
    whole, rank0, rank1, reduced = fresh(task), fresh(task), fresh(task), fresh(task)
    for pred, target in batches:
        whole.update(pred, target)
    rank0.update(*batches[0])
    rank1.update(*batches[1])
    summed = [x + y for x, y in zip(rank0.state_tensors(), rank1.state_tensors(), strict=True)]
    reduced.load_state_tensors(summed)
    assert_same_results(reduced.compute(), whole.compute())
    assert all(t.device.type == "cpu" and t.dtype in (torch.float64, torch.int64) for t in summed)


def test_reset_and_load_state_checks() -> None:
    meter = fresh("sal")
    meter.update(*random_batch("sal", 0))
    meter.reset()
    assert math.isnan(meter.compute()["mIoU"])
    with pytest.raises(ValueError, match="state tensors"):
        meter.load_state_tensors(meter.state_tensors()[:1])
    with pytest.raises(ValueError, match="shape"):
        meter.load_state_tensors([torch.zeros(2)] * len(meter.state_tensors()))


# ---- registry and primary metrics ------------------------------------------------------------


def test_build_metrics_registry_and_class_counts() -> None:
    meters = build_metrics(["semseg", "human_parts", "sal", "normals", "edge"], num_classes={"semseg": 5})
    assert list(meters) == ["semseg", "human_parts", "sal", "normals", "edge"]
    assert meters["semseg"].num_classes == 5 and meters["human_parts"].num_classes == 7
    assert build_metrics(["semseg"])["semseg"].num_classes == 21
    assert isinstance(meters["edge"], EdgeMeter) and isinstance(meters["normals"], NormalsMeter)
    for task, meter in meters.items():
        assert primary_metric(task).name in meter.compute()


@pytest.mark.parametrize(
    ("tasks", "num_classes", "match"),
    [(["depth"], None, "depth"), (["sal"], {"sal": 2}, "sal"), (["semseg"], {"semseg": 0}, "semseg")],
)
def test_build_metrics_rejects_bad_config(tasks: list[str], num_classes: dict | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_metrics(tasks, num_classes=num_classes)


def test_primary_metrics_and_directions() -> None:
    assert [primary_metric(t).name for t in ("semseg", "human_parts", "sal", "normals", "edge")] == [
        "mIoU",
        "mIoU",
        "mIoU",
        "mean",
        "odsF",
    ]
    assert lower_is_better_tasks(["semseg", "normals", "edge"]) == {"normals"}
    results = {"semseg": {"mIoU": 67.9, "pixel_acc": 90.0}, "normals": {"mean": 16.6, "median": 14.0}}
    assert primary_values(results) == {"semseg": 67.9, "normals": 16.6}
