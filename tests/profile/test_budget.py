"""``--budget`` as a hard limit: plans that shrink, shares of the time, every candidate measured. Scheduling is
tested on a fake clock (predictors spend their time on it, nothing sleeps); one real short run checks the wall
time of a whole profile against its budget."""

import time

import pytest
import torch

from mtlora_deploy.errors import MTLoRAError
from mtlora_deploy.profile.api import budget_notes, measure_all, run_profile
from mtlora_deploy.profile.budget import Budget
from mtlora_deploy.profile.runs import RunSettings
from mtlora_deploy.profile.timing import TimingPolicy
from tests.conftest import tiny_model
from tests.profile.fakes import FakeClock, clocked_candidate

POLICY = TimingPolicy(warmup=2, duration_s=1.0, min_iterations=10, rounds=10)


def test_a_plan_that_fits_is_kept():
    assert POLICY.plan([0.01, 0.02]) == (10, [10, 5])  # 1 s per arm over 10 rounds
    assert POLICY.plan([0.01, 0.02], seconds=2.0) == (10, [10, 5])


def test_calls_per_round_shrink_before_rounds():
    rounds, calls = POLICY.plan([0.01, 0.02], seconds=0.5)  # a quarter of the 2 s asked for
    assert rounds == 10 and calls == [2, 1]
    assert rounds * sum(c * t for c, t in zip(calls, [0.01, 0.02], strict=True)) <= 0.5


def test_rounds_shrink_when_one_call_per_round_does_not_fit():
    rounds, calls = POLICY.plan([0.01, 0.02], seconds=0.1)
    assert calls == [1, 1] and rounds == 3  # 3 x 30 ms fit in 100 ms
    assert POLICY.plan([0.01, 0.02], seconds=0.0) == (1, [1, 1])  # nothing left: the minimum, never nothing


def test_the_time_left_is_shared_by_arms():
    clock = FakeClock()
    budget = Budget(100.0, clock, reserve=10.0)
    assert budget.share(3, 9) == pytest.approx(clock.now + 30.0)  # a third of the 90 s measuring time
    clock.advance(50.0)  # the first group ran long
    assert budget.share(6, 6) == pytest.approx(clock.now + 40.0)  # the rest get what is left
    clock.advance(60.0)
    assert budget.share(1, 1) == clock.now  # spent: a deadline of now (the minimum is still measured)
    assert Budget(None, clock).share(1, 4) == float("inf")


def _candidates(clock, n_groups=3, per_group=3, open_s=0.0):
    return [
        clocked_candidate(clock, role, ms=5.0 * (1 + i), source=f"model{g}", open_s=open_s)
        for g in range(n_groups)
        for i, role in enumerate(["single_pass", "merged", "bare_backbone"][:per_group])
    ]


def _measure(clock, candidates, budget_s, batches=(1, 8), policy=POLICY):
    settings = RunSettings(torch.device("cpu"), policy, clock=clock)
    budget, notes = Budget(budget_s, clock), []
    measurements = measure_all(candidates, list(batches), settings, notes, budget=budget)
    return measurements, notes + budget_notes(measurements, settings, budget), clock.now - budget.start


def test_every_candidate_is_measured_within_the_budget():
    """9 candidates x 2 batch sizes asking for 1 s each (18 s + warm-up) in a 6 s budget: all 18 measured, the
    profile ends within the budget plus one call, and each measurement says what it got."""
    clock = FakeClock()
    longest_call = 15.0 * 8 / 1000
    measurements, notes, spent = _measure(clock, _candidates(clock), 6.0)
    assert len(measurements) == 18 and {m.candidate.source for m in measurements} == {"model0", "model1", "model2"}
    assert spent <= 6.0 + longest_call
    assert spent > 0.8 * 6.0  # the budget is used, not thrown away
    for m in measurements:
        got = m.to_dict()
        assert 1 <= got["rounds"] < 10 and got["calls_per_round"] >= 1 and got["timed_s"] > 0
        assert got["rounds"] <= got["n"] <= got["rounds"] * got["calls_per_round"]
        assert m.latency.ci_low is None or m.latency.ci_low <= m.latency.median <= m.latency.ci_high
    rounds = [m.latency.rounds for m in measurements]
    assert max(rounds) - min(rounds) <= 1  # equal shares for equal groups (the last one gets what the others left)
    assert any("fewer than the 10 rounds asked for" in n for n in notes)


def test_arms_of_a_group_keep_the_same_rounds():
    clock = FakeClock()
    measurements, _, _ = _measure(clock, _candidates(clock, n_groups=1), 0.9)
    assert len({m.latency.rounds for m in measurements}) == 1  # paired, even when the deadline cut a round


def test_an_ample_budget_changes_nothing():
    clock = FakeClock()
    measurements, notes, spent = _measure(clock, _candidates(clock, n_groups=1), 1000.0)
    assert all(m.latency.rounds == 10 for m in measurements) and notes == []
    other = FakeClock()
    unlimited, _, _ = _measure(other, _candidates(other, n_groups=1), None)
    assert [m.latency.count for m in unlimited] == [m.latency.count for m in measurements]


def test_a_slow_group_takes_from_the_later_ones_which_are_still_measured():
    clock = FakeClock()
    slow_to_open = [clocked_candidate(clock, "single_pass", 5.0, source="slow", open_s=3.0)]
    measurements, _, spent = _measure(clock, slow_to_open + _candidates(clock, n_groups=2), 6.0)
    assert {m.candidate.source for m in measurements} == {"slow", "model0", "model1"}
    assert spent <= 6.0 + 0.12
    rounds = {m.candidate.source: m.latency.rounds for m in measurements}
    assert rounds["slow"] == 1 and rounds["model0"] > 1  # its 3 s opening took more than its share


def test_a_budget_too_small_for_the_minimum_is_overrun_and_said_so():
    clock = FakeClock()
    measurements, notes, spent = _measure(clock, _candidates(clock, open_s=1.0), 2.0)
    assert len(measurements) == 18 and all(m.latency.count >= 1 for m in measurements)
    assert spent > 2.0 and any("did not fit" in n for n in notes)
    assert any("too few rounds" in n for n in notes)


def test_measure_all_without_a_budget_object_uses_budget_s():
    clock = FakeClock()
    settings = RunSettings(torch.device("cpu"), POLICY, clock=clock)
    start = clock.now
    measurements = measure_all(_candidates(clock, n_groups=1), [1], settings, [], budget_s=1.5)
    assert len(measurements) == 3 and clock.now - start <= 1.5 + 0.015


def test_a_failing_candidate_under_a_budget_is_a_note():
    clock = FakeClock()

    def broken():
        raise MTLoRAError("cannot open this")

    from mtlora_deploy.profile.runs import Candidate

    candidates = [*_candidates(clock, n_groups=1), Candidate("model0", "per_task", "torch", "fp32", broken)]
    settings = RunSettings(torch.device("cpu"), POLICY, clock=clock)
    notes = []
    measurements = measure_all(candidates, [1], settings, notes, budget=Budget(1.0, clock))
    assert len(measurements) == 3 and any("cannot open this" in n for n in notes)


def test_a_real_profile_keeps_its_budget(tmp_path):
    """A tiny model, merged and bare backbone beside it (3 candidates x 2 batch sizes, 4 s each asked for: 24 s)
    in a 6 s budget: loading, report files and plots included; slack for a loaded machine."""
    model = tiny_model(tasks=("semseg", "sal")).eval()
    start = time.perf_counter()
    report = run_profile(
        [("tiny", model)],
        batches=[1, 2],
        duration=4.0,
        budget_s=6.0,
        comparisons=["merged", "bare_backbone"],
        threads=1,
        output=tmp_path,
    )
    wall = time.perf_counter() - start
    assert wall < 6.0 * 1.5, wall
    rows = report["measurements"]
    assert {m["role"] for m in rows} == {"single_pass", "merged", "bare_backbone"} and len(rows) == 6
    assert all(m["rounds"] >= 1 and 0 < m["timed_s"] < 4.0 for m in rows)  # each got less than it asked for
    assert sum(m["timed_s"] for m in rows) < 6.0 and report["run"]["measure_s"] <= 6.0
    assert (tmp_path / "profile.json").is_file()


def test_a_busy_machine_is_noted(monkeypatch):
    import os

    from mtlora_deploy.profile.runs import busy_machine_note

    cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0 * cores, 0.0, 0.0))
    note = busy_machine_note()
    assert note is not None and f"load {3.0 * cores:.1f} on {cores} cores" in note and "one torch thread" in note
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5 * cores, 0.0, 0.0))
    assert busy_machine_note() is None
