"""Pacing for live simulation: hold a sender to a steady number of events per wall-clock second.

Compressed-time runs skip this entirely and carry simulated timestamps instead; see `cli.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Schedules event i at start + i / rate and sleeps until then when the sender is early.

    Scheduling against the start (not the previous event) keeps the long-run rate exact even
    when individual sends are slow: a late sender catches up instead of drifting.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive events/s, got {rate}")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.count = 0
        self.started: float | None = None

    def wait(self) -> None:
        """Block until the next event is due."""
        now = self.clock()
        if self.started is None:
            self.started = now
        due = self.started + self.count / self.rate
        if due > now:
            self.sleep(due - now)
        self.count += 1
