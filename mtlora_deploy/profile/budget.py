"""``--budget``: a hard wall-clock limit on a whole profile, like trtexec's ``--duration`` but for everything.

The clock starts when the profile starts (loading the inputs counts). Every group of candidates, when it starts,
gets the time left times its share of the arms (candidate x batch size) still to measure, and is planned to end
by then: its calls per round shrink first, then its rounds (``TimingPolicy.plan``), no call starts past its
deadline, and no arm is dropped. A group that finishes early leaves the rest to the next ones; one that opened
slowly (loading, compiling) takes from them. When the report is written to a folder, a part of the budget is kept
for its PNG plots and each plot is drawn only while the budget has time for it (else a note says it was not).
What cannot be cut short is the minimum that makes a measurement: opening each candidate, its first call and one
timed call per arm (warm-up calls are skipped when there is no time for them); a budget too small even for that is
overrun, and the report says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

WARMUP_SHARE = 0.25
"""At most this part of an arm's time goes to warm-up calls (they also size the rounds)."""
PLOT_SECONDS = 1.0
"""What drawing one PNG plot may take (more on a busy machine): one starts only with this much of the budget left."""
REPORT_SHARE = 0.2
"""At most this part of the budget is kept back for the plots."""


class Budget:
    """Deadlines for the groups of one profile (``seconds`` None: no limit, every deadline is infinite).

    Args:
        seconds: the limit for the whole profile.
        clock: the wall clock it is measured with (``time.perf_counter``; tests pass a fake one).
        reserve: seconds kept back at the end for the report's plots (``report_reserve``).
    """

    def __init__(
        self, seconds: float | None, clock: Callable[[], float] = time.perf_counter, reserve: float = 0.0
    ) -> None:
        self.seconds, self.clock, self.start = seconds, clock, clock()
        self.end = math.inf if seconds is None else self.start + max(0.0, seconds - reserve)

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    def elapsed(self) -> float:
        """Seconds since the profile started."""
        return self.clock() - self.start

    def left(self) -> float:
        """Seconds left of the whole budget (infinite without one)."""
        return math.inf if self.seconds is None else self.start + self.seconds - self.clock()

    def has_time_for_a_plot(self) -> bool:
        return self.left() >= PLOT_SECONDS

    def share(self, arms: int, arms_left: int) -> float:
        """The deadline (on ``clock``) of a group of ``arms`` arms, ``arms_left`` arms (its own included) still to
        measure: its part of the time left."""
        if not self.limited:
            return math.inf
        now = self.clock()
        return now + max(0.0, self.end - now) * arms / max(arms, arms_left)


def report_reserve(budget_s: float | None, plots: bool, accuracy_plot: bool) -> float:
    """Seconds of ``budget_s`` kept back for the report's plots (3, or 4 with the accuracy plot)."""
    if budget_s is None or not plots:
        return 0.0
    return min(REPORT_SHARE * budget_s, PLOT_SECONDS * (3 + accuracy_plot))


def remaining(deadline: float, clock: Callable[[], float]) -> float | None:
    """Seconds until ``deadline`` (not below zero), None when there is no deadline."""
    return None if math.isinf(deadline) else max(0.0, deadline - clock())
