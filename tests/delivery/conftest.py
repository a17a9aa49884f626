"""Fixtures of the delivery tests: a collector served on 127.0.0.1 (``CollectorServer``) and
both dispatchers behind one synchronous driver, so that every scenario runs against each."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from matomo_asgi import AsyncioDispatcher
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats, QueueBudget
from matomo_tracking.hits import Hit
from matomo_tracking.testing import CollectorServer
from matomo_wsgi import ThreadDispatcher

#: Small timings, so that outages, retries and deadlines take a second or two.
FAST: dict[str, Any] = {
    "batch_max_age": 0.05,
    "backoff_base": 0.05,
    "backoff_max": 0.4,
    "timeout": 2.0,
    "shutdown_timeout": 2.0,
}


def hit(n: int, *, created: float | None = None, pad: int = 0, site: int = 1) -> Hit:
    """Hit ``n``: its URL is unique (``http://shop.test/<n>``); ``pad`` bytes of extra data."""
    params = {"idsite": str(site), "rec": "1", "url": f"http://shop.test/{n}", "ua": "Delivery/1"}
    if pad:
        params["dimension1"] = "x" * pad
    return Hit(params, time.time() if created is None else created)


class Driver(Protocol):
    """A dispatcher driven from the test's thread, whatever its kind."""

    kind: str
    config: TrackingConfig

    def submit(self, hit: Hit) -> bool: ...
    def flush(self, timeout: float) -> bool: ...
    def close(self, timeout: float) -> bool: ...
    def stats(self) -> DispatchStats: ...
    @property
    def budget(self) -> QueueBudget: ...
    @property
    def pending(self) -> int: ...


class ThreadDriver:
    """A ``ThreadDispatcher`` as it is."""

    kind = "thread"

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.dispatcher = ThreadDispatcher(config)

    def submit(self, hit: Hit) -> bool:
        return self.dispatcher.submit(hit)

    def flush(self, timeout: float) -> bool:
        return self.dispatcher.flush(timeout)

    def close(self, timeout: float) -> bool:
        return self.dispatcher.close(timeout)

    def stats(self) -> DispatchStats:
        return self.dispatcher.stats()

    @property
    def budget(self) -> QueueBudget:
        return self.dispatcher._budget

    @property
    def pending(self) -> int:
        return self.dispatcher.pending


class AsyncioDriver:
    """An ``AsyncioDispatcher`` whose worker runs on an event loop in its own thread (as under
    a server); hits are submitted from the test's thread, as the dispatcher allows."""

    kind = "asyncio"

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.dispatcher = AsyncioDispatcher(config)
        self.loop.call_soon_threadsafe(self.dispatcher.start)
        self._closed = False

    def _run(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, hit: Hit) -> bool:
        return self.dispatcher.submit(hit)

    def flush(self, timeout: float) -> bool:
        return bool(self._run(self.dispatcher.aflush(timeout), timeout + 10))

    def close(self, timeout: float) -> bool:
        if self._closed:
            return True
        self._closed = True
        try:
            return bool(self._run(self.dispatcher.aclose(timeout), timeout + 10))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def stats(self) -> DispatchStats:
        return self.dispatcher.stats()

    @property
    def budget(self) -> QueueBudget:
        return self.dispatcher._budget

    @property
    def pending(self) -> int:
        return self.dispatcher.pending


Make = Callable[..., Driver]


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    """A collector on 127.0.0.1 (site 1, no token)."""
    with CollectorServer() as server:
        yield server


@pytest.fixture(params=["thread", "asyncio"])
def make(request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(url=..., **options)``: a driver of each dispatcher kind in turn, configured with
    ``FAST`` timings and ``options``; closed after the test."""
    made: list[Driver] = []
    kind = request.param

    def build(**options: Any) -> Driver:
        config = TrackingConfig(**{**FAST, **options})
        driver: Driver = ThreadDriver(config) if kind == "thread" else AsyncioDriver(config)
        made.append(driver)
        return driver

    yield build
    for driver in made:
        driver.close(0.5)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
