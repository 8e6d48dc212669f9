"""Bootstrap intervals and verdicts on data with a known answer; interleaved rounds on fake predictors."""

import time

import numpy as np
import pytest
import torch

from mtlora_deploy.errors import MTLoRAError
from mtlora_deploy.profile.runs import Candidate, RunSettings, measure_group
from mtlora_deploy.profile.stats import (
    BELOW_NOISE,
    FASTER,
    SAME,
    SLOWER,
    cost_verdict,
    difference_estimate,
    median_interval,
    ratio_estimate,
    speed_verdict,
)
from mtlora_deploy.profile.timing import TimingPolicy


def _drifting_rounds(ratio: float, rounds: int = 12, seed: int = 0):
    """Round medians of two candidates under load that changes from round to round (shared by both)."""
    rng = np.random.default_rng(seed)
    load = 1.0 + rng.uniform(0.0, 1.5, rounds)  # a busy machine: up to 2.5x slower in some rounds
    fast = 10.0 * load * (1 + rng.normal(0, 0.01, rounds))
    return fast, fast * ratio * (1 + rng.normal(0, 0.01, rounds))


def test_paired_rounds_cancel_the_machine_load():
    fast, slow = _drifting_rounds(1.3)
    estimate = ratio_estimate(slow, fast)
    assert estimate["ci_low"] < 1.3 < estimate["ci_high"] and estimate["ci_high"] - estimate["ci_low"] < 0.1
    assert speed_verdict(estimate["ci_low"], estimate["ci_high"]) == FASTER
    unpaired = ratio_estimate(slow, fast[:-1])  # different round counts: resampled independently, much wider
    assert unpaired["ci_high"] - unpaired["ci_low"] > 3 * (estimate["ci_high"] - estimate["ci_low"])


def test_verdicts():
    assert speed_verdict(1.05, 1.2) == FASTER and speed_verdict(0.7, 0.9) == SLOWER
    assert speed_verdict(0.95, 1.1) == SAME and speed_verdict(None, None).startswith("not tested")
    same_a, same_b = _drifting_rounds(1.0, seed=3)
    estimate = ratio_estimate(same_b, same_a)
    assert speed_verdict(estimate["ci_low"], estimate["ci_high"]) == SAME


def test_a_cost_whose_interval_reaches_zero_is_below_the_noise():
    rng = np.random.default_rng(5)
    full = 10.0 * (1.0 + rng.uniform(0.0, 1.5, 12))
    without = full * (1 + rng.normal(0, 0.05, 12))  # no real difference, 5% noise per round
    estimate = difference_estimate(full, without)
    assert estimate["ci_low"] < 0 < estimate["ci_high"] and cost_verdict(estimate["ci_low"]) == BELOW_NOISE
    full, without = _drifting_rounds(0.8, seed=5)  # "without" is 20% cheaper: a real cost
    estimate = difference_estimate(without / 0.8, without)
    assert estimate["ci_low"] > 0 and cost_verdict(estimate["ci_low"]) == "measurable"


def test_median_interval_covers_the_median_and_collapses_without_spread():
    low, high = median_interval([9.0, 10.0, 11.0, 10.5, 9.5, 10.2])
    assert low <= 10.1 <= high
    assert median_interval([4.0, 4.0, 4.0]) == (4.0, 4.0)


class SleepyPredictor:
    """Sleeps ``ms`` per call, longer and longer as the run goes on (a machine getting busier)."""

    image_size = 4

    def __init__(self, ms: float, started: float) -> None:
        self.ms, self.started = ms, started

    def infer(self, images):
        drift = 1.0 + (time.perf_counter() - self.started)  # +100% per second
        time.sleep(self.ms * drift / 1000.0)
        return {"out": images}

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": "fake"}


def test_interleaved_rounds_give_the_ratio_despite_drift():
    started = time.perf_counter()
    a = Candidate("fake", "single_pass", "torch", "fp32", lambda: SleepyPredictor(4.0, started))
    b = Candidate("fake", "per_task", "torch", "fp32", lambda: SleepyPredictor(8.0, started))
    settings = RunSettings(torch.device("cpu"), TimingPolicy(warmup=1, duration_s=0.0, min_iterations=8, rounds=8))
    notes = []
    fast, slow = measure_group([a, b], [1], settings, notes, (MTLoRAError,))
    assert fast.latency.count == slow.latency.count == 8 and len(fast.round_medians) == 8
    estimate = ratio_estimate(slow.round_medians, fast.round_medians)
    assert 1.6 < estimate["value"] < 2.2 and speed_verdict(estimate["ci_low"], estimate["ci_high"]) == FASTER
    assert fast.gmac_per_image is None and notes == []


def test_a_candidate_that_fails_to_open_is_a_note():
    def broken():
        raise MTLoRAError("cannot open this")

    ok = Candidate("fake", "single_pass", "torch", "fp32", lambda: SleepyPredictor(0.1, time.perf_counter()))
    bad = Candidate("fake", "merged", "torch", "fp32", broken)
    settings = RunSettings(torch.device("cpu"), TimingPolicy(warmup=0, duration_s=0.0, min_iterations=2, rounds=2))
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
