"""A fake clock and predictors that spend time on it: scheduling and timing tested exactly, without sleeping."""

from __future__ import annotations

import torch

from mtlora_deploy.profile.runs import Candidate


class FakeClock:
    """Reads ``now`` (seconds); only ``advance`` moves it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ClockedPredictor:
    """Each call costs ``seconds(batch, now)`` on ``clock`` (a model whose speed may drift with the load)."""

    image_size = 4

    def __init__(self, clock: FakeClock, seconds, open_s: float = 0.0) -> None:
        self.clock, self.seconds, self.calls = clock, seconds, 0
        clock.advance(open_s)

    def infer(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.clock.advance(self.seconds(images.shape[0], self.clock.now))
        self.calls += 1
        return {"out": images}

    def synchronize(self) -> None:
        pass

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": "fake"}


def clocked_candidate(
    clock: FakeClock, role: str, ms: float, source: str = "fake", open_s: float = 0.0, drift=None
) -> Candidate:
    """A candidate whose calls take ``ms`` per image (times ``drift(now)`` when given) on ``clock``."""

    def seconds(batch: int, now: float) -> float:
        return ms * batch / 1000.0 * (drift(now) if drift else 1.0)

    return Candidate(source, role, "torch", "fp32", lambda: ClockedPredictor(clock, seconds, open_s))
