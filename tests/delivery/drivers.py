"""One driver for every executor of the delivery suite: the dispatcher under test, driven
from the test's thread through the ``Dispatcher`` contract, and what to tear down with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from matomo_asgi import AsyncioDispatcher
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.hits import Hit
from matomo_tracking.testing import CollectorServer
from matomo_wsgi import ThreadDispatcher
from matomo_wsgi.executor import ThreadExecutor


class Driver:
    """A dispatcher of executor ``kind``; ``teardown`` runs after its ``close``."""

    def __init__(
        self,
        kind: str,
        config: TrackingConfig,
        dispatcher: ThreadExecutor | AsyncioDispatcher,
        teardown: Callable[[], object] = lambda: None,
    ) -> None:
        self.kind = kind
        self.config = config
        self.dispatcher = dispatcher
        self._teardown: Callable[[], object] | None = teardown
        self.log: Callable[[], str] = lambda: ""  # a worker's log, where there is one

    def submit(self, hit: Hit) -> bool:
        return self.dispatcher.submit(hit)

    def flush(self, timeout: float) -> bool:
        return self.dispatcher.flush(timeout)

    def close(self, timeout: float) -> bool:
        teardown, self._teardown = self._teardown, None
        if teardown is None:
            return True
        try:
            return self.dispatcher.close(timeout)
        finally:
            teardown()

    def stats(self) -> DispatchStats:
        return self.dispatcher.stats()

    @property
    def held(self) -> tuple[int, int]:
        """Hits and bytes in memory (what the queue caps limit)."""
        with self.dispatcher.lock:
            return self.dispatcher.queue.held, self.dispatcher.queue.held_bytes

    @property
    def pending(self) -> int:
        return self.dispatcher.pending


def thread_driver(config: TrackingConfig, matomo: CollectorServer) -> Driver:
    """A ``ThreadDispatcher`` as it is."""
    return Driver("thread", config, ThreadDispatcher(config))


def asyncio_driver(config: TrackingConfig, matomo: CollectorServer) -> Driver:
    """An ``AsyncioDispatcher`` whose worker runs on an event loop in its own thread (as under
    a server); hits are submitted, and flushes called, from the test's thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    dispatcher = AsyncioDispatcher(config)

    async def start() -> None:
        dispatcher.start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(5)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    return Driver("asyncio", config, dispatcher, stop)
