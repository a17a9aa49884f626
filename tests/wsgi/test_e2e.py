"""End to end on 127.0.0.1: gunicorn (gthread) and granian (WSGI) serving the Flask app,
gunicorn the Django project, uvicorn the Django project's ASGI handler, each tracking into a
collector served by ``CollectorServer``. Hit by hit; responses never wait for Matomo; hits
queued when the server is told to stop are delivered before its worker exits (granian's
workers are multiprocessing children: no atexit there), also from workers forked under
gunicorn's ``--preload``."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import pytest

from matomo_tracking.testing import CollectorServer, ReceivedHit
from tests.servers import ServerProcess, free_port
from tests.wsgi.django_project.views import DATA_FILE as DJANGO_FILE
from tests.wsgi.flask_app import DATA_FILE as FLASK_FILE

pytestmark = pytest.mark.e2e

BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) E2E/1.0",
    "Accept-Language": "de-CH,de;q=0.9",
    "Referer": "https://search.example/?q=shop",
}


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    with CollectorServer() as server:
        yield server


def gunicorn(
    target: str, matomo: CollectorServer, *extra: str, workers: int = 1, **env: str
) -> ServerProcess:
    port = free_port()
    args = [
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "20",
        "--log-level",
        "warning",
        *extra,
        target,
    ]
    return ServerProcess("gunicorn", args, port=port, env={"MATOMO_URL": matomo.base_url, **env})


def granian(target: str, matomo: CollectorServer, *extra: str, **env: str) -> ServerProcess:
    """granian's WSGI interface: one worker process (a ``multiprocessing`` child)."""
    port = free_port()
    args = [
        "--interface",
        "wsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--blocking-threads",
        "8",
        "--log-level",
        "warning",
        *extra,
        target,
    ]
    return ServerProcess("granian", args, port=port, env={"MATOMO_URL": matomo.base_url, **env})


SERVERS = {"gunicorn": gunicorn, "granian": granian}


def by_url(hits: Sequence[ReceivedHit]) -> dict[str, ReceivedHit]:
    return {h["url"]: h for h in hits if "e_c" not in h.params}


def assert_browser_hit(hit: ReceivedHit) -> None:
    assert hit["ua"] == BROWSER["User-Agent"]
    assert hit["lang"] == BROWSER["Accept-Language"]
    assert hit["urlref"] == BROWSER["Referer"]
    assert int(hit["pf_srv"]) >= 0
    assert len(hit["cid"]) == 16
    assert "cip" not in hit.params


def load(
    base_url: str, paths: Sequence[str], concurrency: int = 8, keepalive: bool = True
) -> list[httpx.Response]:
    """GET every path from ``concurrency`` threads (keep-alive connections, or a new
    connection per request); all responses."""
    limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
    responses: list[httpx.Response] = []
    lock = threading.Lock()
    todo = list(paths)

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=10, limits=limits) as client:
            while True:
                with lock:
                    if not todo:
                        return
                    path = todo.pop()
                response = client.get(path, headers=BROWSER)
                with lock:
                    responses.append(response)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


@pytest.mark.parametrize("kind", SERVERS)
def test_flask_with_a_script_name(matomo: CollectorServer, kind: str) -> None:
    if kind == "gunicorn":
        served = gunicorn("tests.wsgi.flask_app:app", matomo, SCRIPT_NAME="/shop")
    else:
        served = granian("tests.wsgi.flask_app:app", matomo, "--url-path-prefix", "/shop")
    with served as server:
        base = server.base_url
        with httpx.Client(base_url=base, headers=BROWSER) as client:
            assert client.get("/shop/items/42?a=%C3%A9&b=1").json()["id"] == 42
            download = client.get("/shop/download")  # gunicorn's sendfile path
            assert download.content == FLASK_FILE.read_bytes()
            assert client.get("/shop/boom").status_code == 500
            assert client.get("/shop/event").text == "ok"
        hits = matomo.collector.wait_for(5)
    pages = by_url(hits)
    item = pages[f"{base}/shop/items/42?a=%C3%A9&b=1"]
    assert item["action_name"] == "/items/<int:item_id>"
    assert item["dimension1"] == "200"
    assert_browser_hit(item)
    files = pages[f"{base}/shop/download"]
    assert (files["action_name"], files["dimension3"]) == (
        "/download",
        str(FLASK_FILE.stat().st_size),
    )
    boom = pages[f"{base}/shop/boom"]
    assert (boom["action_name"], boom["dimension1"]) == ("/boom", "500")
    event_page = pages[f"{base}/shop/event"]
    [event] = [h for h in hits if "e_c" in h.params]
    assert event_page["action_name"] == "Custom name"
    assert (event["e_c"], event["pv_id"]) == ("shop", event_page["pv_id"])
    assert matomo.collector.invalid == []


def test_django_under_gunicorn_with_a_script_name(matomo: CollectorServer) -> None:
    with gunicorn(
        "tests.wsgi.django_project.wsgi:application", matomo, SCRIPT_NAME="/site"
    ) as server:
        base = server.base_url
        with httpx.Client(base_url=base, headers=BROWSER) as client:
            assert client.get("/site/items/7/?q=x%20y").json()["pk"] == 7
            assert client.get("/site/download/").content == DJANGO_FILE.read_bytes()
            assert client.get("/site/boom/").status_code == 500
            assert client.get("/site/stream/").content == b"x" * 1000
        hits = matomo.collector.wait_for(4)
    pages = by_url(hits)
    item = pages[f"{base}/site/items/7/?q=x%20y"]
    assert item["action_name"] == "/items/<int:pk>/"
    assert_browser_hit(item)
    files = pages[f"{base}/site/download/"]
    assert files["dimension3"] == str(DJANGO_FILE.stat().st_size)
    assert pages[f"{base}/site/boom/"]["dimension1"] == "500"
    assert pages[f"{base}/site/stream/"]["dimension3"] == "1000"
    assert matomo.collector.invalid == []


def test_django_under_uvicorn_asgi(matomo: CollectorServer) -> None:
    port = free_port()
    args = [
        "tests.wsgi.django_project.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--root-path",
        "/site",
        "--lifespan",
        "off",
        "--log-level",
        "warning",
    ]
    with ServerProcess("uvicorn", args, port=port, env={"MATOMO_URL": matomo.base_url}) as server:
        base = server.base_url
        with httpx.Client(base_url=base, headers=BROWSER) as client:
            assert client.get("/items/3/?x=1").json()["pk"] == 3
            assert client.get("/async-items/4/").json()["pk"] == 4
            assert client.get("/async-stream/").content == b"y" * 200
        hits = matomo.collector.wait_for(3)
    pages = by_url(hits)
    # The proxy in front stripped /site (uvicorn --root-path): the client asked for /site/...
    item = pages[f"{base}/site/items/3/?x=1"]
    assert item["action_name"] == "/items/<int:pk>/"
    assert_browser_hit(item)
    assert pages[f"{base}/site/async-items/4/"]["action_name"] == "/async-items/<int:pk>/"
    assert pages[f"{base}/site/async-stream/"]["dimension3"] == "200"


def test_responses_do_not_wait_for_matomo(matomo: CollectorServer) -> None:
    matomo.collector.hold()
    with gunicorn("tests.wsgi.flask_app:app", matomo, MATOMO_TIMEOUT="60") as server:
        started = time.perf_counter()
        responses = load(server.base_url, [f"/items/{i}" for i in range(1000)])
        elapsed = time.perf_counter() - started
        assert [r.status_code for r in responses] == [200] * 1000
        assert elapsed < 30
        assert matomo.collector.hits == []  # Matomo still holds the first batch
        matomo.collector.release()
        hits = matomo.collector.wait_for(1000, timeout=20)
    assert len(hits) == 1000
    assert len({h["url"] for h in hits}) == 1000


@pytest.mark.parametrize("kind", SERVERS)
def test_sigterm_delivers_every_queued_hit_before_the_worker_exits(
    matomo: CollectorServer, kind: str
) -> None:
    matomo.collector.hold()
    server = SERVERS[kind](
        "tests.wsgi.flask_app:app", matomo, MATOMO_TIMEOUT="60", MATOMO_SHUTDOWN_TIMEOUT="15"
    )
    with server:
        responses = load(server.base_url, [f"/items/{i}" for i in range(1200)])
        assert len(responses) == 1200
        assert matomo.collector.hits == []  # all queued in the worker
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        matomo.collector.release()
        assert server.process.wait(30) == 0
        log = server.log()
    assert len(matomo.collector.hits) == 1200, log


def test_preload_forked_workers_deliver_their_hits(matomo: CollectorServer) -> None:
    server = gunicorn(
        "tests.wsgi.flask_app:app",
        matomo,
        "--preload",
        "--config",
        "python:tests.wsgi.gunicorn_conf",
        workers=2,
        MATOMO_WARMUP="1",  # the master tracks a request (and starts its thread) before forking
        # Batches wait: the master's warmup hit is still queued when it forks (the workers
        # must not send it again), and the workers' last hits go out only at their exit.
        MATOMO_BATCH_MAX_AGE="30",
    )
    with server:
        # A connection per request, so that both workers get some.
        responses = load(server.base_url, [f"/items/{i}" for i in range(1, 251)], keepalive=False)
        worker_pids = {r.json()["pid"] for r in responses}
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        log = server.log()
    assert len(worker_pids) == 2, log
    hits = matomo.collector.hits
    items = [h for h in hits if h.get("ua") != "warmup"]
    assert len(items) == 250, log
    assert {h["dimension2"] for h in items} == {str(pid) for pid in worker_pids}
    assert len([h for h in hits if h.get("ua") == "warmup"]) == 1  # the master's, sent once
