"""Delivery metrics of real servers, scraped from their ``/metrics`` while they deliver to a
``CollectorServer`` and while it is down: uvicorn (one process), gunicorn with two workers
aggregated through ``PROMETHEUS_MULTIPROC_DIR``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from matomo_tracking.testing import CollectorServer
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.e2e

Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    with CollectorServer() as server:
        yield server


def scrape(base_url: str) -> Scraped:
    text = httpx.get(base_url + "/metrics", timeout=5, follow_redirects=True).text
    return {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("matomo_")
    }


def until(base_url: str, check: object, timeout: float = 15.0) -> Scraped:
    deadline = time.monotonic() + timeout
    while True:
        scraped = scrape(base_url)
        if check(scraped):  # type: ignore[operator]
            return scraped
        assert time.monotonic() < deadline, scraped
        time.sleep(0.1)


def total(scraped: Scraped, name: str) -> float:
    return sum(v for (n, _), v in scraped.items() if n == name)


def test_uvicorn_metrics_while_delivering_and_while_matomo_is_down(
    matomo: CollectorServer,
) -> None:
    port = free_port()
    args = ["--factory", "tests.metrics.apps:asgi_from_env", "--port", str(port)]
    env = {"MATOMO_URL": matomo.base_url}
    with ServerProcess("uvicorn", [*args, "--log-level", "warning"], port=port, env=env) as app:
        with httpx.Client(base_url=app.base_url, timeout=5) as http:
            for n in range(10):
                assert http.get(f"/items/{n}").status_code == 200
        matomo.collector.wait_for(10)
        up = until(app.base_url, lambda s: s.get(("matomo_hits_sent_total", ())) == 10)
        assert up[("matomo_hits_queued_total", ())] == 10
        assert up[("matomo_queue_hits", ())] == 0
        assert up[("matomo_batch_round_trip_seconds_count", (("status", "200"),))] >= 1

        matomo.refuse()  # Matomo is down: connections refused
        with httpx.Client(base_url=app.base_url, timeout=5) as http:
            for n in range(10, 15):
                assert http.get(f"/items/{n}").status_code == 200
        down = until(
            app.base_url,
            lambda s: s.get(("matomo_batch_round_trip_seconds_count", (("status", "0"),)), 0) >= 2,
        )
        assert down[("matomo_queue_hits", ())] == 5  # held, waiting for Matomo
        assert down[("matomo_batches_retried_total", ())] >= 1
        assert down[("matomo_hits_sent_total", ())] == 10

        matomo.accept()
        back = until(app.base_url, lambda s: s.get(("matomo_hits_sent_total", ())) == 15)
        assert back[("matomo_queue_hits", ())] == 0
    assert len(matomo.collector.hits) == 15


def test_gunicorn_workers_add_up_through_the_multiprocess_directory(
    matomo: CollectorServer, tmp_path: Path
) -> None:
    port = free_port()
    args = ["-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    env = {"MATOMO_URL": matomo.base_url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    with ServerProcess("gunicorn", [*args, "tests.metrics.apps:wsgi_app"], port=port, env=env):
        base = f"http://127.0.0.1:{port}"
        pids = set()
        for n in range(30):  # a connection per request, so that both workers get some
            with httpx.Client(base_url=base, timeout=5) as http:
                pids.add(http.get(f"/items/{n}").text)
        matomo.collector.wait_for(30)
        scraped = until(base, lambda s: total(s, "matomo_hits_sent_total") == 30)
    assert len(pids) == 2, pids
    assert total(scraped, "matomo_hits_queued_total") == 30
    assert total(scraped, "matomo_batches_total") >= 2  # at least one batch per worker
    assert scraped[("matomo_queue_hits", ())] == 0  # livesum of both workers' queues


def test_the_external_sender_serves_its_metrics(matomo: CollectorServer, tmp_path: Path) -> None:
    # The app writes the journal only (sender="external"); `matomo-middleware send` delivers
    # it and serves its metrics, the journal's bytes included.
    from tests.journal.test_journal_e2e import env_for, journal_numbers, load, server

    spool, log = tmp_path / "spool.sqlite3", tmp_path / "handled.log"
    app_port, metrics_port = free_port(), free_port()
    env = env_for(matomo, spool, log, MATOMO_SENDER="external")
    with server("uvicorn", app_port, env) as app:
        load(app.base_url, 40)
        deadline = time.monotonic() + 10
        while journal_numbers(spool) != set(range(40)):
            assert time.monotonic() < deadline, "the app did not journal its hits"
            time.sleep(0.1)
    args = ["send", "--spool", str(spool), "--metrics-port", str(metrics_port)]
    sender_env = {"MATOMO_URL": matomo.base_url}
    with ServerProcess("matomo-middleware", args, port=metrics_port, env=sender_env) as sender:
        base = f"http://127.0.0.1:{metrics_port}"
        done = until(
            base,
            lambda s: (
                s.get(("matomo_hits_sent_total", ())) == 40
                and s.get(("matomo_journal_bytes", (("journal", str(spool)),))) == 0
            ),
        )
        assert done[("matomo_queue_hits", ())] == 0
        assert sender.process is not None
    assert len(matomo.collector.hits) == 40
