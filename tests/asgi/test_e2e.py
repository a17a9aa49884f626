"""End to end on 127.0.0.1: uvicorn, hypercorn, granian and gunicorn (uvicorn workers) serve
the test apps, a CollectorServer plays Matomo, and every hit is checked field by field.
Responses never wait for Matomo, a SIGTERM delivers what is queued before the process exits,
and file responses count their bytes (granian's pathsend too)."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from matomo_tracking.testing import Collector, CollectorServer, ReceivedHit
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import ServerProcess, free_port

pytestmark = pytest.mark.e2e

# uvicorn.workers is deprecated in favour of the uvicorn-worker package: use it when present.
WORKER = (
    "uvicorn_worker.UvicornWorker"
    if importlib.util.find_spec("uvicorn_worker")
    else "uvicorn.workers.UvicornWorker"
)

BROWSER = {
    "host": "shop.example:8080",
    "user-agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15",
    "accept-language": "de-CH,de;q=0.9",
    "referer": "https://www.example.org/search?q=lamp",
}


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    """A collector on 127.0.0.1 that accepts the sentinel token (so hits carry ``cip``)."""
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as server:
        yield server


def _env(matomo: CollectorServer, **extra: str) -> dict[str, str]:
    env = {
        "MATOMO_URL": matomo.base_url,
        "MATOMO_TOKEN_AUTH": SENTINEL_TOKEN,
        "MATOMO_BATCH_MAX_AGE": "0.05",
    }
    env.update(extra)
    return env


def _root_path(kind: str, factory: str) -> str:
    if kind == "uvicorn":
        return "/api"  # uvicorn puts the root path inside scope["path"] (current ASGI)
    if kind in ("hypercorn", "granian") and factory == "fastapi_from_env":
        # hypercorn and granian (--url-path-prefix) do not (older ASGI); Starlette >= 0.35
        # mounts then miss (upstream), so only the app without mounts is served below a root
        # path by them.
        return "/api"
    return ""  # gunicorn's uvicorn workers have no root path option


def _server(kind: str, factory: str, port: int, env: dict[str, str]) -> ServerProcess:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    root = ["--root-path", _root_path(kind, factory)] if _root_path(kind, factory) else []
    if kind == "uvicorn":
        args = ["--factory", f"tests.asgi.apps:{factory}", *bind, *root]
        return ServerProcess("uvicorn", [*args, "--log-level", "warning"], port=port, env=env)
    if kind == "hypercorn":
        args = ["-b", f"127.0.0.1:{port}", *root, f"tests.asgi.apps:{factory}()"]
        return ServerProcess("hypercorn", args, port=port, env=env)
    if kind == "granian":
        args = [
            *("--interface", "asgi", "--factory", "--workers", "1", *bind),
            *(("--url-path-prefix", root[1]) if root else ()),
            *("--log-level", "warning"),
            f"tests.asgi.apps:{factory}",
        ]
        return ServerProcess("granian", args, port=port, env=env)
    args = [
        "-k",
        WORKER,
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        f"tests.asgi.apps:{factory}()",
    ]
    return ServerProcess("gunicorn", args, port=port, env=env)


def _assert_browser_hit(hit: ReceivedHit, url: str, action: str) -> None:
    assert hit["url"] == url
    assert hit["action_name"] == action
    assert hit["ua"] == BROWSER["user-agent"]
    assert hit["lang"] == BROWSER["accept-language"]
    assert hit["urlref"] == BROWSER["referer"]
    assert 0 <= int(hit["pf_srv"]) < 5000
    assert hit["cip"] == "127.0.0.1"
    assert hit.authenticated
    assert hit.bulk


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn", "granian", "gunicorn"])
@pytest.mark.parametrize("factory", ["fastapi_from_env", "starlette_from_env"])
def test_real_servers(matomo: CollectorServer, kind: str, factory: str) -> None:
    port = free_port()
    root = _root_path(kind, factory)
    with _server(kind, factory, port, _env(matomo)) as server:
        with httpx.Client(base_url=server.base_url, headers=BROWSER) as http:
            response = http.get("/items/1?a=%C3%A9")
            assert response.json() == {"item_id": 1}
            second = "/named" if factory == "fastapi_from_env" else "/shop/acme/items/9"
            assert http.get(second).status_code == 200
            assert http.get("/items/2", headers={"user-agent": "curl/8.5.0"}).status_code == 200
        expected = 4 if factory == "fastapi_from_env" else 3  # /named adds an event
        hits = matomo.collector.wait_for(expected, timeout=10)
    assert len(hits) == expected
    first, *rest = hits
    _assert_browser_hit(
        first, f"http://shop.example:8080{root}/items/1?a=%C3%A9", "/items/{item_id}"
    )
    if factory == "fastapi_from_env":
        named, event, third = rest
        assert named["action_name"] == "A named page"
        assert named["uid"] == "user-7"
        assert event["e_a"] == "view"
        assert event["pv_id"] == named["pv_id"]
        assert first["dimension3"] == "item-1"
    else:
        named, third = rest
        assert named["action_name"] == "/shop/{org}/items/{item_id}"
        assert named["url"] == f"http://shop.example:8080{root}/shop/acme/items/9"
    assert third["ua"] == "curl/8.5.0"
    assert third["url"] == f"http://shop.example:8080{root}/items/2"
    assert len({hit["pv_id"] for hit in (first, named, third)}) == 3


async def _hammer(base_url: str, count: int, concurrency: int) -> list[float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    durations: list[float] = []

    async def one(http: httpx.AsyncClient, n: int) -> None:
        async with semaphore:
            started = time.perf_counter()
            response = await http.get(f"/items/{n}")
            durations.append(time.perf_counter() - started)
            assert response.json() == {"item_id": n}

    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as http:
        await asyncio.gather(*(one(http, n) for n in range(count)))
    return durations


def test_responses_do_not_wait_for_matomo(matomo: CollectorServer) -> None:
    port = free_port()
    env = _env(matomo, MATOMO_TIMEOUT="60")
    matomo.collector.hold()
    with _server("uvicorn", "fastapi_from_env", port, env) as server:
        durations = asyncio.run(_hammer(server.base_url, 1000, 20))
        assert len(durations) == 1000  # every response arrived while Matomo held its answer
        assert matomo.collector.hits == []
        assert max(durations) < 5.0  # generous: a loaded CI machine, not Matomo, sets this
        matomo.collector.release()
        hits = matomo.collector.wait_for(1000, timeout=30)
    assert sorted(int(h["url"].rsplit("/", 1)[1]) for h in hits) == list(range(1000))


@pytest.mark.parametrize("kind", ["uvicorn", "granian"])
def test_sigterm_delivers_every_queued_hit_before_exiting(
    matomo: CollectorServer, kind: str
) -> None:
    port = free_port()
    env = _env(matomo, MATOMO_TIMEOUT="60", MATOMO_SHUTDOWN_TIMEOUT="30")
    matomo.collector.hold()
    with _server(kind, "fastapi_from_env", port, env) as server:
        assert len(asyncio.run(_hammer(server.base_url, 1000, 20))) == 1000
        process = server.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None  # shutting down: waiting for Matomo, not gone
        assert matomo.collector.hits == []
        matomo.collector.release()
        # A clean exit (uvicorn re-raises the SIGTERM it handled, once shut down gracefully).
        assert process.wait(30) in (0, -signal.SIGTERM)
        delivered = len(matomo.collector.hits)  # read right after the exit
    assert delivered == 1000


@pytest.mark.parametrize("kind", ["uvicorn", "granian"])
def test_file_responses_count_their_bytes(matomo: CollectorServer, kind: str) -> None:
    # granian offers the pathsend extension: Starlette's FileResponse then hands the server
    # the file's path instead of its bytes. The hit counts the bytes the client got.
    from tests.asgi import apps

    port = free_port()
    with _server(kind, "fastapi_from_env", port, _env(matomo, MATOMO_BYTES_DIMENSION="4")) as srv:
        response = httpx.get(srv.base_url + "/file", timeout=10)
        (hit,) = matomo.collector.wait_for(1, timeout=10)
    size = Path(apps.__file__).stat().st_size
    assert (response.status_code, len(response.content)) == (200, size)
    assert hit["dimension4"] == str(size)
    assert hit["action_name"] == "/file"
