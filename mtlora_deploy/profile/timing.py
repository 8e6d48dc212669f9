"""Timers and latency statistics.

GPU work is timed with CUDA events recorded around each call on the current stream (what the GPU spent, not
when Python returned), CPU work with ``time.perf_counter``; both synchronise before and after every timed
call, so each sample is one complete call. How long to measure follows trtexec and pyperf: untimed warm-up
calls, then timed calls for a duration with a minimum count, in interleaved rounds (see ``runs``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

PERCENTILES = (90, 95, 99)
TAIL_SAMPLES = 10
"""A percentile is reported only with at least this many samples above it (p90: n >= 100, p99: n >= 1000)."""


def percentile_min_samples(q: float) -> int:
    """The smallest sample count for which the q-th percentile is printed."""
    return math.ceil(TAIL_SAMPLES / (1.0 - q / 100.0) - 1e-9)


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary in milliseconds over ``count`` timed calls.

    ``median`` is the median over rounds of the per-round medians (``stats.STATISTIC``; with no rounds given, the
    median of all calls) and ``ci_low``/``ci_high`` its 95% interval (None below ``stats.MIN_ROUNDS`` rounds):
    the median always lies inside its interval. ``min``, ``mean``, ``max`` and the percentiles describe all calls;
    ``p90``/``p95``/``p99`` are None when ``count`` is below ``percentile_min_samples`` (a p99 from 10 calls is the
    maximum under another name).
    """

    count: int
    min: float
    median: float
    mean: float
    max: float
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    rounds: int = 1

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float], round_medians: Sequence[float] = ()) -> LatencyStats:
        """Summarise per-call latencies (ms); ``round_medians`` (one per interleaved round) give the median and
        its interval."""
        from mtlora_deploy.profile.stats import median_estimate

        samples = [float(s) for s in samples_ms]
        n = len(samples)
        if not n:
            raise ValueError("latency statistics of an empty sample")
        # NumPy's default percentile: linear interpolation between closest ranks
        tails = {
            f"p{q}": float(np.percentile(samples, q)) if n >= percentile_min_samples(q) else None for q in PERCENTILES
        }
        if len(round_medians):
            estimate = median_estimate(round_medians)
            median, low, high = estimate["value"], estimate["ci_low"], estimate["ci_high"]
        else:
            median, low, high = float(np.median(samples)), None, None
        return cls(
            n,
            min(samples),
            median,
            sum(samples) / n,
            max(samples),
            **tails,
            ci_low=low,
            ci_high=high,
            rounds=max(1, len(round_medians)),
        )

    def throughput(self, batch: int) -> float:
        """Images per second at the median latency."""
        return batch * 1000.0 / self.median if self.median > 0 else float("inf")

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "min": self.min,
            "median": self.median,
            "mean": self.mean,
            "max": self.max,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "rounds": self.rounds,
        }


@dataclass(frozen=True)
class TimingPolicy:
    """How long each (candidate, batch) is timed.

    Attributes:
        warmup: untimed calls after the (also untimed) first call; they also estimate the call's duration.
        duration_s: timed seconds per (candidate, batch), split evenly over the rounds.
        min_iterations: timed calls per (candidate, batch) at least, however slow a call is.
        rounds: interleaved rounds (A B ... B A): one median per round is the unit of the intervals.
    """

    warmup: int = 10
    duration_s: float = 1.0
    min_iterations: int = 10
    rounds: int = 10

    def calls_per_round(self, seconds_per_call: float) -> int:
        """Timed calls in each round: enough for ``duration_s`` and ``min_iterations`` over all rounds."""
        by_count = math.ceil(self.min_iterations / self.rounds)
        by_time = math.ceil(self.duration_s / self.rounds / seconds_per_call) if seconds_per_call > 0 else 1
        return max(1, by_count, min(by_time, 100_000))

    def plan(self, seconds_per_call: Sequence[float], seconds: float | None = None) -> tuple[int, list[int]]:
        """Rounds and timed calls per round for each arm of a group (one per entry of ``seconds_per_call``).

        Without ``seconds``: ``rounds`` and ``calls_per_round``. When that plan would take longer than
        ``seconds``, the calls per round shrink first by one factor for every arm (down to one call each: rounds
        are what the intervals stand on), then the rounds (down to one): arms are never dropped.
        """
        rounds, calls = self.rounds, [self.calls_per_round(t) for t in seconds_per_call]
        if seconds is None:
            return rounds, calls
        seconds = max(0.0, seconds)
        per_round = sum(c * t for c, t in zip(calls, seconds_per_call, strict=True))
        if rounds * per_round <= seconds:
            return rounds, calls
        factor = seconds / (rounds * per_round)
        calls = [max(1, math.floor(c * factor)) for c in calls]
        per_round = sum(c * t for c, t in zip(calls, seconds_per_call, strict=True))
        fits = math.floor(seconds / per_round) if per_round > 0 else rounds
        return max(1, min(rounds, fits)), calls


Clock = Callable[[], float]


class PerfCounterTimer:
    """Wall-clock timer (``time.perf_counter`` by default) with a synchronisation hook around each call."""

    name = "perf_counter"

    def __init__(self, clock: Clock = time.perf_counter, sync: Callable[[], None] = lambda: None) -> None:
        self.clock, self.sync = clock, sync

    def run(self, fn: Callable[[], object], calls: int, until: float | None = None) -> list[float]:
        """Time ``calls`` calls of ``fn`` one by one (each latency in ms); none starts at or after ``until``."""
        samples = []
        for _ in range(calls):
            if until is not None and self.clock() >= until:
                break
            self.sync()
            start = self.clock()
            fn()
            self.sync()
            samples.append((self.clock() - start) * 1000.0)
        return samples

    def time(self, fn: Callable[[], object], iterations: int, warmup: int = 0) -> list[float]:
        """Run ``fn`` ``warmup`` times untimed, then ``iterations`` times; return each latency in ms."""
        _warm_up(fn, warmup, self.sync)
        return self.run(fn, iterations)


class CudaEventTimer:
    """GPU timer: a CUDA event pair around each call on the device's current stream, synchronised per sample.

    ``clock`` (host wall clock) only decides whether another call may start before ``until``.
    """

    name = "cuda_events"

    def __init__(self, device: torch.device, clock: Clock = time.perf_counter) -> None:
        self.device, self.clock = device, clock

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def run(self, fn: Callable[[], object], calls: int, until: float | None = None) -> list[float]:
        """Like ``PerfCounterTimer.run``, with elapsed times read from CUDA events."""
        samples = []
        for _ in range(calls):
            if until is not None and self.clock() >= until:
                break
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.sync()
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
        return samples

    def time(self, fn: Callable[[], object], iterations: int, warmup: int = 0) -> list[float]:
        """Run ``fn`` ``warmup`` times untimed, then ``iterations`` times; return each latency in ms."""
        _warm_up(fn, warmup, self.sync)
        return self.run(fn, iterations)


def _warm_up(fn: Callable[[], object], warmup: int, sync: Callable[[], None]) -> None:
    for _ in range(warmup):
        fn()
    sync()


def warm_up(
    fn: Callable[[], object],
    calls: int,
    sync: Callable[[], None],
    clock: Clock = time.perf_counter,
    until: float | None = None,
) -> float | None:
    """Run up to ``calls`` untimed calls (one at least, to size the rounds), none starting at or after ``until``;
    return the seconds one call took (wall clock, synchronised), None when ``until`` left room for none."""
    sync()
    start, done = clock(), 0
    while done < max(1, calls) and (until is None or clock() < until):
        fn()
        done += 1
    sync()
    return (clock() - start) / done if done else None


def make_timer(device: torch.device, clock: Clock = time.perf_counter) -> PerfCounterTimer | CudaEventTimer:
    """CUDA events on a GPU, ``clock`` (``perf_counter``; nothing to synchronise) on the CPU."""
    return CudaEventTimer(device, clock) if device.type == "cuda" else PerfCounterTimer(clock)
