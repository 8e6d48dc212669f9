"""The median over rounds, its interval and the verdicts on data with a known answer; interleaved rounds on
predictors that spend time on a fake clock (exact, no sleeping)."""

import numpy as np
import pytest
import torch
from scipy.stats import quantile_test

from mtlora_deploy.errors import MTLoRAError
from mtlora_deploy.profile.rounds import measure_group
from mtlora_deploy.profile.runs import Candidate, RunSettings
from mtlora_deploy.profile.stats import (
    ADDS_TIME,
    BELOW_ZERO,
    FASTER,
    MET,
    MIN_ROUNDS,
    MISSED,
    NO_COST,
    SAME,
    SLOWER,
    TOO_FEW,
    UNDECIDED,
    UNPAIRED,
    cost_verdict,
    difference_estimate,
    median_estimate,
    median_interval,
    ratio_estimate,
    speed_verdict,
    target_verdict,
)
from mtlora_deploy.profile.timing import LatencyStats, TimingPolicy
from tests.profile.fakes import FakeClock, clocked_candidate


def _drifting_rounds(ratio: float, rounds: int = 12, seed: int = 0):
    """Round medians of two candidates under load that changes from round to round (shared by both)."""
    rng = np.random.default_rng(seed)
    load = 1.0 + rng.uniform(0.0, 1.5, rounds)  # a busy machine: up to 2.5x slower in some rounds
    fast = 10.0 * load * (1 + rng.normal(0, 0.01, rounds))
    return fast, fast * ratio * (1 + rng.normal(0, 0.01, rounds))


def _datasets(seed: int = 0):
    """Round medians as they come: skewed, heavy-tailed, with ties, outliers, few and many rounds."""
    rng = np.random.default_rng(seed)
    for n in range(MIN_ROUNDS, 31):
        yield rng.lognormal(3.0, 0.5, n)
        yield 20.0 + rng.pareto(1.5, n)  # a slow tail from other processes
        yield rng.integers(10, 13, n).astype(float)  # a coarse timer: ties
        yield np.r_[np.full(n - 1, 5.0), 500.0]  # one round hit by a stall


def test_every_median_lies_inside_its_interval():
    for values in _datasets():
        estimate = median_estimate(values)
        assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"], values
        assert estimate["value"] == np.median(values) and estimate["rounds"] == len(values)
        stats = LatencyStats.from_samples(np.repeat(values, 3), values)  # what a measurement reports
        assert stats.ci_low <= stats.median <= stats.ci_high and stats.median == estimate["value"]
    for a in _datasets(1):
        b = np.random.default_rng(2).permutation(a) * 1.3
        for estimate in (ratio_estimate(a, b), difference_estimate(a, b), ratio_estimate(a, b, scale=8.0)):
            assert estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"]


def test_interval_is_scipys_sign_test_interval():
    rng = np.random.default_rng(3)
    for n in (6, 7, 9, 10, 17, 40):
        values = rng.lognormal(2.0, 0.3, n)
        expected = quantile_test(values, q=1.0, p=0.5).confidence_interval(0.95)
        assert median_interval(values) == (expected.low, expected.high)


@pytest.mark.parametrize("rounds", [6, 9, 10])
def test_few_rounds_still_cover_the_true_median_95_percent_of_the_time(rounds):
    """Skewed round medians (lognormal, true median 20 ms): the interval holds the true median in >= 95% of 4000
    simulated profiles, where a percentile bootstrap of a median undercovers with this few rounds."""
    rng = np.random.default_rng(rounds)
    samples = 20.0 * rng.lognormal(0.0, 0.4, (4000, rounds))
    hits = [low <= 20.0 <= high for low, high in map(median_interval, samples)]
    assert np.mean(hits) >= 0.95


def test_the_estimate_does_not_sit_on_an_edge_of_its_interval():
    """Six distinct rounds: the median is strictly inside (the point that sat on its edge, 7.88x [2.39, 7.88], was
    the ratio of two pooled medians beside a percentile bootstrap of another statistic)."""
    rounds = np.array([2.4, 7.9, 3.1, 5.0, 6.2, 4.4])
    estimate = median_estimate(rounds)
    assert estimate["ci_low"] < estimate["value"] < estimate["ci_high"]
    assert (estimate["ci_low"], estimate["ci_high"]) == (2.4, 7.9)  # [min, max] of 6 rounds: 96.9% coverage


def test_below_six_rounds_there_is_no_interval_and_no_verdict():
    estimate = ratio_estimate([10.0, 11.0, 12.0, 10.5, 10.2], [5.0, 5.5, 6.0, 5.2, 5.1])
    assert estimate["value"] == pytest.approx(2.0, rel=0.02) and estimate["ci_low"] is None
    assert speed_verdict(estimate) == cost_verdict(estimate) == target_verdict(estimate, 3.0) == TOO_FEW
    assert LatencyStats.from_samples([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).ci_low is None
    with pytest.raises(ValueError, match="at least 6"):
        from mtlora_deploy.profile.stats import interval_ranks

        interval_ranks(5)


def test_paired_rounds_cancel_the_machine_load():
    fast, slow = _drifting_rounds(1.3)
    estimate = ratio_estimate(slow, fast)
    assert estimate["ci_low"] < 1.3 < estimate["ci_high"] and estimate["ci_high"] - estimate["ci_low"] < 0.05
    assert speed_verdict(estimate) == FASTER
    unpaired = ratio_estimate(slow, fast[:-1])  # rounds that were not interleaved: no interval, no verdict
    assert unpaired["ci_low"] is None and speed_verdict(unpaired) == UNPAIRED


def test_speed_verdicts():
    same_a, same_b = _drifting_rounds(1.0, seed=3)
    assert speed_verdict(ratio_estimate(same_b, same_a)) == SAME
    slow, fast = _drifting_rounds(0.8, seed=4)
    assert speed_verdict(ratio_estimate(fast, slow)) == SLOWER


def test_cost_verdicts_say_when_a_cost_is_below_zero():
    rng = np.random.default_rng(5)
    full = 10.0 * (1.0 + rng.uniform(0.0, 1.5, 12))
    noise = difference_estimate(full, full * (1 + rng.normal(0, 0.05, 12)))  # no real difference, 5% noise
    assert noise["ci_low"] < 0 < noise["ci_high"] and cost_verdict(noise) == NO_COST
    costs = difference_estimate(full, full * 0.8)  # without the task: 20% faster
    assert costs["ci_low"] > 0 and cost_verdict(costs) == ADDS_TIME
    negative = difference_estimate(full, full * 1.1 + 1.0)  # without the task: always slower
    assert negative["ci_high"] < 0 and cost_verdict(negative) == BELOW_ZERO


def test_target_verdicts_use_the_whole_interval():
    rounds = np.array([1.40, 1.42, 1.44, 1.46, 1.48, 1.50, 1.52])
    assert target_verdict(median_estimate(rounds), 1.60) == MET
    assert target_verdict(median_estimate(rounds), 1.30) == MISSED
    assert target_verdict(median_estimate(rounds), 1.45) == UNDECIDED


def test_interleaved_rounds_give_the_ratio_despite_drift():
    """The machine gets busier as the run goes on (+100% per second); B costs twice A per call. Rounds A B, B A,
    ... see nearly the same load, so each round's ratio is close to 2 and so is their median, in a tight interval."""
    clock = FakeClock()
    started = clock.now

    def drift(now):
        return 1.0 + (now - started)

    a = clocked_candidate(clock, "single_pass", 4.0, drift=drift)
    b = clocked_candidate(clock, "per_task", 8.0, drift=drift)
    settings = RunSettings(
        torch.device("cpu"), TimingPolicy(warmup=1, duration_s=0.0, min_iterations=8, rounds=8), clock=clock
    )
    notes = []
    fast, slow = measure_group([a, b], [1], settings, notes, (MTLoRAError,))
    assert fast.latency.count == slow.latency.count == 8 and len(fast.round_medians) == 8
    assert slow.latency.max > 1.05 * slow.latency.min  # the drift is real: later calls took longer
    estimate = ratio_estimate(slow.round_medians, fast.round_medians)
    assert 1.9 < estimate["ci_low"] <= estimate["value"] <= estimate["ci_high"] < 2.1
    assert speed_verdict(estimate) == FASTER and fast.gmac_per_image is None and notes == []


def test_a_candidate_that_fails_to_open_is_a_note():
    clock = FakeClock()

    def broken():
        raise MTLoRAError("cannot open this")

    ok = clocked_candidate(clock, "single_pass", 0.1)
    bad = Candidate("fake", "merged", "torch", "fp32", broken)
    settings = RunSettings(
        torch.device("cpu"), TimingPolicy(warmup=0, duration_s=0.0, min_iterations=2, rounds=2), clock=clock
    )
    notes = []
    (only,) = measure_group([ok, bad], [1], settings, notes, (MTLoRAError,))
    assert only.candidate is ok and any("cannot open this" in n for n in notes)
    crash = Candidate("fake", "merged", "torch", "fp32", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug is not hidden ...
        measure_group([ok, crash], [1], settings, [], (MTLoRAError,))
    notes = []
    measure_group([ok, crash], [1], settings, notes, (Exception,))  # ... unless asked to record it and go on
    assert any("ZeroDivisionError" in n for n in notes)


@pytest.mark.slow  # one spawned subprocess (imports torch and the toolkit)
def test_cpu_peak_rss_of_a_candidate_in_a_fresh_subprocess():
    from mtlora_deploy.profile.api import run_profile
    from tests.conftest import tiny_model

    report = run_profile(
        [("tiny", tiny_model(tasks=("sal",)).eval())],
        batches=[1, 4],
        comparisons=[],
        memory=True,
        duration=0.0,
        iterations=2,
        rounds=2,
        warmup=0,
        threads=1,
    )
    peaks = [m["peak_memory_bytes"] for m in report["measurements"]]
    assert all(p is not None and p > 2**20 for p in peaks) and peaks[1] >= peaks[0]  # weights + activations
    assert "subprocess" in report["run"]["memory_method"]
