"""Fixtures of the ASGI adapter tests: an in-process collector reached through
``httpx.ASGITransport`` and a factory of tracked apps that are closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from matomo_asgi import AsyncioDispatcher, MatomoMiddleware
from matomo_asgi._types import ASGIApp
from matomo_tracking.testing import Collector, ReceivedHit

MATOMO = "http://matomo.test"
SHOP = "http://shop.test"

Track = Callable[..., MatomoMiddleware]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def collector() -> Collector:
    """A fresh in-memory collector (site 1)."""
    return Collector()


@pytest.fixture
async def matomo_http(collector: Collector) -> AsyncIterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` whose requests reach ``collector`` in-process."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=collector.asgi)) as client:
        yield client


@pytest.fixture
async def track(matomo_http: httpx.AsyncClient) -> AsyncIterator[Track]:
    """``track(app, **options)``: ``app`` wrapped in a MatomoMiddleware that posts to the
    in-process collector; every middleware made is closed after the test."""
    made: list[MatomoMiddleware] = []

    def make(app: ASGIApp, **options: Any) -> MatomoMiddleware:
        settings: dict[str, Any] = {"url": MATOMO, "visitor_salt": "tests", "batch_max_age": 0.01}
        settings.update(options)
        if "dispatcher" not in settings:
            settings.setdefault("http_client", matomo_http)
        middleware = MatomoMiddleware(app, **settings)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        await middleware.aclose(2.0)


def client(app: ASGIApp, *, root_path: str = "") -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for ``app`` at http://shop.test."""
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url=SHOP)


async def delivered(middleware: MatomoMiddleware, collector: Collector) -> list[ReceivedHit]:
    """The hits the collector has once everything submitted so far was delivered."""
    dispatcher = middleware.dispatcher
    assert isinstance(dispatcher, AsyncioDispatcher)
    assert await dispatcher.aflush(5.0)
    return list(collector.hits)
