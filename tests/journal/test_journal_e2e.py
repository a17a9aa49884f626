"""The journal with real servers on 127.0.0.1: uvicorn and gunicorn (two workers sharing one
journal) through an outage longer than their memory queue, a SIGKILL with Matomo refusing,
``sender="external"`` with ``matomo-middleware send`` (``--once``, killed and restarted), and
an app that opens no connection at all."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from matomo_tracking.testing import Collector, CollectorServer
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import BIN, ROOT, ServerProcess, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    with CollectorServer(Collector()) as server:
        yield server


def server(kind: str, port: int, env: dict[str, str]) -> ServerProcess:
    """uvicorn with the ASGI app, or gunicorn (2 workers) with the WSGI app."""
    if kind == "uvicorn":
        args = ["--factory", "tests.journal.apps:asgi_from_env", "--port", str(port)]
        args += ["--host", "127.0.0.1", "--log-level", "warning"]
        return ServerProcess("uvicorn", args, port=port, env=env)
    args = ["-w", "2", "-b", f"127.0.0.1:{port}", "-c", "tests/wsgi/gunicorn_conf.py"]
    args += ["--log-level", "warning", "tests.journal.apps:wsgi_from_env()"]
    return ServerProcess("gunicorn", args, port=port, env=env)


def get(base: str, n: int) -> None:
    with urllib.request.urlopen(f"{base}/n/{n}", timeout=10) as response:
        assert response.status == 200


def load(base: str, count: int, *, start: int = 0, workers: int = 4) -> None:
    """``count`` requests, ``workers`` at a time (a bounded load)."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda n: get(base, n), range(start, start + count)))


def handled(log: Path) -> dict[int, float]:
    """What the handlers noted: request number -> the time it was handled."""
    if not log.exists():
        return {}
    return {int(n): float(t) for n, t in (line.split() for line in log.read_text().splitlines())}


def delivered(matomo: CollectorServer) -> list[int]:
    return [int(h["url"].rsplit("/", 1)[1]) for h in matomo.collector.hits]


def wait_for(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)


def env_for(matomo: CollectorServer, spool: Path, log: Path, **extra: str) -> dict[str, str]:
    return {
        "MATOMO_URL": matomo.base_url,
        "MATOMO_SPOOL": str(spool),
        "HANDLER_LOG": str(log),
        "MATOMO_TIMEOUT": "1.0",
        **extra,
    }


def journal_numbers(spool: Path) -> set[int]:
    """The hits committed to the journal file (read as another process would)."""
    db = sqlite3.connect(spool)
    try:
        rows = db.execute("SELECT data FROM hits").fetchall()
    finally:
        db.close()
    return {int(json.loads(data)["url"].rsplit("/", 1)[1]) for (data,) in rows}


@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_an_outage_longer_than_memory_loses_nothing(
    kind: str, matomo: CollectorServer, tmp_path: Path
) -> None:
    spool, log = tmp_path / "spool.sqlite3", tmp_path / "handled.log"
    port = free_port()
    # memory for 50 hits per process; the outage gets 600
    with server(kind, port, env_for(matomo, spool, log, MATOMO_QUEUE_MAX_HITS="50")) as app:
        load(app.base_url, 100)
        matomo.refuse()
        load(app.base_url, 600, start=100)
        time.sleep(1.0)
        matomo.accept()
        load(app.base_url, 100, start=700)
        wait_for(lambda: len(set(delivered(matomo))) >= 800, 60)
    noted = handled(log)
    got = delivered(matomo)
    assert sorted(noted) == list(range(800))
    assert sorted(set(got)) == list(range(800))  # every hit
    assert len(got) == len(set(got))  # refused connections: no duplicate possible, none came
    for hit in matomo.collector.hits:  # each hit recorded when its handler ran
        n = int(hit["url"].rsplit("/", 1)[1])
        assert abs(hit.recorded_at - noted[n]) <= 2.0, (n, hit.recorded_at, noted[n])


def test_a_killed_server_loses_only_what_it_had_not_committed(
    matomo: CollectorServer, tmp_path: Path
) -> None:
    spool, log = tmp_path / "spool.sqlite3", tmp_path / "handled.log"
    port = free_port()
    env = env_for(matomo, spool, log)
    matomo.refuse()
    with server("uvicorn", port, env) as app:
        for n in range(300):
            get(app.base_url, n)
        app.stop(signal.SIGKILL)
    noted = handled(log)
    committed = journal_numbers(spool)
    assert committed  # most of them
    assert sorted(noted) == list(range(300))
    # the journal holds every hit up to its last commit; only later ones are lost
    last = max(committed)
    assert committed == set(range(last + 1))
    assert set(noted) - committed == set(range(last + 1, 300))

    matomo.accept()
    with server("uvicorn", port, env):  # delivers what its predecessor left, once its lease ran out
        wait_for(lambda: set(delivered(matomo)) >= committed, 30)
    assert sorted(delivered(matomo)) == sorted(committed)


def send(
    spool: Path, matomo: CollectorServer, *args: str, **kwargs: object
) -> subprocess.Popen[str]:
    env = {**os.environ, "MATOMO_URL": matomo.base_url, "PYTHONPATH": str(ROOT)}
    env.pop("MATOMO_TOKEN_AUTH", None)
    return subprocess.Popen(
        [str(BIN / "matomo-middleware"), "send", "--spool", str(spool), "--timeout", "1", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,  # type: ignore[arg-type]
    )


def test_an_external_sender_delivers_what_the_app_writes(
    matomo: CollectorServer, tmp_path: Path
) -> None:
    spool, log = tmp_path / "spool.sqlite3", tmp_path / "handled.log"
    port = free_port()
    with server("gunicorn", port, env_for(matomo, spool, log, MATOMO_SENDER="external")) as app:
        load(app.base_url, 200)
        wait_for(lambda: journal_numbers(spool) == set(range(200)), 10)
        assert matomo.collector.hits == []  # the app sends nothing itself

        once = send(spool, matomo, "--once")
        out, _ = once.communicate(timeout=60)
        assert once.returncode == 0, out
        assert sorted(delivered(matomo)) == list(range(200))
        assert "200 sent" in out
        assert journal_numbers(spool) == set()

        # a long-running sender, killed mid-way and started again: nothing lost
        sender = send(spool, matomo)
        load(app.base_url, 300, start=200)
        time.sleep(0.3)
        sender.kill()
        sender.communicate(timeout=10)
        load(app.base_url, 100, start=500)
        again = send(spool, matomo)
        wait_for(lambda: set(delivered(matomo)) >= set(range(600)), 60)
        again.send_signal(signal.SIGTERM)
        out, _ = again.communicate(timeout=20)
        assert again.returncode == 0, out
    got = delivered(matomo)
    assert sorted(set(got)) == list(range(600))
    # hits the killed sender had sent but not yet settled went out again, and the sender that
    # took its rows over counted them as possible duplicates
    counted = re.search(r"(\d+) possible duplicate\(s\)", out)
    assert counted is not None, out
    assert len(got) - len(set(got)) <= int(counted.group(1))
    assert SENTINEL_TOKEN not in out


def test_the_sender_refuses_to_start_without_a_token_the_hits_need(tmp_path: Path) -> None:
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as matomo:
        check_the_token_rule(matomo, tmp_path)


def check_the_token_rule(matomo: CollectorServer, tmp_path: Path) -> None:
    spool, log = tmp_path / "spool.sqlite3", tmp_path / "handled.log"
    port = free_port()
    env = env_for(matomo, spool, log, MATOMO_SENDER="external", MATOMO_TOKEN_AUTH=SENTINEL_TOKEN)
    with server("uvicorn", port, env) as app:
        load(app.base_url, 5)
        wait_for(lambda: len(journal_numbers(spool)) == 5, 10)
    for file in tmp_path.iterdir():  # the journal holds the hits (with cip), never the token
        assert SENTINEL_TOKEN.encode() not in file.read_bytes()

    refused = send(spool, matomo, "--once")
    out, _ = refused.communicate(timeout=30)
    assert refused.returncode == 2
    assert "only with a token" in out
    assert "MATOMO_TOKEN_AUTH" in out

    token_file = tmp_path / "token"
    token_file.write_text(SENTINEL_TOKEN + "\n")
    with_token = send(spool, matomo, "--once", "--token-file", str(token_file))
    out, _ = with_token.communicate(timeout=30)
    assert with_token.returncode == 0, out
    assert SENTINEL_TOKEN not in out
    assert sorted(delivered(matomo)) == list(range(5))
    assert all(h.authenticated for h in matomo.collector.hits)


def test_a_token_is_never_taken_from_the_command_line(tmp_path: Path) -> None:
    for flag in ("--token", "--token-auth", "--token_auth"):
        done = subprocess.run(
            [
                str(BIN / "matomo-middleware"),
                "send",
                "--spool",
                str(tmp_path / "s"),
                flag,
                "sekrit",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert "sekrit" not in done.stderr + done.stdout
        assert "MATOMO_TOKEN_AUTH" in done.stderr


def test_an_app_with_an_external_sender_opens_no_connection(
    matomo: CollectorServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    code = f"""
import socket, sys, time
opened = []
real_connect = socket.socket.connect
def connect(self, address):
    opened.append(address)
    return real_connect(self, address)
socket.socket.connect = connect
socket.create_connection = lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(OSError())
from matomo_wsgi import MatomoMiddleware
def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]
tracked = MatomoMiddleware(app, url={matomo.base_url!r}, spool={str(spool)!r},
                           sender="external", batch_max_age=0.01)
environ = {{"REQUEST_METHOD": "GET", "PATH_INFO": "/p", "SERVER_NAME": "x", "SERVER_PORT": "80",
           "wsgi.url_scheme": "http", "REMOTE_ADDR": "192.0.2.1",
           "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0"}}
for n in range(50):
    body = tracked({{**environ, "PATH_INFO": f"/n/{{n}}"}}, lambda *a: None)
    b"".join(body)
    body.close()  # the WSGI server's part: the hits are built then
assert tracked.dispatcher.flush(5.0)
time.sleep(0.5)
print(len(opened))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    assert matomo.collector.hits == []
    assert len(journal_numbers_any(spool)) == 50


def journal_numbers_any(spool: Path) -> list[bytes]:
    db = sqlite3.connect(spool)
    try:
        return [data for (data,) in db.execute("SELECT data FROM hits")]
    finally:
        db.close()
