"""The one statistic a profile reports, its 95% interval and the verdicts, for latencies measured in rounds.

Every number is a **median over rounds**: a latency is the median of the per-round median call times; a ratio
(or a difference) of two candidates is the median of the per-round ratios (differences) of their round medians.
Rounds of one group ran back to back (A B ... B A), so they pair up: machine load that slows a whole round cancels
out of that round's ratio instead of widening the interval (or faking a difference).

The interval is the distribution-free one of a median (the sign-test interval, ``scipy.stats.quantile_test``):
the order statistics ``[x_(k), x_(n+1-k)]`` with the smallest ``k`` whose binomial coverage is at least 95%. It
holds for any distribution of round medians, its coverage is exact rather than asymptotic, it always contains the
median it is about (``k <= n / 2``), and it does not exist below six rounds (``[min, max]`` of five rounds covers
93.75%): there a profile says "too few rounds" instead of an interval and a verdict. A percentile bootstrap of a
median, by contrast, can only return order statistics too, but with less than the stated coverage for few rounds
(five rounds: the same ``[min, max]`` called 95%), and BCa's jackknife degenerates for a median.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
MIN_ROUNDS = 6
"""The fewest rounds with a 95% interval of a median: the [min, max] of n rounds covers 1 - 2 / 2**n."""
STATISTIC = (
    "median over rounds (a latency: of the per-round median call times; a ratio or difference: of the per-round "
    "ratios or differences, rounds paired), 95% distribution-free interval of that median (sign test, "
    f"scipy.stats.quantile_test); intervals and verdicts need >= {MIN_ROUNDS} rounds"
)
FASTER, SLOWER, SAME = "faster", "slower", "no difference"
TOO_FEW = "too few rounds"
UNPAIRED = "rounds not paired"
ADDS_TIME, NO_COST, BELOW_ZERO = "adds time", "no measurable cost", "below zero"
MET, MISSED, UNDECIDED = "target met", "target missed", "undecided"


@functools.cache
def interval_ranks(n: int) -> tuple[int, int]:
    """The 0-based ranks (in sorted order) of the interval's ends for ``n`` values: the order statistics that
    ``scipy.stats.quantile_test`` returns (they depend on ``n`` only, so they are worked out once per ``n``)."""
    from scipy.stats import quantile_test

    if n < MIN_ROUNDS:
        raise ValueError(f"a 95% interval of a median needs at least {MIN_ROUNDS} values, got {n}")
    interval = quantile_test(np.arange(n, dtype=float), q=0.0, p=0.5).confidence_interval(CONFIDENCE)
    return int(interval.low), int(interval.high)


def median_interval(values: Sequence[float]) -> tuple[float, float] | tuple[None, None]:
    """95% distribution-free interval of the median of ``values``; (None, None) below ``MIN_ROUNDS`` values."""
    data = np.sort(np.asarray(values, dtype=float))
    if len(data) < MIN_ROUNDS:
        return None, None
    low, high = interval_ranks(len(data))
    return float(data[low]), float(data[high])


def median_estimate(values: Sequence[float]) -> dict[str, Any]:
    """``value`` (the median of ``values``), its 95% interval (``ci_low``/``ci_high``, None below ``MIN_ROUNDS``)
    and ``rounds``."""
    data = np.asarray(values, dtype=float)
    low, high = median_interval(data)
    return {"value": float(np.median(data)), "ci_low": low, "ci_high": high, "rounds": len(data)}


def _paired(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and len(a) > 0


def ratio_estimate(numerator: Sequence[float], denominator: Sequence[float], scale: float = 1.0) -> dict[str, Any]:
    """Median over paired rounds of ``scale * numerator_i / denominator_i`` with its interval.

    Round lists of different lengths were not interleaved: the ratio of their medians, without an interval.
    """
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if not _paired(a, b):
        return {"value": scale * float(np.median(a) / np.median(b)), "ci_low": None, "ci_high": None, "rounds": 0}
    return median_estimate(scale * a / b)


def difference_estimate(minuend: Sequence[float], subtrahend: Sequence[float]) -> dict[str, Any]:
    """Median over paired rounds of ``minuend_i - subtrahend_i`` (ms) with its interval (unpaired: see ratio)."""
    a, b = np.asarray(minuend, dtype=float), np.asarray(subtrahend, dtype=float)
    if not _paired(a, b):
        return {"value": float(np.median(a) - np.median(b)), "ci_low": None, "ci_high": None, "rounds": 0}
    return median_estimate(a - b)


def _undecided(estimate: dict[str, Any]) -> str | None:
    if estimate["ci_low"] is not None:
        return None
    return UNPAIRED if estimate["rounds"] == 0 else TOO_FEW


def speed_verdict(estimate: dict[str, Any]) -> str:
    """For a speedup (baseline time / subject time): faster when the whole interval is above 1, slower below."""
    if (verdict := _undecided(estimate)) is not None:
        return verdict
    if estimate["ci_low"] > 1.0:
        return FASTER
    return SLOWER if estimate["ci_high"] < 1.0 else SAME


def cost_verdict(estimate: dict[str, Any]) -> str:
    """For a cost (ms that a part adds): it adds time when the whole interval is above zero, and is below zero
    (the model is faster with the part than without it) when the whole interval is below."""
    if (verdict := _undecided(estimate)) is not None:
        return verdict
    if estimate["ci_low"] > 0.0:
        return ADDS_TIME
    return BELOW_ZERO if estimate["ci_high"] < 0.0 else NO_COST


def target_verdict(estimate: dict[str, Any], limit: float | None) -> str:
    """For a ratio that should stay at or below ``limit``: met when the whole interval is, missed when it is all
    above, else undecided."""
    if (verdict := _undecided(estimate)) is not None or limit is None:
        return verdict or UNDECIDED
    if estimate["ci_high"] <= limit:
        return MET
    return MISSED if estimate["ci_low"] > limit else UNDECIDED
