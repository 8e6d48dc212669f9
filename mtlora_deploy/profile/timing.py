"""Timers and latency statistics.

GPU work is timed with CUDA events recorded around each call on the current stream (what the GPU spent, not
when Python returned), CPU work with ``time.perf_counter``; both synchronise before and after every timed
iteration, after untimed warm-up iterations, so each sample is one complete call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

PERCENTILES = (90, 95, 99)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (NumPy's default ``linear``)."""
    if not samples:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LatencyStats:
    """Latency summary in milliseconds over ``count`` timed iterations."""

    count: int
    min: float
    median: float
    mean: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Summarise per-iteration latencies (ms)."""
        samples = [float(s) for s in samples_ms]
        p90, p95, p99 = (percentile(samples, q) for q in PERCENTILES)
        return cls(len(samples), min(samples), percentile(samples, 50), sum(samples) / len(samples), p90, p95, p99,
                   max(samples))

    def throughput(self, batch: int) -> float:
        """Images per second at the median latency."""
        return batch * 1000.0 / self.median if self.median > 0 else float("inf")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class PerfCounterTimer:
    """Wall-clock timer (``time.perf_counter`` by default) with a synchronisation hook around each iteration."""

    name = "perf_counter"

    def __init__(self, clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] = lambda: None) -> None:
        self.clock, self.sync = clock, sync

    def time(self, fn: Callable[[], object], iterations: int, warmup: int = 0) -> list[float]:
        """Run ``fn`` ``warmup`` times untimed, then ``iterations`` times; return each latency in ms."""
        _warm_up(fn, warmup, self.sync)
        samples = []
        for _ in range(iterations):
            self.sync()
            start = self.clock()
            fn()
            self.sync()
            samples.append((self.clock() - start) * 1000.0)
        return samples


class CudaEventTimer:
    """GPU timer: a CUDA event pair around each call on the device's current stream, synchronised per sample."""

    name = "cuda_events"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object], iterations: int, warmup: int = 0) -> list[float]:
        """Like ``PerfCounterTimer.time``, with elapsed times read from CUDA events."""
        _warm_up(fn, warmup, self.sync)
        samples = []
        for _ in range(iterations):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.sync()
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(float(start.elapsed_time(end)))
        return samples


def _warm_up(fn: Callable[[], object], warmup: int, sync: Callable[[], None]) -> None:
    for _ in range(warmup):
        fn()
    sync()


def make_timer(device: torch.device) -> PerfCounterTimer | CudaEventTimer:
    """CUDA events on a GPU, ``perf_counter`` (with nothing to synchronise) on the CPU."""
    return CudaEventTimer(device) if device.type == "cuda" else PerfCounterTimer()
