"""How a group of candidates is timed: opened together, each arm (candidate x batch size) prepared, then timed in
interleaved rounds A B ... B A, so that a ratio between two of them compares samples taken seconds apart, not
minutes. A group is closed before the next one opens. A group has a deadline (``budget``): its rounds are planned
to end by then and no call starts after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mtlora_deploy.profile.budget import WARMUP_SHARE, remaining
from mtlora_deploy.profile.memory import PeakMemory, measure_cpu_peaks, memory_method, weight_bytes
from mtlora_deploy.profile.runs import Candidate, Measurement, Predictor, RunSettings, make_images, timed_call
from mtlora_deploy.profile.timing import LatencyStats, make_timer, warm_up

OpenedInfo = tuple[dict[str, Any], float | None, int, float]
"""What opening a candidate gives besides its predictor: description, GMAC per image, weight bytes, seconds."""


@dataclass
class _Arm:
    """One (candidate, batch) inside an interleaved group, collecting its samples round by round."""

    candidate: Candidate
    batch: int
    call: Any
    opened: OpenedInfo
    seconds_per_call: float
    prepare_s: float
    calls_per_round: int = 1
    samples: list[float] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    timed_s: float = 0.0
    peak: int | None = None

    def add(self, samples: list[float], seconds: float, peak: int | None) -> None:
        self.samples += samples
        self.round_medians.append(float(np.median(samples)))
        self.timed_s += seconds
        if peak is not None:
            self.peak = max(self.peak or 0, peak)


def _prepare_arm(
    candidate: Candidate,
    predictor: Predictor,
    batch: int,
    settings: RunSettings,
    opened: OpenedInfo,
    until: float | None,
) -> _Arm:
    """Inputs, the untimed first call (compilation, graph capture, allocation) and warm-up (no warm-up call starts
    at or after ``until``), whose calls size a round (the first call's time when there was no time for one)."""
    clock = settings.clock
    start = clock()
    images = make_images(batch, int(predictor.image_size), settings)
    call = timed_call(predictor, images, settings.include_copies)
    call()
    predictor.synchronize()
    first = clock() - start
    seconds = warm_up(call, settings.timing.warmup, predictor.synchronize, clock, until)
    return _Arm(candidate, batch, call, opened, first if seconds is None else seconds, clock() - start)


def _open(
    candidate: Candidate, notes: list[str], gmac_cache: dict[tuple[str, str], float | None], settings: RunSettings
) -> tuple[Predictor, OpenedInfo]:
    """The opened predictor with (its description, GMAC per image or None, bytes of its torch weights, seconds).

    GMAC depend on the source and role only (not on backend or precision): ``gmac_cache`` counts each once.
    """
    start = settings.clock()
    predictor = candidate.open()
    key = (candidate.source, candidate.role)
    if key not in gmac_cache:
        gmac_cache[key] = _count_gmac(candidate, predictor, notes)
    return predictor, (predictor.describe(), gmac_cache[key], weight_bytes(predictor), settings.clock() - start)


def _count_gmac(candidate: Candidate, predictor: Predictor, notes: list[str]) -> float | None:
    from mtlora_deploy.profile.flops import onnx_gmac, predictor_gmac

    try:
        gmac = predictor_gmac(predictor)
        if gmac is None and candidate.backend == "onnxruntime":
            gmac, unknown = onnx_gmac(candidate.source)
            if unknown:
                notes.append(
                    f"{candidate.source}: {unknown} MatMul/Conv nodes without inferred shapes are not in its GMAC count"
                )
    except Exception as exc:  # noqa: BLE001  (a FLOP count is extra information; the timing goes on)
        notes.append(f"{candidate.label}: no FLOP count ({type(exc).__name__}: {exc})")
        gmac = None
    return gmac


def _round(arms: Sequence[_Arm], settings: RunSettings, timer, until: float | None, first: bool) -> list[tuple]:
    """One round over ``arms`` in the given order: (arm, samples, seconds, peak) each. No call starts at or after
    ``until``, except in the first round, where every arm gets one call at least (it must be measured)."""
    clock, out = settings.clock, []
    for arm in arms:
        with PeakMemory(settings.device) as memory:
            start = clock()
            samples = timer.run(arm.call, 1) if first else []
            samples += timer.run(arm.call, arm.calls_per_round - len(samples), until)
            seconds = clock() - start
        out.append((arm, samples, seconds, memory.peak_bytes))
    return out


def _interleave(arms: list[_Arm], settings: RunSettings, deadline: float) -> None:
    """The planned rounds over all arms, alternating the order (A B C, C B A, ...) so drift hits all alike.

    Rounds and calls per round are planned to end by ``deadline``; no round starts that the last one says would
    pass it, and a round that the deadline cut short before every arm had a call in it is dropped (all arms keep
    the same rounds: they are paired).
    """
    clock, timer = settings.clock, make_timer(settings.device, settings.clock)
    until = None if math.isinf(deadline) else deadline
    rounds, calls = settings.timing.plan([arm.seconds_per_call for arm in arms], remaining(deadline, clock))
    for arm, count in zip(arms, calls, strict=True):
        arm.calls_per_round = count
    last = 0.0
    for index in range(rounds):
        start = clock()
        if index and until is not None and start + last > until:
            break
        results = _round(arms if index % 2 == 0 else arms[::-1], settings, timer, until, index == 0)
        if not all(samples for _, samples, _, _ in results):
            break
        for arm, samples, seconds, peak in results:
            arm.add(samples, seconds, peak)
        last = clock() - start


def _measurement(arm: _Arm, settings: RunSettings, cpu_peaks: dict[tuple[int, int], int]) -> Measurement:
    timing, (described, gmac, weights, open_s) = settings.timing, arm.opened
    run = {
        "device": str(settings.device),
        "batch": arm.batch,
        "warmup": timing.warmup,
        "untimed_first_calls": 1,
        "duration_s": timing.duration_s,
        "min_iterations": timing.min_iterations,
        "rounds": len(arm.round_medians),
        "calls_per_round": arm.calls_per_round,
        "include_copies": settings.include_copies,
        "timer": make_timer(settings.device).name,
        "memory_method": memory_method(settings.device, settings.memory),
        "backend": described,
    }
    if settings.device.type == "cuda":
        peak = None if arm.peak is None else arm.peak + weights
    else:
        peak = cpu_peaks.get((id(arm.candidate), arm.batch))
    stats = LatencyStats.from_samples(arm.samples, arm.round_medians)
    seconds = {"open": open_s, "prepare": arm.prepare_s, "timed": arm.timed_s}
    return Measurement(arm.candidate, arm.batch, stats, peak, run, list(arm.round_medians), gmac, seconds)


def _prepare_arms(
    opened: list[tuple[Candidate, Predictor, OpenedInfo]],
    batches: Sequence[int],
    settings: RunSettings,
    notes: list[str],
    errors: tuple[type[BaseException], ...],
    deadline: float,
) -> list[_Arm]:
    """Every (candidate, batch) that prepares; each one's warm-up gets ``WARMUP_SHARE`` of its part of the time
    left before ``deadline``."""
    arms, left = [], len(opened) * len(batches)
    for candidate, predictor, info in opened:
        for batch in batches:
            time_left = remaining(deadline, settings.clock)
            until = None if time_left is None else settings.clock() + WARMUP_SHARE * time_left / left
            left -= 1
            try:
                arms.append(_prepare_arm(candidate, predictor, batch, settings, info, until))
            except errors as exc:
                notes.append(
                    f"{candidate.label} ({candidate.backend} {candidate.precision}) batch {batch}: skipped, {_why(exc)}"
                )
    return arms


def measure_group(
    candidates: Sequence[Candidate],
    batches: Sequence[int],
    settings: RunSettings,
    notes: list[str],
    errors: tuple[type[BaseException], ...],
    gmac_cache: dict[tuple[str, str], float | None] | None = None,
    deadline: float = math.inf,
) -> list[Measurement]:
    """Open every candidate of a group, time all (candidate, batch) pairs in interleaved rounds, close them.

    A candidate (or one of its batch sizes) that raises one of ``errors`` becomes a note and the rest go on.
    ``gmac_cache`` ((source, role) -> GMAC per image) is shared between the groups of one run. ``deadline`` (on
    ``settings.clock``): the group ends by then, bar the minimum of one timed call per arm (and, with CPU
    memory, the timing takes the first half of the time left and the peak-RSS subprocesses the second).
    """
    gmac_cache = {} if gmac_cache is None else gmac_cache
    opened: list[tuple[Candidate, Predictor, OpenedInfo]] = []
    arms: list[_Arm] = []
    try:
        for candidate in candidates:
            try:
                opened.append((candidate, *_open(candidate, notes, gmac_cache, settings)))
            except errors as exc:
                notes.append(f"{candidate.label} ({candidate.backend} {candidate.precision}): skipped, {_why(exc)}")
        arms = _prepare_arms(opened, batches, settings, notes, errors, deadline)
        time_left = remaining(deadline, settings.clock)
        timing_end = deadline if time_left is None or not settings.memory else settings.clock() + time_left / 2
        _interleave(arms, settings, timing_end)
    finally:
        for _, predictor, _ in opened:
            predictor.close()
    cpu_peaks = {}
    if settings.memory:
        until = None if math.isinf(deadline) else deadline
        cpu_peaks = measure_cpu_peaks([c for c, *_ in opened], batches, settings, notes, until)
    return [_measurement(arm, settings, cpu_peaks) for arm in arms]


def _why(exc: BaseException) -> str:
    from mtlora_deploy.errors import MTLoRAError

    text = " ".join(str(exc).split())[:300]
    return text if isinstance(exc, MTLoRAError) else f"{type(exc).__name__}: {text}"
