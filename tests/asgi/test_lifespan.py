"""Lifespan: the dispatcher starts on startup and is flushed before shutdown completes, whether
or not the wrapped app speaks the lifespan protocol itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.testing import ApplicationCommunicator
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from matomo_asgi import AsyncioDispatcher, MatomoMiddleware
from matomo_asgi._types import Message, Receive, Scope, Send
from matomo_tracking.config import TrackingConfig
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.hits import Hit
from matomo_tracking.testing import Collector, CollectorServer
from matomo_wsgi import ThreadDispatcher
from tests.asgi.conftest import MATOMO, Track, client

LIFESPAN: dict[str, Any] = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}


async def _home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("home")


def _starlette(events: list[str]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    return Starlette(routes=[Route("/", _home)], lifespan=lifespan)


async def _raises(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # like Django's ASGIHandler
        raise ValueError(f"cannot handle {scope['type']}")
    await PlainTextResponse("home")(scope, receive, send)


async def _returns(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await PlainTextResponse("home")(scope, receive, send)


async def _reads_startup_then_returns(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        return
    await PlainTextResponse("home")(scope, receive, send)


def _hit(n: int = 1) -> Hit:
    return Hit({"idsite": "1", "rec": "1", "url": f"http://shop.test/{n}"}, time.time())


async def _startup(communicator: ApplicationCommunicator) -> Message:
    await communicator.send_input({"type": "lifespan.startup"})
    return dict(await communicator.receive_output(2))


async def _shutdown(communicator: ApplicationCommunicator) -> Message:
    await communicator.send_input({"type": "lifespan.shutdown"})
    message = dict(await communicator.receive_output(5))
    await communicator.wait(2)
    return message


@pytest.mark.anyio
async def test_startup_starts_and_shutdown_flushes_before_completing(
    track: Track, collector: Collector
) -> None:
    events: list[str] = []
    app = track(_starlette(events), batch_max_age=30.0)
    communicator = ApplicationCommunicator(app, dict(LIFESPAN))
    assert await _startup(communicator) == {"type": "lifespan.startup.complete"}
    assert events == ["app startup"]
    # Started: even a hit from a thread without an event loop goes out.
    dispatcher = app.dispatcher
    assert isinstance(dispatcher, AsyncioDispatcher)
    assert await asyncio.to_thread(dispatcher.submit, _hit(0))
    assert await dispatcher.aflush(2.0)
    async with client(app) as http:
        assert (await http.get("/")).text == "home"
    assert len(collector.hits) == 1  # the page view waits for its batch (30 s)
    assert await _shutdown(communicator) == {"type": "lifespan.shutdown.complete"}
    assert events == ["app startup", "app shutdown"]
    assert [hit["url"] for hit in collector.hits] == ["http://shop.test/0", "http://shop.test/"]


@pytest.mark.anyio
@pytest.mark.parametrize("inner", [_raises, _returns, _reads_startup_then_returns])
async def test_apps_without_lifespan_are_answered_for(
    track: Track, collector: Collector, inner: Any
) -> None:
    app = track(inner, batch_max_age=30.0)
    communicator = ApplicationCommunicator(app, dict(LIFESPAN))
    assert await _startup(communicator) == {"type": "lifespan.startup.complete"}
    async with client(app) as http:
        assert (await http.get("/x")).text == "home"
    assert collector.hits == []
    assert await _shutdown(communicator) == {"type": "lifespan.shutdown.complete"}
    assert [hit["url"] for hit in collector.hits] == ["http://shop.test/x"]


@pytest.mark.anyio
async def test_a_failed_startup_is_the_apps_answer(track: Track) -> None:
    @contextlib.asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    app = track(Starlette(lifespan=broken))
    communicator = ApplicationCommunicator(app, dict(LIFESPAN))
    message = await _startup(communicator)
    assert message["type"] == "lifespan.startup.failed"
    assert "no database" in message["message"]
    with pytest.raises(RuntimeError, match="no database"):
        await communicator.wait(2)


@pytest.mark.anyio
async def test_stacked_lifespan_answers_once(track: Track, collector: Collector) -> None:
    events: list[str] = []
    app = track(track(_starlette(events)))
    communicator = ApplicationCommunicator(app, dict(LIFESPAN))
    assert await _startup(communicator) == {"type": "lifespan.startup.complete"}
    assert await _shutdown(communicator) == {"type": "lifespan.shutdown.complete"}
    assert await communicator.receive_nothing(0.05)
    assert events == ["app startup", "app shutdown"]


@pytest.mark.anyio
async def test_a_slow_matomo_is_given_shutdown_timeout_then_abandoned(
    track: Track, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    app = track(_returns, shutdown_timeout=0.3)
    communicator = ApplicationCommunicator(app, dict(LIFESPAN))
    await _startup(communicator)
    collector.hold()
    async with client(app) as http:
        for _ in range(3):
            await http.get("/")
    started = time.monotonic()
    assert await _shutdown(communicator) == {"type": "lifespan.shutdown.complete"}
    assert 0.25 < time.monotonic() - started < 2.0
    assert app.dispatcher.stats().dropped == {"shutdown": 3}
    assert "3 hit(s) undelivered" in caplog.text
    collector.release()


def test_hits_outlive_the_event_loop_they_were_queued_on(collector: Collector) -> None:
    """Test clients (Starlette's among them) run requests on event loops that come and go:
    hits queued on a loop that ends are taken over by the next loop."""
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=collector.asgi))
    app = MatomoMiddleware(
        _starlette([]),
        url=MATOMO,
        visitor_salt="tests",
        batch_max_age=30.0,
        http_client=http_client,
    )

    async def get(*paths: str) -> None:
        async with client(app) as http:
            for path in paths:
                assert (await http.get(path)).text == "home"

    asyncio.run(get("/", "/?a=1"))
    asyncio.run(get("/?a=2"))
    assert collector.hits == []
    asyncio.run(app.aclose())
    assert [hit["url"] for hit in collector.hits] == [
        "http://shop.test/",
        "http://shop.test/?a=1",
        "http://shop.test/?a=2",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["thread", "asyncio"])
async def test_a_second_lifespan_tracks_again(kind: str) -> None:
    """A test client entered twice (one app for a whole test module) runs startup and
    shutdown twice: the second startup opens the dispatcher its shutdown closed."""
    with CollectorServer() as matomo:
        config = TrackingConfig(url=matomo.base_url, batch_max_age=30.0)
        dispatcher: Dispatcher = (
            ThreadDispatcher(config) if kind == "thread" else AsyncioDispatcher(config)
        )
        app = MatomoMiddleware(
            _returns, url=matomo.base_url, dispatcher=dispatcher, visitor_salt="tests"
        )
        for n in range(2):
            communicator = ApplicationCommunicator(app, dict(LIFESPAN))
            assert await _startup(communicator) == {"type": "lifespan.startup.complete"}
            async with client(app) as http:
                assert (await http.get(f"/{n}")).text == "home"
            assert await _shutdown(communicator) == {"type": "lifespan.shutdown.complete"}
            assert len(matomo.collector.hits) == n + 1  # delivered at shutdown
        stats = dispatcher.stats()
        assert (stats.queued, stats.sent, stats.dropped) == (2, 2, {})
        assert [hit["url"] for hit in matomo.collector.hits] == [
            "http://shop.test/0",
            "http://shop.test/1",
        ]
