"""Shared pieces of the task meters: summable state, constants and small tensor helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

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
        for (name, current), new in zip(self._state.items(), tensors, strict=True):
            if tuple(new.shape) != tuple(current.shape):
                raise ValueError(
                    f"{type(self).__name__}: state '{name}' has shape {tuple(current.shape)}, got {tuple(new.shape)}"
                )
            self._state[name] = new.detach().to("cpu", current.dtype).clone()

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch of predictions (logits) and labels."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Metrics from the accumulated states (NaN when nothing valid was seen)."""
