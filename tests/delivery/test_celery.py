"""Celery delivery end to end on 127.0.0.1: a real Redis broker and a real Celery worker
(solo pool), both started here; web-side requests through the WSGI and the ASGI middleware
share one ``CeleryDispatcher``; Matomo (a collector) is down for a while, then back: every hit
arrives once, with its time, and the token never travels through the broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from matomo_asgi import MatomoMiddleware as AsgiMiddleware
from matomo_asgi._types import Receive, Scope, Send
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.testing import Collector, CollectorServer
from matomo_wsgi import MatomoMiddleware as WsgiMiddleware
from matomo_wsgi.celery import CeleryDispatcher
from tests.delivery.celery_app import make_app
from tests.delivery.celery_driver import CeleryWorker
from tests.sentinel import SENTINEL_TOKEN

pytestmark = pytest.mark.e2e


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def asgi_requests(app: Any, paths: list[str], times: dict[str, float]) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        for path in paths:
            times["http://shop.test" + path] = time.time()
            started = time.perf_counter()
            assert (await client.get(path)).status_code == 200
            assert time.perf_counter() - started < 0.5  # the loop never waits for the broker


def test_celery_workers_deliver_every_hit_once_across_an_outage(broker: str) -> None:
    published: list[Any] = []
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as matomo:
        matomo.refuse()  # Matomo is down when the hits come
        env = {"MATOMO_BROKER": broker, "MATOMO_URL": matomo.base_url}
        args = ["-A", "tests.delivery.celery_app", "worker", "--pool", "solo"]
        args += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        args += ["--without-heartbeat", "--hostname", "matomo-test@%h"]
        with CeleryWorker("celery", args, port=0, env=env) as worker:
            app, task = make_app(broker, matomo.base_url)

            def record(body: Any = None, **_: Any) -> None:
                published.append(body)

            from celery.signals import before_task_publish  # type: ignore[import-untyped]

            before_task_publish.connect(record, weak=False)
            dispatcher = CeleryDispatcher(task)
            assert isinstance(dispatcher, Dispatcher)
            options: dict[str, Any] = {"url": matomo.base_url, "token_auth": SENTINEL_TOKEN}
            times: dict[str, float] = {}
            wsgi = WsgiMiddleware(wsgi_app, dispatcher=dispatcher, **options)
            with httpx.Client(transport=httpx.WSGITransport(app=wsgi)) as client:
                for n in range(100):
                    url = f"http://shop.test/wsgi/{n}"
                    times[url] = time.time()
                    assert client.get(url).status_code == 200
            asgi = AsgiMiddleware(asgi_app, dispatcher=dispatcher, **options)
            asyncio.run(asgi_requests(asgi, [f"/asgi/{n}" for n in range(100)], times))
            assert dispatcher.flush(5.0)  # all handed to the broker
            handed = dispatcher.stats()
            assert (handed.queued, handed.sent, handed.dropped) == (200, 200, {})

            time.sleep(2.0)  # the outage goes on: the worker retries, the batches wait
            assert matomo.collector.hits == []
            matomo.accept()
            received = matomo.collector.wait_for(200, timeout=20)
            time.sleep(0.5)  # nothing more comes
            assert dispatcher.close(2.0)
            before_task_publish.disconnect(record)
            log = worker.log()
            app.close()

        urls = [h["url"] for h in matomo.collector.hits]
    assert len(urls) == len(set(urls)) == 200, log  # every hit, once
    assert set(urls) == set(times)
    for received_hit in received:
        assert received_hit.authenticated  # the worker's own token
        assert abs(received_hit.recorded_at - times[received_hit["url"]]) < 1.0
    assert "could not reach Matomo" in log  # the outage was met by Celery retries
    assert "Retry in" in log
    # The messages carry hits and their times, never the token.
    assert published
    for body in published:
        assert SENTINEL_TOKEN not in repr(body)
        args_, kwargs, _ = body
        assert kwargs == {}
        [batches] = args_
        assert all(isinstance(data, str) and isinstance(t, float) for b in batches for data, t in b)
