"""A dispatcher whose ``submit`` only counts: the ``stub`` variant and the micro-benchmarks use
it to measure our middleware's request path without any delivery work."""

from __future__ import annotations

from matomo_tracking.delivery import DispatchStats
from matomo_tracking.dispatcher import DispatcherBase

__all__ = ["CountingDispatcher"]


class CountingDispatcher(DispatcherBase):
    """Accepts every hit and delivers nothing (delivery stubbed out); the rest of the
    lifecycle is ``DispatcherBase``'s: nothing waits, everything is done."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, hit: object) -> bool:
        """Count the hit."""
        self.submitted += 1
        return True

    def stats(self) -> DispatchStats:
        """Statistics: every hit queued, none sent."""
        return DispatchStats(queued=self.submitted)
