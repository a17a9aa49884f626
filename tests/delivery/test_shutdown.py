"""Shutdown during an outage: every way a process ends keeps to ``shutdown_timeout`` and says
how many hits it could not deliver: ``close()``/``aclose()``, interpreter exit, uvicorn's
lifespan shutdown and gunicorn's worker exit on SIGTERM."""

from __future__ import annotations

import logging
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.testing import CollectorServer
from tests.delivery.conftest import DRIVERS, FAST, Make, hit, wait_until
from tests.servers import ROOT, ServerProcess, free_port

#: What a shutdown may take beyond its deadline: the grace close() gives a worker, a poll.
MARGIN = 1.0


@pytest.fixture
def down() -> Iterator[CollectorServer]:
    """A collector that refuses connections (Matomo is down) until ``accept()``."""
    with CollectorServer() as server:
        server.refuse()
        yield server


def undelivered(log: str, pattern: str) -> int:
    """The number of undelivered hits a shutdown log line reports."""
    match = re.search(pattern, log)
    assert match is not None, log
    return int(match.group(1))


def test_close_keeps_its_deadline_with_batches_held_and_counts_each_hit_once(
    make: Make, matomo: CollectorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    matomo.collector.hold()  # every request hangs
    dispatcher = make(url=matomo.base_url, batch_max_hits=10, timeout=1.5)
    for n in range(500):
        assert dispatcher.submit(hit(n))
    time.sleep(0.2)  # the first batch is in flight

    started = time.monotonic()
    assert dispatcher.close(0.5) is False
    assert time.monotonic() - started < 0.5 + MARGIN
    assert dispatcher.stats().dropped == {"shutdown": 500}
    lines = [r.getMessage() for r in caplog.records if "500 hit(s)" in r.getMessage()]
    assert len(lines) == 1, lines
    time.sleep(1.5)  # the request in flight times out after close() gave up on it
    stats = dispatcher.stats()
    assert stats.dropped == {"shutdown": 500}  # counted once
    assert stats.sent == 0
    assert dispatcher.pending == 0


def test_interpreter_exit_keeps_the_deadline_and_logs_what_is_left(
    down: CollectorServer,
) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from matomo_tracking.config import TrackingConfig
        from matomo_tracking.hits import Hit
        from matomo_wsgi import ThreadDispatcher

        config = TrackingConfig(url={down.base_url!r}, shutdown_timeout=1.0, backoff_base=0.05)
        dispatcher = ThreadDispatcher(config)
        for n in range(40):
            params = {{"idsite": "1", "rec": "1", "url": f"http://e/{{n}}"}}
            dispatcher.submit(Hit(params, time.time()))
        time.sleep(0.3)
        print("exiting", flush=True)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "exiting"
    started = time.monotonic()
    _, stderr = process.communicate(timeout=10)
    assert time.monotonic() - started < 1.0 + MARGIN
    assert process.returncode == 0, stderr
    assert undelivered(stderr, r"with (\d+) hit\(s\) undelivered") == 40


def _requests(base_url: str, count: int) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for n in range(count):
            assert client.get(f"/items/{n}").status_code == 200


def _stop(server: ServerProcess) -> float:
    """SIGTERM the server; the seconds until it exited."""
    process = server.process
    assert process is not None
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    return time.monotonic() - started


@pytest.mark.e2e
def test_uvicorn_sigterm_during_an_outage_exits_by_the_deadline(down: CollectorServer) -> None:
    port = free_port()
    env = {
        "MATOMO_URL": down.base_url,
        "MATOMO_SHUTDOWN_TIMEOUT": "2",
        "MATOMO_TIMEOUT": "1",
        "MATOMO_BATCH_MAX_AGE": "0.05",
    }
    args = ["--factory", "tests.asgi.apps:fastapi_from_env", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--log-level", "warning"]
    with ServerProcess("uvicorn", args, port=port, env=env) as server:
        _requests(server.base_url, 30)
        time.sleep(0.3)  # the worker is retrying
        elapsed = _stop(server)
        log = server.log()
    assert elapsed < 2.0 + MARGIN, log
    assert undelivered(log, r"with (\d+) hit\(s\) undelivered") == 30
    down.accept()
    time.sleep(0.2)
    assert down.collector.hits == []  # given up on, never sent later


@pytest.mark.e2e
def test_gunicorn_sigterm_during_an_outage_exits_by_the_deadline(down: CollectorServer) -> None:
    port = free_port()
    env = {"MATOMO_URL": down.base_url, "MATOMO_SHUTDOWN_TIMEOUT": "2", "MATOMO_TIMEOUT": "1"}
    args = [
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "20",
        "--config",
        "python:tests.wsgi.gunicorn_conf",  # the README's worker_exit hook
        "tests.wsgi.flask_app:app",
    ]
    with ServerProcess("gunicorn", args, port=port, env=env) as server:
        _requests(server.base_url, 30)
        time.sleep(0.3)
        elapsed = _stop(server)
        log = server.log()
    # gthread polls its stop flag every second, then the worker's hook flushes for 2 s.
    assert elapsed < 1.0 + 2.0 + MARGIN, log
    assert server.process is not None
    assert server.process.returncode == 0, log
    assert undelivered(log, r"with (\d+) hit\(s\) undelivered") == 30


def _the_next_process_delivers(
    kind: str, config: TrackingConfig, matomo: CollectorServer
) -> DispatchStats:
    """What a dispatcher on the same journal counted once it delivered the 5 hits left there
    and one of its own."""
    second = DRIVERS[kind](config, matomo)
    try:
        assert second.submit(hit(5))
        wait_until(lambda: second.stats().sent == 6)
        return second.stats()
    finally:
        second.close(1.0)


@pytest.mark.parametrize("kind", ["thread", "asyncio"])
def test_a_batch_in_flight_at_the_deadline_is_a_possible_duplicate_for_the_next_process(
    kind: str, matomo: CollectorServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    config = TrackingConfig(**{**FAST, "url": matomo.base_url, "spool": str(spool)})
    matomo.collector.slow(3.0)  # Matomo takes the batch and answers late
    first = DRIVERS[kind](config, matomo)
    for n in range(5):
        assert first.submit(hit(n))
    wait_until(lambda: matomo.collector.in_progress == 1)
    time.sleep(0.5)  # a journal round wrote the hits, leased to this process
    assert first.close(0.3) is False  # the batch is still in flight: handed back

    matomo.collector.heal()
    assert _the_next_process_delivers(kind, config, matomo).possible_duplicates == 5


@pytest.mark.parametrize("kind", ["thread", "asyncio"])
@pytest.mark.parametrize("journaled", ["while in flight", "never"])
def test_a_batch_in_flight_at_the_deadline_not_yet_in_the_journal_is_a_possible_duplicate(
    kind: str, journaled: str, matomo: CollectorServer, tmp_path: Path
) -> None:
    # Another connection holds the journal's write lock, so a round is under way when the
    # batch goes out ("while in flight": the batch's hits are being written by it) or
    # started before them ("never": they wait for the next round, which never comes before
    # the deadline); the lock is let go after the deadline, before the last round.
    spool = tmp_path / "spool.sqlite3"
    config = TrackingConfig(**{**FAST, "url": matomo.base_url, "spool": str(spool)})
    first = DRIVERS[kind](config, matomo)
    blocker = sqlite3.connect(spool, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    if journaled == "never":
        assert first.submit(hit(100))  # its round waits for the lock from now on
        wait_until(lambda: first.stats().sent == 1)  # delivered from memory meanwhile
    matomo.collector.slow(3.0)  # Matomo takes the next batch and answers late
    for n in range(5):
        assert first.submit(hit(n))
    wait_until(lambda: matomo.collector.in_progress == 1)
    letting_go = threading.Timer(0.8, blocker.rollback)
    letting_go.start()
    try:
        assert first.close(0.3) is False  # the batch is still in flight: handed back
    finally:
        letting_go.join()
        blocker.close()

    matomo.collector.heal()
    assert _the_next_process_delivers(kind, config, matomo).possible_duplicates == 5
