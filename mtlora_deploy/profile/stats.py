"""Bootstrap intervals and verdicts for latencies measured in interleaved rounds.

The resampled unit is the round: one median per candidate per round. Rounds of two candidates in the same group
ran back to back (A B ... B A), so they are resampled in pairs; machine load that slows a whole round then
cancels out of a ratio instead of widening it (or, without pairing, faking a difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
FASTER, SLOWER, SAME = "faster", "slower", "no measurable difference"
BELOW_NOISE = "below the noise"


def _bootstrap(statistic, data: tuple[np.ndarray, ...], paired: bool) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if all(np.ptp(d) == 0 for d in data):  # no spread: every resample gives the point value
        value = float(statistic(*data, axis=-1))
        return value, value
    result = bootstrap(
        data,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(values, axis=axis)


def median_interval(round_medians: Sequence[float]) -> tuple[float, float]:
    """95% bootstrap interval of the median latency over the per-round medians."""
    return _bootstrap(_median, (np.asarray(round_medians, dtype=float),), paired=False)


def ratio_estimate(numerator: Sequence[float], denominator: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """``scale * median(numerator) / median(denominator)`` over round medians with its 95% interval.

    Rounds are paired when both sides have the same number of rounds (they were interleaved), else resampled
    independently.
    """
    a, b = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)

    def statistic(x, y, axis=-1):
        return scale * np.median(x, axis=axis) / np.median(y, axis=axis)

    value = float(statistic(a, b))
    low, high = _bootstrap(statistic, (a, b), paired=len(a) == len(b)) if min(len(a), len(b)) > 1 else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high}


def difference_estimate(minuend: Sequence[float], subtrahend: Sequence[float]) -> dict[str, float]:
    """``median(minuend) - median(subtrahend)`` (ms) over round medians with its 95% interval (paired rounds)."""
    a, b = np.asarray(minuend, dtype=float), np.asarray(subtrahend, dtype=float)

    def statistic(x, y, axis=-1):
        return np.median(x, axis=axis) - np.median(y, axis=axis)

    value = float(statistic(a, b))
    low, high = _bootstrap(statistic, (a, b), paired=len(a) == len(b)) if min(len(a), len(b)) > 1 else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high}


def speed_verdict(ci_low: float | None, ci_high: float | None) -> str:
    """For a speedup (baseline time / subject time): faster when the whole interval is above 1, slower below."""
    if ci_low is None or ci_high is None:
        return "not tested (one round)"
    if ci_low > 1.0:
        return FASTER
    if ci_high < 1.0:
        return SLOWER
    return SAME


def cost_verdict(ci_low: float | None) -> str:
    """For a cost (ms that a part adds): measurable only when its whole interval is above zero."""
    if ci_low is None:
        return "not tested (one round)"
    return "measurable" if ci_low > 0 else BELOW_NOISE
