"""A dispatcher whose ``submit`` only counts: the ``stub`` variant and the micro-benchmarks use
it to measure our middleware's request path without any delivery work."""

from __future__ import annotations

from typing import Any

__all__ = ["CountingDispatcher"]


class CountingDispatcher:
    """Accepts every hit and delivers nothing (delivery stubbed out)."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, hit: object) -> bool:
        """Count the hit."""
        self.submitted += 1
        return True

    def stats(self) -> Any:
        """Statistics: every hit queued, none sent."""
        from matomo_tracking.delivery import DispatchStats

        return DispatchStats(queued=self.submitted)

    @property
    def pending(self) -> int:
        """Nothing waits."""
        return 0

    def start(self) -> None:
        """Nothing to start."""

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to flush: everything is done."""
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Nothing to close: everything is done."""
        return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """Nothing to flush: everything is done."""
        return True

    async def aclose(self, timeout: float | None = None) -> bool:
        """Nothing to close: everything is done."""
        return True
