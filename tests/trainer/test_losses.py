"""Per-task losses against values worked out by hand and against the reference formulas."""

from __future__ import annotations

import math

import pytest
import torch

from mtlora_deploy.errors import ConfigError
from mtlora_deploy.trainer.losses import (
    DEFAULT_LOSS_WEIGHTS,
    MultiTaskLoss,
    balanced_bce_loss,
    cross_entropy_loss,
    normals_l1_loss,
)

LN2 = math.log(2.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def reference_balanced_bce(output: torch.Tensor, label: torch.Tensor, pos_weight: float | None) -> torch.Tensor:
    """The MTI-Net / MTLoRA ``BalancedCrossEntropyLoss(size_average=True)`` forward, transcribed."""
    labels = torch.ge(label, 0.5).float()
    if pos_weight is None:
        w = torch.sum(1.0 - labels) / labels.numel()
    else:
        w = pos_weight
    gt_zero = torch.ge(output, 0).float()
    loss_val = output * (labels - gt_zero) - torch.log(1 + torch.exp(output - 2 * output * gt_zero))
    loss_pos = torch.sum(-labels * loss_val)
    loss_neg = torch.sum(-(1.0 - labels) * loss_val)
    return (w * loss_pos + (1 - w) * loss_neg) / float(label.numel())


# ---- cross-entropy ---------------------------------------------------------------------------


def test_cross_entropy_hand_value_and_ignore() -> None:
    # pixel 0: logits (0, 0), label 0 -> ln 2; pixel 1: logits (ln 3, 0), label 1 -> -ln(1/4) = ln 4;
    # pixel 2 is ignored. Mean over the two valid pixels = 1.5 ln 2.
    logits = torch.tensor([[0.0, math.log(3.0), 5.0], [0.0, 0.0, -5.0]]).reshape(1, 2, 1, 3)
    label = torch.tensor([[[0, 1, 255]]])
    assert cross_entropy_loss(logits, label).item() == pytest.approx(1.5 * LN2, rel=1e-6)
    assert cross_entropy_loss(logits, label[:, None]).item() == pytest.approx(1.5 * LN2, rel=1e-6)


def test_cross_entropy_matches_torch_mean_when_valid() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, 4, generator=g)
    label = torch.randint(0, 5, (2, 4, 4), generator=g)
    label[0, 0] = 255
    expected = torch.nn.functional.cross_entropy(logits, label, ignore_index=255)
    assert cross_entropy_loss(logits, label).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_grad() -> None:
    logits = torch.randn(2, 7, 3, 3, requires_grad=True)
    label = torch.full((2, 3, 3), 255)
    loss = cross_entropy_loss(logits, label)
    assert loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


# ---- normals ---------------------------------------------------------------------------------


def test_normals_l1_hand_value() -> None:
    # pixel A: pred (2,0,0) -> (1,0,0) vs label (0,1,0): |1|+|-1|+0 = 2
    # pixel B: label 255 everywhere -> ignored
    # pixel C: pred (0,0,5) -> (0,0,1) vs label (0,0,1): 0
    # sum 2 over 6 valid elements (2 pixels x 3 channels) = 1/3
    pred = torch.tensor([[2.0, 7.0, 0.0], [0.0, 7.0, 0.0], [0.0, 7.0, 5.0]]).reshape(1, 3, 1, 3)
    label = torch.tensor([[0.0, 255.0, 0.0], [1.0, 255.0, 0.0], [0.0, 255.0, 1.0]]).reshape(1, 3, 1, 3)
    assert normals_l1_loss(pred, label).item() == pytest.approx(1.0 / 3.0, rel=1e-6)


def test_normals_all_ignored_is_zero_with_grad() -> None:
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = normals_l1_loss(pred, torch.full((1, 3, 2, 2), 255.0))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(pred.grad == 0)


# ---- balanced BCE ----------------------------------------------------------------------------


def test_sal_balanced_bce_hand_value() -> None:
    # logits x = [2, -1, 0, 1], labels [1, 0, 0, 1]: 2 positives, 2 negatives -> w = #neg/#all = 0.5
    # positives: softplus(-2), softplus(-1); negatives: softplus(-1), softplus(0) = ln 2
    logits = torch.tensor([2.0, -1.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    label = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    expected = (0.5 * (softplus(-2) + softplus(-1)) + 0.5 * (softplus(-1) + LN2)) / 4
    assert balanced_bce_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_sal_weight_is_negative_fraction_of_batch() -> None:
    # zero logits: every pixel costs ln 2; 1 positive of 4 -> w = 3/4 on it, 1/4 on each negative
    logits = torch.zeros(1, 1, 2, 2)
    label = torch.tensor([1.0, 0.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    expected = (0.75 * LN2 + 0.25 * 3 * LN2) / 4
    assert balanced_bce_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_edge_fixed_positive_weight_hand_value() -> None:
    logits = torch.tensor([2.0, -1.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    label = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 2, 2)
    expected = (0.95 * (softplus(-2) + softplus(-1)) + 0.05 * (softplus(-1) + LN2)) / 4
    assert balanced_bce_loss(logits, label, pos_weight=0.95).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("pos_weight", [None, 0.95])
def test_balanced_bce_matches_reference_formula(pos_weight: float | None) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 8, 8, generator=g) * 4
    label = (torch.rand(3, 1, 8, 8, generator=g) > 0.8).float()
    ours = balanced_bce_loss(logits, label, pos_weight=pos_weight)
    assert ours.item() == pytest.approx(reference_balanced_bce(logits, label, pos_weight).item(), rel=1e-5)


def test_balanced_bce_ignores_255_and_stays_finite() -> None:
    logits = torch.tensor([2.0, -1.0, 0.0, 1.0, 9.0]).reshape(1, 1, 1, 5)
    label = torch.tensor([1.0, 0.0, 0.0, 1.0, 255.0]).reshape(1, 1, 1, 5)
    # same sums as the 4-pixel case (w = 2/4), divided by all 5 elements
    expected = (0.5 * (softplus(-2) + softplus(-1)) + 0.5 * (softplus(-1) + LN2)) / 5
    assert balanced_bce_loss(logits, label).item() == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(balanced_bce_loss(logits, torch.full_like(label, 255.0)))
    assert balanced_bce_loss(logits, torch.zeros_like(label)).item() == 0.0  # all negative: w = 1


# ---- multi-task sum --------------------------------------------------------------------------


def tiny_batch(size: int = 4, seed: int = 0, parts_ignored: bool = False) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(2, 3, size, size, generator=g), dim=1)
    normals[:, :, 0, 0] = 255.0
    parts = torch.randint(0, 7, (2, size, size), generator=g)
    batch = {
        "semseg": torch.randint(0, 21, (2, size, size), generator=g),
        "human_parts": torch.full_like(parts, 255) if parts_ignored else parts,
        "sal": (torch.rand(2, 1, size, size, generator=g) > 0.5).float(),
        "normals": normals,
        "edge": (torch.rand(2, 1, size, size, generator=g) > 0.9).float(),
    }
    channels = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3, "edge": 1}
    outputs = {t: torch.randn(2, c, size, size, generator=g, requires_grad=True) for t, c in channels.items()}
    return outputs, batch


def test_multitask_total_is_weighted_sum_of_task_losses() -> None:
    outputs, batch = tiny_batch()
    criterion = MultiTaskLoss(list(outputs))
    total, losses = criterion(outputs, batch)
    assert set(losses) == set(outputs)
    assert criterion.weights == dict(DEFAULT_LOSS_WEIGHTS)
    expected = sum(DEFAULT_LOSS_WEIGHTS[t] * losses[t].item() for t in losses)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert losses["edge"].item() == pytest.approx(balanced_bce_loss(outputs["edge"], batch["edge"], 0.95).item())


def test_multitask_weights_override_and_subset() -> None:
    outputs, batch = tiny_batch()
    criterion = MultiTaskLoss(["semseg", "normals"], weights={"normals": 3.0})
    total, losses = criterion(outputs, batch)
    assert set(losses) == {"semseg", "normals"}
    assert total.item() == pytest.approx(losses["semseg"].item() + 3.0 * losses["normals"].item(), rel=1e-6)


def test_multitask_all_ignored_parts_is_finite_and_backpropagates() -> None:
    outputs, batch = tiny_batch(parts_ignored=True)
    total, losses = MultiTaskLoss(list(outputs))(outputs, batch)
    assert losses["human_parts"].item() == 0.0 and torch.isfinite(total)
    total.backward()
    assert torch.all(outputs["human_parts"].grad == 0)
    assert outputs["semseg"].grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("tasks", "weights", "match"),
    [
        ([], None, "at least one task"),
        (["depth"], None, "depth"),
        (["semseg"], {"sal": 1.0}, "sal"),
        (["semseg"], {"semseg": -1.0}, "semseg"),
        (["semseg"], {"semseg": math.inf}, "semseg"),
    ],
)
def test_multitask_rejects_bad_config(tasks: list[str], weights: dict | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MultiTaskLoss(tasks, weights)
