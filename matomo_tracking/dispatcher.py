"""The contract every dispatcher fulfils, so that a middleware or a tracker accepts any of them
and calls its whole lifecycle without probing for methods."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.delivery_queue import DeliveryQueue
from matomo_tracking.hits import Hit

__all__ = ["Dispatcher", "DispatcherBase", "QueueBackedDispatcher"]


@runtime_checkable
class Dispatcher(Protocol):
    """Takes hits and delivers them to Matomo in the background.

    ``submit`` never blocks and never raises: it returns False when the hit was dropped
    (queue full, closed), and the drop is counted in ``stats()``. ``start()`` starts the
    background work (and opens an ``AsyncioDispatcher`` again after ``aclose``, for a
    server whose lifespan starts again; the thread executors stay closed); ``flush(timeout)`` and
    ``aflush(timeout)`` wait for what was submitted so far; ``close(timeout)`` and
    ``aclose(timeout)`` deliver what is left within the deadline and give up the rest. The
    ``a``-forms are for event loops (they never block one), the others for threads. Each
    returns whether everything was delivered (or given up by the policy) in time.
    """

    def submit(self, hit: Hit) -> bool:
        """Queue ``hit`` for delivery; False if it was dropped."""
        ...

    def stats(self) -> DispatchStats:
        """What was queued, sent, retried and dropped so far."""
        ...

    @property
    def pending(self) -> int:
        """Hits submitted and not yet delivered or given up on."""
        ...

    def start(self) -> None:
        """Start delivering (idempotent)."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (blocking) until what was submitted is delivered, at most ``timeout`` s."""
        ...

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left within ``timeout`` s, give up the rest, stop (blocking)."""
        ...

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush`` for an event loop."""
        ...

    async def aclose(self, timeout: float | None = None) -> bool:
        """``close`` for an event loop."""
        ...


class QueueBackedDispatcher:
    """What every executor of a ``DeliveryQueue`` reads the same way: its statistics, what is
    pending, the queue itself (to add ``listeners``) and the lock that guards it. An
    executor sets ``_queue`` and ``_lock`` (any lock: the core takes no threading)."""

    _queue: DeliveryQueue
    _lock: AbstractContextManager[Any]
    config: TrackingConfig

    def _seconds(self, timeout: float | None) -> float:
        """How long a flush or close may take: ``timeout``, else ``shutdown_timeout``."""
        return self.config.shutdown_timeout if timeout is None else max(0.0, timeout)

    @property
    def queue(self) -> DeliveryQueue:
        """The engine (for ``listeners``); call it only while holding ``lock``."""
        return self._queue

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """The lock every call to ``queue`` holds."""
        return self._lock

    def stats(self) -> DispatchStats:
        """What was queued, sent, retried and dropped so far in this process."""
        with self._lock:
            return self._queue.stats()

    @property
    def pending(self) -> int:
        """Hits submitted and not yet delivered or given up on."""
        with self._lock:
            return self._queue.pending

    @property
    def closed(self) -> bool:
        """Whether new hits are refused (after ``close``/``aclose``, until ``start``)."""
        with self._lock:
            return self._queue.closed


class DispatcherBase:
    """A base for dispatchers with nothing to wait for (a recorder, a test double, one that
    hands hits on at once): subclasses write ``submit`` and ``stats``; ``start``, the
    flushes and the closes do nothing and report success, ``pending`` is 0."""

    def submit(self, hit: Hit) -> bool:
        """Take ``hit``; False if it was dropped."""
        raise NotImplementedError

    def stats(self) -> DispatchStats:
        """Nothing counted."""
        return DispatchStats()

    @property
    def pending(self) -> int:
        """Nothing waits."""
        return 0

    def start(self) -> None:
        """Nothing to start."""

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing to wait for."""
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Nothing to close."""
        return True

    async def aflush(self, timeout: float | None = None) -> bool:
        """Nothing to wait for."""
        return True

    async def aclose(self, timeout: float | None = None) -> bool:
        """Nothing to close."""
        return True
