"""AsyncioDispatcher: batching, the queue budget, answers and transport errors, flushing and
closing, threads and event loops that come and go."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import httpx
import pytest

from matomo_asgi import AsyncioDispatcher
from matomo_tracking.config import TrackingConfig
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.hits import Hit
from matomo_tracking.testing import Collector
from tests.asgi.conftest import MATOMO
from tests.sentinel import SENTINEL_TOKEN

Handler = Callable[[httpx.Request], httpx.Response]


def _hit(n: int) -> Hit:
    return Hit({"idsite": "1", "rec": "1", "url": f"http://shop.test/{n}"}, time.time())


def _config(**options: Any) -> TrackingConfig:
    settings: dict[str, Any] = {"url": MATOMO, "batch_max_age": 30.0, "backoff_base": 0.001}
    settings.update(options)
    return TrackingConfig(**settings)


def _mock(handler: Handler, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), **kwargs)


def _ok(request: httpx.Request) -> httpx.Response:
    count = len(json.loads(request.content)["requests"])
    return httpx.Response(200, json={"status": "success", "tracked": count, "invalid": 0})


def test_it_is_a_dispatcher() -> None:
    assert isinstance(AsyncioDispatcher(_config()), Dispatcher)


@pytest.mark.anyio
async def test_batches_are_cut_by_count(
    collector: Collector, matomo_http: httpx.AsyncClient
) -> None:
    dispatcher = AsyncioDispatcher(_config(batch_max_hits=100), http_client=matomo_http)
    assert all(dispatcher.submit(_hit(n)) for n in range(250))
    assert await dispatcher.aclose(5.0)
    assert [r["count"] for r in collector.requests] == [100, 100, 50]
    assert [h["url"] for h in collector.hits] == [f"http://shop.test/{n}" for n in range(250)]
    stats = dispatcher.stats()
    assert (stats.queued, stats.sent, stats.batches, stats.dropped) == (250, 250, 3, {})


@pytest.mark.anyio
async def test_batches_are_cut_by_bytes() -> None:
    sizes: list[int] = []

    def record(request: httpx.Request) -> httpx.Response:
        sizes.append(len(request.content))
        return _ok(request)

    async with _mock(record) as http:
        dispatcher = AsyncioDispatcher(_config(batch_max_bytes=1000), http_client=http)
        for n in range(40):
            dispatcher.submit(_hit(n))
        assert await dispatcher.aclose(5.0)
    assert len(sizes) == 3
    assert max(sizes) <= 1000 + 64  # the batch's hits fit; the envelope adds a few bytes
    assert dispatcher.stats().sent == 40


@pytest.mark.anyio
async def test_a_lone_hit_waits_at_most_batch_max_age(
    collector: Collector, matomo_http: httpx.AsyncClient
) -> None:
    dispatcher = AsyncioDispatcher(_config(batch_max_age=0.2), http_client=matomo_http)
    dispatcher.submit(_hit(1))
    await asyncio.sleep(0.1)
    assert collector.hits == []
    await asyncio.sleep(0.3)
    assert len(collector.hits) == 1
    await dispatcher.aclose(1.0)


@pytest.mark.anyio
async def test_a_full_queue_drops_counts_and_warns_once(
    collector: Collector, matomo_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    collector.hold()
    dispatcher = AsyncioDispatcher(
        _config(queue_max_hits=5, batch_max_hits=5), http_client=matomo_http
    )
    assert [dispatcher.submit(_hit(n)) for n in range(5)] == [True] * 5
    await asyncio.sleep(0.05)  # the batch is posted and held: still counted in the queue
    assert [dispatcher.submit(_hit(n)) for n in range(5, 12)] == [False] * 7
    assert dispatcher.stats().dropped == {"queue_full": 7}
    warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    collector.release()
    assert await dispatcher.aflush(5.0)
    assert dispatcher.submit(_hit(12))  # room again
    assert await dispatcher.aclose(5.0)
    assert len(collector.hits) == 6


@pytest.mark.anyio
async def test_closed_drops_until_started_again(
    collector: Collector, matomo_http: httpx.AsyncClient
) -> None:
    dispatcher = AsyncioDispatcher(_config(), http_client=matomo_http)
    assert await dispatcher.aclose(1.0)
    assert not dispatcher.submit(_hit(1))
    assert dispatcher.stats().dropped == {"closed": 1}
    dispatcher.start()
    assert dispatcher.submit(_hit(2))
    assert await dispatcher.aclose(1.0)
    assert [h["url"] for h in collector.hits] == ["http://shop.test/2"]


@pytest.mark.anyio
async def test_redirects_are_never_followed_even_by_a_client_that_would() -> None:
    urls: list[str] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://elsewhere.test/matomo.php"})

    async with _mock(redirect, follow_redirects=True) as http:
        dispatcher = AsyncioDispatcher(_config(token_auth=SENTINEL_TOKEN), http_client=http)
        dispatcher.submit(_hit(1))
        await dispatcher.aclose(2.0)
    assert urls == ["http://matomo.test/matomo.php"]
    stats = dispatcher.stats()
    assert stats.failed == 1
    assert "redirect" in str(stats.last_error)
    assert "http://elsewhere.test/matomo.php" in str(stats.last_error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "duplicates"),
    [
        (httpx.ConnectError("refused"), 0),
        (httpx.ConnectTimeout("slow connect"), 0),
        (httpx.ReadTimeout("no answer"), 2),  # sent in full, no answer: maybe processed
        (httpx.WriteTimeout("stuck"), 0),  # not sent in full: Matomo cannot process it
        (httpx.RemoteProtocolError("cut"), 2),  # the answer was cut: maybe processed
        (httpx.ReadError("reset"), 2),
    ],
    ids=lambda value: type(value).__name__,
)
async def test_transport_errors_are_retried(error: Exception, duplicates: int) -> None:
    calls: list[bytes] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.content)
        if len(calls) == 1:
            raise error
        return _ok(request)

    async with _mock(flaky) as http:
        dispatcher = AsyncioDispatcher(_config(), http_client=http)
        dispatcher.submit(_hit(1))
        dispatcher.submit(_hit(2))
        assert await dispatcher.aclose(5.0)
    stats = dispatcher.stats()
    assert (stats.sent, stats.retried, stats.possible_duplicates) == (2, 1, duplicates)
    assert len(calls) == 2
    assert type(error).__name__ in str(stats.last_error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "retried"), [(500, True), (503, True), (429, True), (400, False)]
)
async def test_answers_are_classified(status: int, retried: bool) -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(status, text="nope")
        return _ok(request)

    async with _mock(answer) as http:
        dispatcher = AsyncioDispatcher(_config(), http_client=http)
        dispatcher.submit(_hit(1))
        assert await dispatcher.aclose(5.0)
    stats = dispatcher.stats()
    assert (stats.sent, stats.failed, stats.retried) == ((1, 0, 1) if retried else (0, 1, 0))


@pytest.mark.anyio
async def test_the_token_travels_in_the_body_only_and_never_in_errors() -> None:
    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(403, text=f"bad token {SENTINEL_TOKEN}")

    async with _mock(refuse) as http:
        dispatcher = AsyncioDispatcher(_config(token_auth=SENTINEL_TOKEN), http_client=http)
        dispatcher.submit(_hit(1))
        await dispatcher.aclose(2.0)
    [request] = seen
    assert SENTINEL_TOKEN not in str(request.url)
    assert json.loads(request.content)["token_auth"] == SENTINEL_TOKEN
    assert request.headers["content-type"] == "application/json"
    assert SENTINEL_TOKEN not in str(dispatcher.stats())
    assert SENTINEL_TOKEN not in repr(dispatcher)


@pytest.mark.anyio
async def test_submit_never_raises() -> None:
    dispatcher = AsyncioDispatcher(_config())
    assert not dispatcher.submit(cast(Hit, object()))
    assert dispatcher.stats().dropped == {"error": 1}
    await dispatcher.aclose(0.1)


@pytest.mark.anyio
async def test_submits_from_other_threads_reach_the_loops_worker(
    collector: Collector, matomo_http: httpx.AsyncClient
) -> None:
    dispatcher = AsyncioDispatcher(_config(batch_max_hits=10), http_client=matomo_http)
    dispatcher.start()

    def many(first: int) -> list[bool]:
        return [dispatcher.submit(_hit(n)) for n in range(first, first + 50)]

    results = await asyncio.gather(*(asyncio.to_thread(many, i * 50) for i in range(4)))
    assert all(all(r) for r in results)
    assert await dispatcher.aclose(5.0)
    assert sorted(int(h["url"].rsplit("/", 1)[1]) for h in collector.hits) == list(range(200))


@pytest.mark.anyio
async def test_aflush_has_a_deadline(collector: Collector, matomo_http: httpx.AsyncClient) -> None:
    collector.hold()
    dispatcher = AsyncioDispatcher(_config(), http_client=matomo_http)
    dispatcher.submit(_hit(1))
    started = time.monotonic()
    assert not await dispatcher.aflush(0.2)
    assert 0.15 < time.monotonic() - started < 1.0
    assert dispatcher.pending == 1
    collector.release()
    assert await dispatcher.aflush(2.0)
    assert dispatcher.pending == 0
    await dispatcher.aclose(1.0)


def test_a_batch_in_flight_when_its_loop_ends_is_sent_by_the_next_loop() -> None:
    collector = Collector()
    collector.hold()  # the in-process collector waits on the request's own loop
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=collector.asgi))
    dispatcher = AsyncioDispatcher(_config(batch_max_age=0.01), http_client=http)

    async def first() -> None:
        for n in range(3):
            dispatcher.submit(_hit(n))
        await asyncio.sleep(0.1)  # posted, held; then the loop ends and cancels the worker

    asyncio.run(first())
    assert collector.hits == []
    assert dispatcher.pending == 3
    collector.release()

    async def second() -> None:
        dispatcher.submit(_hit(3))
        assert await dispatcher.aclose(2.0)

    asyncio.run(second())
    assert [h["url"] for h in collector.hits] == [f"http://shop.test/{n}" for n in range(4)]
