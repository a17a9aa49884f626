"""Every example under ``examples/`` served by a real server on 127.0.0.1 (uvicorn for ASGI,
hypercorn for Quart, gunicorn for WSGI, the standard library's server for the plain WSGI app
run as a script),
configured from the environment, tracking into a ``CollectorServer``: one request, one page
view with the URL asked for and the route as action name (plus what the handler adds)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from matomo_tracking.testing import CollectorServer
from tests.sentinel import SENTINEL_TOKEN
from tests.servers import ROOT, ServerProcess, free_port, require_command

pytestmark = pytest.mark.e2e

EXAMPLES = ROOT / "examples"

Command = tuple[str, list[str], dict[str, str]]


def uvicorn(target: str, port: int) -> Command:
    args = [target, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return "uvicorn", args, {}


def gunicorn(target: str, port: int) -> Command:
    args = ["--worker-class", "gthread", "--threads", "4", "--bind", f"127.0.0.1:{port}"]
    return "gunicorn", [*args, "--graceful-timeout", "10", "--log-level", "warning", target], {}


def hypercorn(target: str, port: int) -> Command:
    return "hypercorn", ["--bind", f"127.0.0.1:{port}", "--graceful-timeout", "10", target], {}


def script(target: str, port: int) -> Command:
    return "python", [str(EXAMPLES / target)], {"PORT": str(port)}


DJANGO_PATH = "/articles/hello-world/?x=1"
DJANGO_ROUTE = "/articles/<slug:slug>/"

# id: (server, target, path requested, action name, more page-view params, events)
CASES = {
    "fastapi": (uvicorn, "examples.fastapi_app:app", "/items/7?x=1", "/items/{item_id}", {}, 1),
    "starlette": (uvicorn, "examples.starlette_app:app", "/hello/ada?x=1", "/hello/{name}", {}, 0),
    "flask": (
        gunicorn,
        "examples.flask_app:app",
        "/hello/ada?user=u1",
        "/hello/<name>",
        {"uid": "u1"},
        0,
    ),
    "wsgi": (gunicorn, "examples.wsgi_app:app", "/any/path?x=1", "/any/path", {}, 0),
    "wsgi-script": (script, "wsgi_app.py", "/any/path?x=1", "/any/path", {}, 0),
    "django-wsgi": (gunicorn, "examples.django_app:application", DJANGO_PATH, DJANGO_ROUTE, {}, 0),
    "django-asgi": (
        uvicorn,
        "examples.django_app:asgi_application",
        DJANGO_PATH,
        DJANGO_ROUTE,
        {},
        0,
    ),
    "litestar": (
        uvicorn,
        "examples.litestar_app:app",
        "/api/items/7?x=1",
        "/api/items/{item_id}",
        {},
        0,
    ),
    "quart": (
        hypercorn,
        "examples.quart_app:app",
        "/shop/orders/12",
        "/shop/orders/<int:order_id>",
        {},
        0,
    ),
    "falcon-wsgi": (
        gunicorn,
        "examples.falcon_app:app",
        "/things/3",
        "/things/{thing_id:int}",
        {},
        0,
    ),
    "falcon-asgi": (
        uvicorn,
        "examples.falcon_app:asgi_app",
        "/things/3",
        "/things/{thing_id:int}",
        {},
        0,
    ),
    "django-ninja": (
        gunicorn,
        "examples.django_ninja_app:application",
        "/api/items/5",
        "/api/items/<item_id>",
        {},
        0,
    ),
    "drf": (gunicorn, "examples.drf_app:application", "/books/9/", "/books/<str:pk>/", {}, 0),
}


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    with CollectorServer() as server:
        yield server


@pytest.mark.parametrize(
    ("server", "target", "path", "action", "more", "events"),
    [pytest.param(*case, id=name) for name, case in CASES.items()],
)
def test_example_tracks_a_request(
    matomo: CollectorServer,
    server: object,
    target: str,
    path: str,
    action: str,
    more: dict[str, str],
    events: int,
) -> None:
    port = free_port()
    program, args, env = server(target, port)  # type: ignore[operator]
    env.update(MATOMO_URL=matomo.base_url, MATOMO_SITE_ID="1", MATOMO_TOKEN_AUTH="")
    with ServerProcess(program, args, port=port, env=env) as app:
        response = httpx.get(app.base_url + path, timeout=10)
        assert response.status_code == 200, app.log()
        hits = matomo.collector.wait_for(1 + events, timeout=10)
    pages = [h for h in hits if "e_c" not in h.params]
    assert len(pages) == 1, [dict(h.params) for h in hits]
    assert len(hits) == 1 + events
    page = pages[0]
    assert page["url"] == app.base_url + path
    assert page["action_name"] == action
    assert page["idsite"] == "1"
    assert {k: page.get(k) for k in more} == more


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*_app.py")), ids=lambda p: p.stem)
def test_example_is_short_and_configured_from_the_environment(example: Path) -> None:
    text = example.read_text()
    assert len(text.splitlines()) < 40
    for variable in ("MATOMO_URL", "MATOMO_SITE_ID", "MATOMO_TOKEN_AUTH"):
        assert f'os.environ.get("{variable}"' in text


def test_every_example_is_served_by_a_test() -> None:
    served = {
        case[1].split(":")[0].removeprefix("examples.").removesuffix(".py")
        for case in CASES.values()
    }
    assert {p.stem for p in EXAMPLES.glob("*_app.py")} <= served | {"celery_app"}


class Worker(ServerProcess):
    """A process that listens on no port (a Celery worker): started without waiting."""

    def __init__(self, program: str, args: list[str], *, env: dict[str, str]) -> None:
        super().__init__(program, args, port=0, env=env)

    def start(self) -> Worker:
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self


def test_celery_example_delivers_through_the_broker(matomo: CollectorServer) -> None:
    matomo.collector.token_auth = SENTINEL_TOKEN
    redis_server = require_command("redis-server")
    redis_port, web_port = free_port(), free_port()
    env = {
        "MATOMO_URL": matomo.base_url,
        "MATOMO_SITE_ID": "1",
        "MATOMO_TOKEN_AUTH": SENTINEL_TOKEN,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
    }
    redis_args = [*f"--port {redis_port} --bind 127.0.0.1 --appendonly no --save".split(), ""]
    worker_args = [
        "-A",
        "examples.celery_app:celery",
        "worker",
        "--pool",
        "solo",
        "--loglevel",
        "warning",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    web_program, web_args, _ = gunicorn("examples.celery_app:app", web_port)
    with (
        ServerProcess(redis_server, redis_args, port=redis_port),
        Worker("celery", worker_args, env=env) as worker,
        ServerProcess(web_program, web_args, port=web_port, env=env) as web,
    ):
        assert httpx.get(web.base_url + "/orders/12?ref=mail", timeout=10).status_code == 200
        try:
            (hit,) = matomo.collector.wait_for(1, timeout=20)
        except TimeoutError:
            raise AssertionError(f"worker:\n{worker.log()}\nweb:\n{web.log()}") from None
    assert hit["url"] == web.base_url + "/orders/12?ref=mail"
    assert hit["action_name"] == "/orders/<int:order_id>"
    assert hit.authenticated  # the worker's own configuration supplied the token
