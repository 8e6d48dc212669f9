"""Our statistics and timers: percentiles on known samples, a fake clock, warm-up not timed, synchronisation."""

import numpy as np
import pytest
import torch

from mtlora_deploy.profile.memory import CPU_METHOD, PeakMemory, memory_method
from mtlora_deploy.profile.timing import (
    LatencyStats,
    PerfCounterTimer,
    TimingPolicy,
    make_timer,
    percentile_min_samples,
    warm_up,
)
from tests.profile.fakes import FakeClock


def test_latency_stats_on_1_to_100():
    stats = LatencyStats.from_samples(range(1, 101))
    assert (stats.count, stats.min, stats.max) == (100, 1.0, 100.0)
    assert stats.median == 50.5 and stats.mean == 50.5
    assert stats.p90 == pytest.approx(90.1)  # 10 samples above it: reported
    assert stats.p95 is None and stats.p99 is None  # a p99 of 100 samples is one sample: not reported
    assert stats.throughput(8) == pytest.approx(8 * 1000 / 50.5)
    assert {"count", "min", "median", "mean", "p90", "p95", "p99", "max", "ci_low", "ci_high"} <= set(stats.to_dict())
    big = LatencyStats.from_samples(range(1, 1001))
    assert big.p95 == pytest.approx(950.05) and big.p99 == pytest.approx(990.01)


def test_percentiles_need_enough_samples():
    assert [percentile_min_samples(q) for q in (90, 95, 99)] == [100, 200, 1000]
    small = LatencyStats.from_samples([1.0] * 99, round_medians=[1.0] * 6)
    assert small.p90 is None and (small.ci_low, small.ci_high, small.rounds) == (1.0, 1.0, 6)


def test_the_median_is_the_median_over_rounds_and_lies_in_its_interval():
    """One slow round of ten (a stall): the pooled median of all calls moves, the median of round medians is the
    statistic the interval is about."""
    rounds = [[10.0, 10.2, 10.1]] * 5 + [[30.0, 31.0, 29.0]] * 4 + [[12.0, 12.0, 12.0]]
    samples = [s for r in rounds for s in r]
    stats = LatencyStats.from_samples(samples, [float(np.median(r)) for r in rounds])
    assert stats.median == 11.05 and stats.ci_low <= stats.median <= stats.ci_high
    assert (stats.min, stats.max, stats.count, stats.rounds) == (10.0, 31.0, 30, 10)


def test_calls_per_round_meet_the_duration_and_the_minimum():
    policy = TimingPolicy(warmup=1, duration_s=1.0, min_iterations=20, rounds=10)
    assert policy.calls_per_round(0.001) == 100  # 1 s / 10 rounds / 1 ms
    assert policy.calls_per_round(0.5) == 2  # slow call: the minimum count (20 over 10 rounds) wins
    assert TimingPolicy(duration_s=0.0, min_iterations=1, rounds=10).calls_per_round(0.1) == 1


def test_single_sample_and_empty():
    stats = LatencyStats.from_samples([2.5])
    assert stats.min == stats.median == stats.max == 2.5 and stats.p99 is None and stats.ci_low is None
    with pytest.raises(ValueError, match="empty sample"):
        LatencyStats.from_samples([])


def test_perf_counter_timer_with_a_fake_clock_skips_warmup_and_syncs():
    clock, durations = FakeClock(), iter([5.0, 5.0, 0.001, 0.003, 0.002])  # two slow warm-up calls, three timed
    syncs, calls = [], []

    def work():
        clock.advance(next(durations))
        calls.append(clock.now)

    timer = PerfCounterTimer(clock=clock, sync=lambda: syncs.append(len(calls)))
    samples = timer.time(work, iterations=3, warmup=2)
    assert samples == pytest.approx([1.0, 3.0, 2.0])  # milliseconds
    assert len(calls) == 5
    assert syncs == [2, 2, 3, 3, 4, 4, 5]  # after warm-up, then before and after every timed call
    assert LatencyStats.from_samples(samples).median == pytest.approx(2.0)


def test_no_timed_call_starts_at_or_after_until():
    clock = FakeClock(0.0)
    timer = PerfCounterTimer(clock=clock)
    samples = timer.run(lambda: clock.advance(0.3), calls=10, until=1.0)
    assert samples == pytest.approx([300.0] * 4) and clock.now == pytest.approx(1.2)  # 4th call started at 0.9


def test_warm_up_stops_at_until_and_returns_seconds_per_call():
    clock = FakeClock(0.0)
    assert warm_up(lambda: clock.advance(0.5), 10, lambda: None, clock, until=1.2) == pytest.approx(0.5)
    assert clock.now == pytest.approx(1.5)  # calls at 0, 0.5, 1.0; none at 1.5
    assert warm_up(lambda: clock.advance(2.0), 0, lambda: None, clock) == pytest.approx(2.0)  # one, to size rounds
    clock = FakeClock(5.0)
    assert warm_up(lambda: clock.advance(2.0), 10, lambda: None, clock, until=1.0) is None  # no time: no call
    assert clock.now == 5.0


def test_cpu_uses_perf_counter_and_no_in_process_memory():
    assert make_timer(torch.device("cpu")).name == "perf_counter"
    with PeakMemory(torch.device("cpu")) as memory:
        np.ones(2**20).sum()
    assert memory.peak_bytes is None  # a process's peak RSS only grows: in-process numbers would read 0
    assert "RSS" in CPU_METHOD and "subprocess" in memory_method(torch.device("cpu"), cpu_subprocess=True)
    assert "not measured" in memory_method(torch.device("cpu"))
