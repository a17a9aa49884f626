"""Fixtures of the WSGI adapter tests: a collector reached in-process (``httpx.WSGITransport``,
so a tracked request's hits are there as soon as its response is closed, with ``sync_mode``),
a factory of tracked apps that closes their dispatchers, and Django settings that are undone
when the package's tests end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from matomo_tracking.delivery import DispatchStats, StatsRecorder
from matomo_tracking.dispatcher import DispatcherBase
from matomo_tracking.hits import Hit
from matomo_tracking.testing import Collector
from matomo_wsgi import MatomoMiddleware, ThreadDispatcher

COLLECTOR_URL = "http://collector.test"


class RecordingDispatcher(DispatcherBase):
    """A dispatcher that keeps what it is given (and where it was called from)."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.calls: list[dict[str, Any]] = []
        self._stats = StatsRecorder()

    def submit(self, hit: Hit) -> bool:
        import asyncio
        import threading

        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        self.calls.append({"thread": threading.get_ident(), "on_loop": on_loop})
        self.hits.append(hit)
        self._stats.queued += 1
        return True

    def stats(self) -> DispatchStats:
        return self._stats.snapshot()


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def collector_client(collector: Collector) -> Iterator[httpx.Client]:
    """An HTTP client whose requests go to ``collector`` in-process."""
    with httpx.Client(transport=httpx.WSGITransport(app=collector.wsgi)) as client:
        yield client


Track = Callable[..., MatomoMiddleware]


@pytest.fixture
def track(collector_client: httpx.Client) -> Iterator[Track]:
    """``track(app, **options)``: ``app`` wrapped by a middleware that delivers inline to the
    in-process collector (``sync_mode``); its dispatcher is closed after the test."""
    made: list[MatomoMiddleware] = []

    def make(app: Any, **options: Any) -> MatomoMiddleware:
        options.setdefault("url", COLLECTOR_URL)
        options.setdefault("visitor_salt", "test-salt")
        if "dispatcher" not in options:
            options.setdefault("sync_mode", True)
            options.setdefault("http_client", collector_client)
        middleware = MatomoMiddleware(app, **options)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        if isinstance(middleware.dispatcher, ThreadDispatcher):
            middleware.dispatcher.close(1.0)


def client_for(app: Any, **transport: Any) -> httpx.Client:
    """An HTTP client whose requests go to the WSGI ``app`` in-process."""
    return httpx.Client(
        transport=httpx.WSGITransport(app=app, **transport), base_url="http://testserver"
    )
