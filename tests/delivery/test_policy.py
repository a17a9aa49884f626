"""The pieces the dispatchers share: a delivery suspended at a wait and resumed elsewhere (what
the Celery task does between retries), the Celery messages, a broker that cannot be reached,
and ``sync_mode`` in both middlewares executing the same policy inline."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import pytest
from celery import Celery  # type: ignore[import-untyped]

from matomo_asgi import MatomoMiddleware as AsgiMiddleware
from matomo_asgi._types import Receive, Scope
from matomo_asgi._types import Send as AsgiSend
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import (
    Answer,
    BatchDelivery,
    Send,
    Sleep,
    StatsRecorder,
    TransportError,
)
from matomo_tracking.testing import CollectorServer
from matomo_tracking.wire import EncodedHit, encode_hit
from matomo_wsgi import MatomoMiddleware as WsgiMiddleware
from matomo_wsgi.celery import (
    CeleryDispatcher,
    pack_batches,
    register_delivery_task,
    unpack_batches,
)
from tests.delivery.conftest import hit
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import free_port

NOW = 1_800_000_000.0
CONFIG = TrackingConfig(url="http://matomo.test", backoff_base=1.0, backoff_max=8.0)


def encoded(count: int, start: int = 0) -> list[EncodedHit]:
    return [encode_hit(hit(n, created=NOW - 5)) for n in range(start, start + count)]


def test_a_suspended_delivery_resumes_where_it_stopped() -> None:
    stats = StatsRecorder()
    first = BatchDelivery(encoded(6), CONFIG, stats)
    step = first.next_step(NOW, 0.5)
    assert isinstance(step, Send)
    first.answered(Answer(413), NOW)  # split in halves of 3
    step = first.next_step(NOW, 0.5)
    assert isinstance(step, Send)
    assert step.count == 3
    first.answered(Answer(503), NOW)
    wait = first.next_step(NOW, 0.5)
    assert wait == Sleep(0.5)  # attempt 0: base x draw

    batches, attempt = first.suspend()
    assert [len(b) for b in batches] == [3, 3]  # the split is kept
    assert attempt == 1
    assert first.next_step(NOW, 0.5) is None  # nothing left here

    later = BatchDelivery.resume(unpack_batches(pack_batches(batches)), attempt, CONFIG, stats)
    step = later.next_step(NOW + 10, 0.5)  # the wait is over: send at once
    assert isinstance(step, Send)
    assert [e["cdo"] for e in json.loads(step.body)["requests"]] == ["15"] * 3  # its age now
    later.failed(TransportError.CONNECT, "refused", NOW + 10)
    assert later.next_step(NOW + 10, 0.5) == Sleep(1.0)  # the backoff went on growing
    later.suspend()
    assert later.remaining == 0
    snapshot = stats.snapshot()
    assert (snapshot.retried, snapshot.sent) == (3, 0)


def test_suspend_refuses_a_send_in_flight() -> None:
    delivery = BatchDelivery(encoded(1), CONFIG, StatsRecorder())
    delivery.next_step(NOW, 0.5)
    with pytest.raises(RuntimeError, match="answer the previous Send first"):
        delivery.suspend()


def test_an_error_is_logged_once_while_it_lasts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="matomo_tracking")
    stats = StatsRecorder()
    delivery = BatchDelivery(encoded(2), CONFIG, stats)

    def attempt(outcome: Answer | TransportError) -> None:
        step = delivery.next_step(NOW, 0.5)
        if isinstance(step, Sleep):
            step = delivery.next_step(NOW, 0.5)
        assert isinstance(step, Send)
        if isinstance(outcome, Answer):
            delivery.answered(outcome, NOW)
        else:
            delivery.failed(outcome, "refused", NOW)

    for _ in range(3):
        attempt(TransportError.CONNECT)  # an outage: one warning, then debug lines
    attempt(Answer(503))  # another error: a warning
    attempt(Answer(200, b'{"tracked": 2, "invalid": 0}'))
    levels = [
        (r.levelname, r.getMessage().split(";")[0])
        for r in caplog.records
        if r.name == "matomo_tracking.delivery"
    ]
    assert levels == [
        ("WARNING", "matomo: could not reach Matomo (connect: refused)"),
        ("DEBUG", "matomo: could not reach Matomo (connect: refused)"),
        ("DEBUG", "matomo: could not reach Matomo (connect: refused)"),
        ("WARNING", "matomo: Matomo answered HTTP 503"),
        ("INFO", "matomo: Matomo accepts hits again"),
    ]
    assert stats.last_error == "Matomo answered HTTP 503; retrying 2 hit(s) (attempt 5)"


@pytest.mark.parametrize(("status", "duplicates"), [(504, 3), (502, 3), (503, 0)])
def test_a_gateway_timeout_or_lost_answer_may_have_reached_matomo(
    status: int, duplicates: int
) -> None:
    stats = StatsRecorder()
    delivery = BatchDelivery(encoded(3), CONFIG, stats)
    delivery.next_step(NOW, 0.5)
    delivery.answered(Answer(status), NOW)
    assert stats.snapshot().possible_duplicates == duplicates
    assert stats.retried == 1


def test_celery_messages_carry_hits_and_times_only() -> None:
    batches = [encoded(2), encoded(1, start=2)]
    packed = pack_batches(batches)

    assert json.loads(json.dumps(packed)) == packed  # Celery's JSON serializer
    assert unpack_batches(json.loads(json.dumps(packed))) == batches
    assert packed[0][0] == [batches[0][0].data.decode(), NOW - 5]


@pytest.mark.parametrize(
    "packed",
    ["x", ["x"], [["x"]], [[["data"]]], [[[1, 2.0]]], [[["{}", "now"]]], [[["{}", True]]]],
)
def test_malformed_celery_arguments_are_refused(packed: object) -> None:
    with pytest.raises(ValueError, match="expected"):
        unpack_batches(packed)


def test_an_unreachable_broker_is_retried_until_close_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    app = Celery("unreachable", broker=f"redis://127.0.0.1:{free_port()}/0")
    # Fail fast (kombu's default is to retry the connection for seconds; the thread would
    # only be busier, the requests would not wait either way).
    app.conf.broker_transport_options = {"max_retries": 1, "interval_start": 0}
    task = register_delivery_task(
        app, url="http://matomo.test", token_auth=SENTINEL_TOKEN, backoff_base=0.05
    )
    dispatcher = CeleryDispatcher(task)
    try:
        started = time.perf_counter()
        for n in range(20):
            assert dispatcher.submit(hit(n))
        assert time.perf_counter() - started < 0.5  # submit never waits for the broker
        time.sleep(0.5)
        assert dispatcher.close(0.5) is False
    finally:
        app.close()
    stats = dispatcher.stats()
    assert stats.dropped == {"shutdown": 20}
    assert stats.retried >= 2
    assert "could not reach the Celery broker" in (stats.last_error or "")
    broker_warnings = [r for r in caplog.records if "Celery broker" in r.getMessage()]
    assert len(broker_warnings) == 1  # the same failure again is logged at DEBUG
    assert repr(dispatcher).startswith("CeleryDispatcher(task='matomo_wsgi.deliver'")


def test_the_celery_dispatcher_needs_a_registered_task() -> None:
    with pytest.raises(TypeError, match="register_delivery_task"):
        CeleryDispatcher(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="http_client"):
        register_delivery_task(Celery("x"), url="http://m.test", http_client=object())  # type: ignore[arg-type]


def _ok_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def _ok_asgi(scope: Scope, receive: Receive, send: AsgiSend) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_sync_mode_delivers_before_a_wsgi_request_returns(matomo: CollectorServer) -> None:
    matomo.collector.fail_with(503, count=1)  # the first attempt fails: retried inline
    app = WsgiMiddleware(_ok_app, url=matomo.base_url, sync_mode=True, backoff_base=0.01)
    with httpx.Client(transport=httpx.WSGITransport(app=app)) as client:
        assert client.get("http://shop.test/a").status_code == 200
    assert [h["url"] for h in matomo.collector.hits] == ["http://shop.test/a"]
    assert matomo.collector.answered == [503, 200]
    assert app.dispatcher.stats().retried == 1


@pytest.mark.anyio
async def test_sync_mode_delivers_before_an_asgi_request_returns(
    matomo: CollectorServer,
) -> None:
    matomo.collector.fail_with(503, count=1)
    app = AsgiMiddleware(_ok_asgi, url=matomo.base_url, sync_mode=True, backoff_base=0.01)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        assert (await client.get("/a")).status_code == 200
        assert [h["url"] for h in matomo.collector.hits] == ["http://shop.test/a"]
    assert matomo.collector.answered == [503, 200]
    assert app.stats().retried == 1
    await app.aclose(1.0)
