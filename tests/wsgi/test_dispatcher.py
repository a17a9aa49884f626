"""The thread dispatcher: batching, never blocking, bounded queue, the delivery policy executed
over httpx (timeouts, refused connections, redirects), deadlines, sync mode, forks and exit."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import httpx
import pytest

from matomo_tracking.config import TrackingConfig
from matomo_tracking.hits import Hit
from matomo_tracking.testing import Collector, CollectorServer
from matomo_wsgi import ThreadDispatcher
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import ROOT
from tests.wsgi.conftest import COLLECTOR_URL

Make = Callable[..., ThreadDispatcher]


def hit(n: int = 0) -> Hit:
    return Hit({"idsite": "1", "rec": "1", "url": f"http://site.test/{n}"}, time.time())


@pytest.fixture
def make() -> Iterator[Make]:
    """``make(transport_or_app, **config)``: a dispatcher whose client uses that transport
    (a WSGI app is wrapped in ``httpx.WSGITransport``); closed after the test."""
    made: list[ThreadDispatcher] = []

    def build(target: object, **options: object) -> ThreadDispatcher:
        transport = (
            target if isinstance(target, httpx.BaseTransport) else httpx.WSGITransport(target)  # type: ignore[arg-type]
        )
        options.setdefault("url", COLLECTOR_URL)
        dispatcher = ThreadDispatcher(
            TrackingConfig(**options),  # type: ignore[arg-type]
            http_client=httpx.Client(transport=transport),
        )
        made.append(dispatcher)
        return dispatcher

    yield build
    for dispatcher in made:
        dispatcher.close(0.5)


def answer(request: httpx.Request) -> httpx.Response:
    count = len(json.loads(request.content)["requests"])
    return httpx.Response(200, json={"status": "success", "tracked": count, "invalid": 0})


def test_hits_go_in_batches(make: Make, collector: Collector) -> None:
    dispatcher = make(collector.wsgi, batch_max_hits=100, batch_max_age=30)
    assert all(dispatcher.submit(hit(i)) for i in range(250))
    assert dispatcher.flush(5)
    # A backlog goes out in batches side by side (max_concurrent_batches), so in any order.
    assert sorted(r["count"] for r in collector.requests) == [50, 100, 100]
    urls = [f"http://site.test/{i}" for i in range(250)]
    assert sorted(h["url"] for h in collector.hits) == sorted(urls)
    stats = dispatcher.stats()
    assert (stats.queued, stats.sent, stats.batches, stats.dropped_total) == (250, 250, 3, 0)
    assert dispatcher.pending == 0


def test_a_partial_batch_goes_when_it_is_old_enough(make: Make, collector: Collector) -> None:
    dispatcher = make(collector.wsgi, batch_max_age=0.1)
    dispatcher.submit(hit())
    collector.wait_for(1, timeout=2)


def test_submit_never_waits_for_matomo(make: Make, collector: Collector) -> None:
    collector.hold()
    dispatcher = make(collector.wsgi, batch_max_age=0.01, timeout=30)
    dispatcher.submit(hit(-1))
    time.sleep(0.05)  # the worker is now stuck in a held POST
    started = time.perf_counter()
    assert all(dispatcher.submit(hit(i)) for i in range(1000))
    assert time.perf_counter() - started < 0.5
    assert collector.hits == []
    collector.release()
    assert dispatcher.flush(5)
    assert len(collector.hits) == 1001


def test_a_full_queue_drops_and_warns_once(
    make: Make, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.hold()
    dispatcher = make(collector.wsgi, queue_max_hits=10, batch_max_hits=5, timeout=30)
    caplog.set_level(logging.WARNING, logger="matomo_wsgi")
    results = [dispatcher.submit(hit(i)) for i in range(50)]
    assert results.count(True) == 10
    assert dispatcher.stats().dropped == {"queue_full": 40}
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    collector.release()
    assert dispatcher.flush(5)
    assert len(collector.hits) == 10


def test_a_timeout_is_retried_and_counted_as_a_possible_duplicate(make: Make) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ReadTimeout("no answer", request=request)
        return answer(request)

    dispatcher = make(httpx.MockTransport(handler), backoff_base=0.01)
    for i in range(3):
        dispatcher.submit(hit(i))
    assert dispatcher.flush(5)
    stats = dispatcher.stats()
    assert (stats.sent, stats.retried, stats.possible_duplicates) == (3, 1, 3)
    assert "timeout" in (stats.last_error or "")


def test_refused_connections_are_retried_until_close_gives_up(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    dispatcher = make(httpx.MockTransport(refuse), backoff_base=0.05, backoff_max=0.2)
    for i in range(20):
        dispatcher.submit(hit(i))
    time.sleep(0.3)
    caplog.set_level(logging.WARNING, logger="matomo_wsgi")
    started = time.perf_counter()
    assert dispatcher.close(0.5) is False
    assert time.perf_counter() - started < 1.5
    stats = dispatcher.stats()
    assert stats.retried >= 2
    assert stats.possible_duplicates == 0
    assert stats.dropped == {"shutdown": 20}
    assert "connect" in (stats.last_error or "")
    assert any("20 hit(s) undelivered" in r.getMessage() for r in caplog.records)
    assert dispatcher.submit(hit()) is False
    assert dispatcher.stats().dropped == {"shutdown": 20, "closed": 1}


def test_redirects_are_never_followed_and_the_token_stays_in_the_body(make: Make) -> None:
    requests: list[httpx.Request] = []

    def redirect(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(302, headers={"Location": "http://elsewhere.test/matomo.php"})

    dispatcher = make(httpx.MockTransport(redirect), token_auth=SENTINEL_TOKEN)
    dispatcher.submit(hit())
    assert dispatcher.flush(5)
    [request] = requests
    assert request.url == "http://collector.test/matomo.php"
    assert SENTINEL_TOKEN not in str(request.url)
    assert json.loads(request.content)["token_auth"] == SENTINEL_TOKEN
    stats = dispatcher.stats()
    assert stats.failed == 1
    assert "redirect" in (stats.last_error or "")
    assert SENTINEL_TOKEN not in (stats.last_error or "")


def test_sync_mode_delivers_inline_within_the_timeout(make: Make, collector: Collector) -> None:
    dispatcher = make(collector.wsgi, sync_mode=True)
    assert dispatcher.submit(hit(1))
    assert [h["url"] for h in collector.hits] == ["http://site.test/1"]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = make(httpx.MockTransport(refuse), sync_mode=True, timeout=0.3, backoff_base=0.05)
    started = time.perf_counter()
    assert down.submit(hit(2)) is True
    assert time.perf_counter() - started < 1.0
    assert down.stats().dropped == {"timeout": 1}


def test_stats_are_consistent_under_concurrent_submits(make: Make) -> None:
    dispatcher = make(httpx.MockTransport(answer), batch_max_age=0.01)

    def submit_many() -> None:
        for i in range(500):
            dispatcher.submit(hit(i))

    threads = [threading.Thread(target=submit_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert dispatcher.flush(5)
    stats = dispatcher.stats()
    assert (stats.queued, stats.sent, stats.dropped_total) == (4000, 4000, 0)


def test_constructor_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="TrackingConfig"):
        ThreadDispatcher({"url": COLLECTOR_URL})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="http_client"):
        ThreadDispatcher(TrackingConfig(url=COLLECTOR_URL), http_client=httpx.AsyncClient())  # type: ignore[arg-type]


# -- processes ----------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_worker() -> None:
    with CollectorServer() as server:
        dispatcher = ThreadDispatcher(
            TrackingConfig(url=server.base_url, batch_max_age=0.05, shutdown_timeout=2)
        )
        try:
            dispatcher.submit(hit(0))
            assert dispatcher.flush(5)  # the parent's worker thread is running
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
                pid = os.fork()
            if pid == 0:  # the child: report through the exit code only
                code = 1
                try:
                    fresh = dispatcher.stats().queued == 0 and dispatcher.pending == 0
                    dispatcher.submit(hit(1))
                    code = 0 if fresh and dispatcher.flush(5) else 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            server.collector.wait_for(2)
            dispatcher.submit(hit(2))
            assert dispatcher.flush(5)  # the parent goes on with its own worker
            assert sorted(h["url"] for h in server.collector.hits) == [
                f"http://site.test/{i}" for i in range(3)
            ]
        finally:
            dispatcher.close(1)


EXIT_SCRIPT = """
import sys, time
from matomo_tracking.config import TrackingConfig
from matomo_tracking.hits import Hit
from matomo_wsgi import ThreadDispatcher

url, mode = sys.argv[1], sys.argv[2]
dispatcher = ThreadDispatcher(TrackingConfig(url=url, batch_max_age=30, batch_max_hits=100))
for i in range(1000):
    dispatcher.submit(Hit({"idsite": "1", "rec": "1", "url": f"http://site.test/{i}"}, time.time()))
if mode == "worker_exit":
    from matomo_wsgi.gunicorn import worker_exit
    worker_exit(None, None)
    assert dispatcher.submit(Hit({"idsite": "1", "rec": "1"}, time.time())) is False
# mode "atexit": nothing; the interpreter's exit delivers
"""


@pytest.mark.parametrize("mode", ["atexit", "worker_exit"])
def test_queued_hits_are_delivered_when_the_process_exits(mode: str) -> None:
    with CollectorServer() as server:
        script = textwrap.dedent(EXIT_SCRIPT)
        done = subprocess.run(
            [sys.executable, "-c", script, server.base_url, mode],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert len(server.collector.hits) == 1000
