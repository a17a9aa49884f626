"""Delivery health as metrics, fed by a real ``DeliveryQueue``'s events: Prometheus scraped
from a real ``/metrics`` endpoint (and aggregated over processes with
``PROMETHEUS_MULTIPROC_DIR``), OpenTelemetry read by an in-memory reader; both count what
``stats()`` counts, while Matomo answers and while it is down."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from matomo_asgi import AsyncioDispatcher
from matomo_tracking import Hit, TrackingConfig, encode_hit
from matomo_tracking.answers import Answer, TransportError
from matomo_tracking.delivery_queue import Batch, DeliveryQueue
from matomo_tracking.metrics import OpenTelemetryMetrics, PrometheusMetrics
from matomo_tracking.testing import CollectorServer
from matomo_wsgi import ThreadDispatcher
from tests.servers import ROOT, free_port

NOW = 1_700_000_000.0


def _queue() -> tuple[DeliveryQueue, SimpleNamespace]:
    config = TrackingConfig(url="https://matomo.example.org", batch_max_hits=5)
    queue = DeliveryQueue(config)
    return queue, SimpleNamespace(queue=queue, lock=threading.Lock())


def _hit(n: int) -> Any:
    params = {"idsite": "1", "rec": "1", "url": f"http://shop.example/{n}", "_id": "a" * 16}
    return encode_hit(Hit(params, NOW))


def _batch(queue: DeliveryQueue, now: float) -> Batch:
    step = queue.next_step(now, 0.5)
    assert isinstance(step, Batch), step
    return step


def _fill(queue: DeliveryQueue) -> None:
    for n in range(5):
        queue.admit(_hit(n), NOW)


def _deliver_then_fail(queue: DeliveryQueue, *, filled: bool = False) -> None:
    """Matomo takes a batch (one hit invalid), then is down: a retry, then shutdown drops."""
    if not filled:
        _fill(queue)
    batch = _batch(queue, NOW)
    answer = {"status": "success", "tracked": 4, "invalid": 1}
    queue.answered(batch, Answer(200, json.dumps(answer).encode()), NOW + 0.04)
    for n in range(5, 8):
        queue.admit(_hit(n), NOW + 1)
    batch = _batch(queue, NOW + 2)
    queue.failed(batch, TransportError.CONNECT, "connection refused", NOW + 2.5)
    queue.close(NOW + 3)
    queue.next_step(NOW + 4, 0.5)  # past the deadline: what is left is given up


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("matomo_")
    }


@pytest.fixture
def endpoint(registry: CollectorRegistry) -> Iterator[int]:
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_prometheus_counts_what_stats_counts_scraped_from_a_real_endpoint(
    registry: CollectorRegistry, endpoint: int
) -> None:
    queue, dispatcher = _queue()
    PrometheusMetrics(registry=registry).attach(dispatcher)
    _fill(queue)
    assert _scrape(endpoint)[("matomo_queue_hits", ())] == 5
    _deliver_then_fail(queue, filled=True)
    stats = queue.stats()
    scraped = _scrape(endpoint)
    expected = {
        ("matomo_hits_queued_total", ()): stats.queued,
        ("matomo_hits_sent_total", ()): stats.sent,
        ("matomo_hits_invalid_total", ()): stats.invalid,
        ("matomo_hits_unconfirmed_total", ()): stats.unconfirmed,
        ("matomo_hits_possible_duplicates_total", ()): stats.possible_duplicates,
        ("matomo_hits_failed_total", ()): stats.failed,
        ("matomo_hits_dropped_total", (("reason", "shutdown"),)): stats.dropped["shutdown"],
        ("matomo_batches_total", ()): stats.batches,
        ("matomo_batches_retried_total", ()): stats.retried,
        ("matomo_queue_hits", ()): 0,
    }
    assert {key: scraped[key] for key in expected} == expected
    assert (stats.queued, stats.sent, stats.invalid, stats.retried) == (8, 5, 1, 1)
    assert stats.dropped["shutdown"] == 3
    # Two round trips: one answered 200 in 40 ms, one without an answer after 0.5 s.
    assert scraped[("matomo_batch_round_trip_seconds_count", (("status", "200"),))] == 1
    assert scraped[("matomo_batch_round_trip_seconds_count", (("status", "0"),))] == 1
    bucket = ("matomo_batch_round_trip_seconds_bucket", (("le", "0.05"), ("status", "200")))
    assert scraped[bucket] == 1


def test_a_journal_gauge_per_journal(registry: CollectorRegistry, endpoint: int) -> None:
    metrics = PrometheusMetrics(registry=registry)
    metrics.journal_bytes("/var/spool/a.sqlite3", 4096)
    metrics.journal_bytes("/var/spool/b.sqlite3", 10)
    metrics.journal_bytes("/var/spool/a.sqlite3", 2048)
    scraped = _scrape(endpoint)
    assert scraped[("matomo_journal_bytes", (("journal", "/var/spool/a.sqlite3"),))] == 2048
    assert scraped[("matomo_journal_bytes", (("journal", "/var/spool/b.sqlite3"),))] == 10


def test_opentelemetry_through_the_users_meter_provider() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics = OpenTelemetryMetrics(meter_provider=MeterProvider(metric_readers=[reader]))
    queue, dispatcher = _queue()
    metrics.attach(dispatcher)
    _deliver_then_fail(queue)
    metrics.journal_bytes("/var/spool/a.sqlite3", 512)
    stats = queue.stats()

    points: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "matomo_middleware"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                    points[key] = point.value if hasattr(point, "value") else point.count
    assert points[("matomo.hits.queued", ())] == stats.queued == 8
    assert points[("matomo.hits.sent", ())] == stats.sent
    assert points[("matomo.hits.invalid", ())] == stats.invalid
    assert points[("matomo.hits.dropped", (("reason", "shutdown"),))] == 3
    assert points[("matomo.batches", ())] == stats.batches
    assert points[("matomo.batches.retried", ())] == stats.retried
    assert points[("matomo.batch.round_trip", (("status", 200),))] == 1
    assert points[("matomo.batch.round_trip", (("status", 0),))] == 1
    assert points[("matomo.queue.hits", ())] == 0  # all settled or given up
    assert points[("matomo.journal.bytes", (("journal", "/var/spool/a.sqlite3"),))] == 512


@pytest.mark.parametrize(
    ("make", "module", "extra"),
    [
        (PrometheusMetrics, "prometheus_client", "prometheus"),
        (OpenTelemetryMetrics, "opentelemetry", "otel"),
    ],
    ids=["prometheus", "otel"],
)
def test_a_missing_extra_is_named_at_construction(
    monkeypatch: pytest.MonkeyPatch, make: Any, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"matomo-middleware\[{extra}\]"):
        make()


def test_attaching_to_something_without_a_queue_says_what_is_needed(
    registry: CollectorRegistry,
) -> None:
    with pytest.raises(TypeError, match=r"\.queue \(a DeliveryQueue\) and \.lock"):
        PrometheusMetrics(registry=registry).attach(object())  # type: ignore[arg-type]


WORKER = """
import json, sys
from matomo_tracking.metrics import PrometheusMetrics
from tests.metrics.test_metrics import _deliver_then_fail, _queue
metrics = PrometheusMetrics()
queue, dispatcher = _queue()
metrics.attach(dispatcher)
_deliver_then_fail(queue)
for n in range(int(sys.argv[1])):
    queue.reopen()
    queue.admit(__import__("tests.metrics.test_metrics", fromlist=["_hit"])._hit(100 + n), 0)
metrics.journal_bytes("/spool/shared.sqlite3", int(sys.argv[2]))
print("ready", flush=True)
sys.stdin.read()  # stay alive (live* gauges count live processes) until told to end
"""


def test_gunicorn_style_multiprocess_aggregation(tmp_path: Path) -> None:
    # Two worker processes with PROMETHEUS_MULTIPROC_DIR, as under gunicorn: counters add up,
    # the queue gauge is the sum of the live workers' queues, the shared journal one figure.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(queued), str(journal)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        for queued, journal in ((2, 1000), (3, 1200))
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        code = (
            "from prometheus_client import CollectorRegistry, generate_latest\n"
            "from prometheus_client.multiprocess import MultiProcessCollector\n"
            "r = CollectorRegistry(); MultiProcessCollector(r)\n"
            "print(generate_latest(r).decode())"
        )
        text = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
    finally:
        for worker in workers:
            worker.communicate("", timeout=10)
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("matomo_")
    }
    assert samples[("matomo_hits_queued_total", ())] == 2 * 8 + 2 + 3
    assert samples[("matomo_hits_sent_total", ())] == 2 * 5
    assert samples[("matomo_hits_dropped_total", (("reason", "shutdown"),))] == 2 * 3
    assert samples[("matomo_queue_hits", ())] == 2 + 3  # livesum over the workers
    journal = [v for (name, _), v in samples.items() if name == "matomo_journal_bytes"]
    assert len(journal) == 1  # one figure for the one journal, not one per worker
    assert journal[0] in (1000, 1200)  # the most recent of the two


@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_metrics_attached_before_a_fork_count_the_childs_delivery(
    registry: CollectorRegistry, kind: str
) -> None:
    # gunicorn --preload: the dispatcher and its metrics are made in the master; each forked
    # worker starts a queue of its own, which must keep the metrics (it did not: 0 counted).
    with CollectorServer() as matomo:
        config = TrackingConfig(url=matomo.base_url, batch_max_age=0.05)
        dispatcher: Any = (
            ThreadDispatcher(config) if kind == "thread" else AsyncioDispatcher(config)
        )
        PrometheusMetrics(registry=registry).attach(dispatcher)
        reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
        pid = os.fork()
        if pid == 0:  # the worker: deliver 3 hits, report what its registry counted
            code = 1
            try:
                url = "http://w.example/{}"
                hits = [
                    Hit({"idsite": "1", "rec": "1", "url": url.format(n)}, time.time())
                    for n in range(3)
                ]

                async def deliver() -> None:
                    for hit in hits:
                        dispatcher.submit(hit)
                    await dispatcher.aflush(5.0)

                if kind == "thread":
                    for hit in hits:
                        dispatcher.submit(hit)
                    dispatcher.flush(5.0)
                else:
                    asyncio.run(deliver())
                sent = registry.get_sample_value("matomo_hits_sent_total")
                writer.send((sent, registry.get_sample_value("matomo_queue_hits")))
                code = 0
            finally:
                os._exit(code)
        try:
            assert reader.poll(20), "the forked worker reported nothing"
            counted = reader.recv()
        finally:
            os.waitpid(pid, 0)
        assert counted == (3.0, 0.0)
        assert len(matomo.collector.hits) == 3
        assert registry.get_sample_value("matomo_hits_sent_total") == 0  # the master sent none
