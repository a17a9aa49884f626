"""The contract every dispatcher fulfils, so that a middleware accepts any of them."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from matomo_tracking.delivery import DispatchStats
from matomo_tracking.hits import Hit

__all__ = ["Dispatcher"]


@runtime_checkable
class Dispatcher(Protocol):
    """Takes hits and delivers them to Matomo in the background.

    ``submit`` never blocks and never raises: it returns False when the hit was dropped
    (queue full, closed), and the drop is counted in ``stats()``. Thread-based dispatchers
    also have ``flush(timeout)``/``close(timeout)``; asyncio ones ``aflush``/``aclose``.
    """

    def submit(self, hit: Hit) -> bool:
        """Queue ``hit`` for delivery; False if it was dropped."""
        ...

    def stats(self) -> DispatchStats:
        """What was queued, sent, retried and dropped so far."""
        ...
