"""Route templates become action names: FastAPI and Starlette routes, routers, mounts,
a scope the app copied, Django's URL resolver; the concrete path when nothing matched."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from starlette.applications import Starlette

from matomo_asgi._types import ASGIApp, Receive, Scope, Send
from matomo_tracking.testing import Collector
from tests.asgi.apps import fastapi_app, starlette_routes
from tests.asgi.conftest import Track, client, delivered
from tests.servers import ROOT


class CopyingMiddleware:
    """A middleware that hands the app a copy of the scope (so ``scope["route"]`` set by the
    router never reaches the middlewares outside it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(dict(scope), receive, send)


async def _actions(track: Track, collector: Collector, app: ASGIApp, *requests: str) -> list[str]:
    tracked = track(app)
    async with client(tracked) as http:
        for request in requests:
            method, _, path = request.rpartition(" ")
            await http.request(method or "GET", path)
    return [hit["action_name"] for hit in await delivered(tracked, collector)]


@pytest.mark.anyio
async def test_fastapi_templates(track: Track, collector: Collector) -> None:
    actions = await _actions(
        track,
        collector,
        fastapi_app(),
        "/items/7",
        "/api/v1/users/ann",
        "/sub/things/lamp",
        "/no/such/page",
        "POST /items/7",
    )
    assert actions == [
        "/items/{item_id}",
        "/api/v1/users/{user_id}",  # include_router(prefix=...)
        "/sub/things/{thing}",  # a mounted FastAPI app
        "/no/such/page",  # nothing matched: the path
        "/items/{item_id}",  # 405: the route that has the path
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("copying", [False, True], ids=["scope-route", "walked"])
async def test_starlette_templates(track: Track, collector: Collector, copying: bool) -> None:
    app: ASGIApp = Starlette(routes=starlette_routes())
    if copying:
        app = CopyingMiddleware(app)
    actions = await _actions(
        track, collector, app, "/items/3", "/shop/acme/items/9", "POST /hello", "/items/x"
    )
    assert actions == [
        "/items/{item_id}",  # the :int convertor is not part of the name
        "/shop/{org}/items/{item_id}",  # Mount prefix + inner route
        "/hello",
        "/items/x",  # no route takes "x" as an int
    ]


@pytest.mark.anyio
async def test_the_context_and_the_action_name_hook_come_first(
    track: Track, collector: Collector
) -> None:
    def hook(request: Any) -> str | None:
        return "hooked" if request.path.startswith("/items") else None

    tracked = track(fastapi_app(), action_name=hook)
    async with client(tracked) as http:
        await http.get("/items/1")
        await http.get("/named")  # the handler sets "A named page"
        await http.get("/api/v1/users/x")
    hits = await delivered(tracked, collector)
    assert [h["action_name"] for h in hits if "e_c" not in h.params] == [
        "hooked",
        "A named page",
        "/api/v1/users/{user_id}",
    ]


@pytest.mark.anyio
async def test_a_plain_asgi_app_gets_its_paths(track: Track, collector: Collector) -> None:
    async def plain(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert await _actions(track, collector, plain, "/a/b", "/c") == ["/a/b", "/c"]


DJANGO_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, time
    import django, httpx
    from django.conf import settings
    from django.http import HttpResponse
    from django.urls import include, path

    def view(request, **kwargs):
        return HttpResponse("ok")

    urlpatterns = [
        path("articles/<slug:slug>/", view),
        path("api/", include([path("users/<int:pk>", view)])),
    ]
    settings.configure(
        DEBUG=False, ALLOWED_HOSTS=["shop.test"], ROOT_URLCONF=__name__, SECRET_KEY="tests",
        MIDDLEWARE=[],
    )
    django.setup()
    from django.core.asgi import get_asgi_application
    from matomo_asgi import MatomoMiddleware

    from matomo_tracking.dispatcher import DispatcherBase

    class Keep(DispatcherBase):
        def __init__(self):
            self.hits = []
        def submit(self, hit):
            self.hits.append(dict(hit.params))
            return True
        def stats(self):
            raise NotImplementedError

    keep = Keep()
    app = MatomoMiddleware(
        get_asgi_application(), url="http://matomo.test", visitor_salt="t", dispatcher=keep
    )

    async def main():
        transport = httpx.ASGITransport(app=app, root_path="/site")
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
            for url in ("/site/articles/hello-world/", "/site/api/users/42", "/site/nope"):
                await http.get(url)
        print(json.dumps([(h["action_name"], h["url"]) for h in keep.hits]))

    asyncio.run(main())
    """
)


def test_django_asgi_uses_the_resolvers_route() -> None:
    # In a subprocess: Django's settings can be configured once per process only.
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        ["/articles/<slug:slug>/", "http://shop.test/site/articles/hello-world/"],
        ["/api/users/<int:pk>", "http://shop.test/site/api/users/42"],
        ["/nope", "http://shop.test/site/nope"],
    ]


def litestar_app() -> ASGIApp:
    """Litestar: a handler, a router, a router in a router, a mounted ASGI app."""
    from litestar import Litestar, Router, asgi, get

    # The handlers take no path parameters: the way to declare one changed between Litestar
    # versions (FromPath since 2.19), and the route template is all that is tested here.
    @get("/items/{item_id:int}")
    async def item() -> str:
        return "item"

    @get("/users/{name:str}")
    async def user() -> str:
        return "user"

    @asgi("/static", is_mount=True, copy_scope=True)
    async def static(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"static"})

    api = Router(path="/api", route_handlers=[Router(path="/v1", route_handlers=[user])])
    return Litestar([item, api, static], logging_config=None)


def quart_app() -> ASGIApp:
    """Quart: a rule, a blueprint, a blueprint in a blueprint; its ``asgi_app`` is wrapped."""
    from quart import Blueprint, Quart

    app = Quart(__name__)

    @app.get("/items/<int:item_id>")
    async def item(item_id: int) -> str:
        return "item"

    shop = Blueprint("shop", __name__, url_prefix="/shop")
    orders = Blueprint("orders", __name__, url_prefix="/orders")

    @orders.route("/<order_id>", methods=["GET", "POST"])
    async def order(order_id: str) -> str:
        return order_id

    shop.register_blueprint(orders)
    app.register_blueprint(shop)
    return app


class _FalconItem:
    async def on_get(self, req: Any, resp: Any, item_id: int) -> None:
        resp.text = "item"

    async def on_get_part(self, req: Any, resp: Any, item_id: int, part: str) -> None:
        resp.text = part


def falcon_asgi_app() -> ASGIApp:
    """Falcon's ASGI app: two templates of one resource (a suffixed responder)."""
    import falcon.asgi

    app = falcon.asgi.App()
    app.add_route("/items/{item_id:int}", _FalconItem())
    app.add_route("/items/{item_id:int}/parts/{part}", _FalconItem(), suffix="part")
    return app


FRAMEWORKS: dict[str, tuple[Any, list[str], list[str]]] = {
    "litestar": (
        litestar_app,
        ["/items/3", "/api/v1/users/ann", "/static/site.css", "/items/x", "/nope"],
        ["/items/{item_id}", "/api/v1/users/{name}", "/static/site.css", "/items/x", "/nope"],
    ),
    "quart": (
        quart_app,
        ["/items/3", "/shop/orders/9", "POST /shop/orders/10", "/items/x", "POST /items/3"],
        [
            "/items/<int:item_id>",
            "/shop/orders/<order_id>",
            "/shop/orders/<order_id>",
            "/items/x",  # no rule takes "x"
            "/items/3",  # a 405: werkzeug matched no rule (as in Flask)
        ],
    ),
    "falcon-asgi": (
        falcon_asgi_app,
        ["/items/3", "/items/3/parts/lid", "/items/x", "/nope"],
        ["/items/{item_id:int}", "/items/{item_id:int}/parts/{part}", "/items/x", "/nope"],
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize(("make", "requests", "expected"), FRAMEWORKS.values(), ids=FRAMEWORKS)
async def test_framework_templates(
    track: Track, collector: Collector, make: Any, requests: list[str], expected: list[str]
) -> None:
    app = make()
    if hasattr(app, "asgi_app"):  # Quart, wrapped the way its docs wrap middleware
        app.asgi_app = track(app.asgi_app)
        async with client(app) as http:
            for request in requests:
                method, _, path = request.rpartition(" ")
                await http.request(method or "GET", path)
        hits = await delivered(app.asgi_app, collector)
        assert [hit["action_name"] for hit in hits] == expected
        return
    assert await _actions(track, collector, app, *requests) == expected


@pytest.mark.anyio
@pytest.mark.parametrize("framework", ["litestar", "quart", "falcon-asgi"])
async def test_a_framework_object_lacking_what_is_read_gives_paths(
    track: Track, collector: Collector, framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An unknown or future version: what the finder reads is gone. Paths, one debug line.
    app: Any
    if framework == "litestar":
        inner = litestar_app()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            await inner(scope, receive, send)
            scope.pop("path_template", None)

    elif framework == "quart":
        app = quart_app()
        app.url_map.bind = None  # Quart itself routes through bind_to_request
    else:
        app = falcon_asgi_app()
        app._router = object()
    caplog.set_level("DEBUG", logger="matomo_asgi.routes")
    actions = await _actions(track, collector, app, "/items/3", "/items/4")
    assert actions == ["/items/3", "/items/4"]
    lines = [r for r in caplog.records if r.name == "matomo_asgi.routes"]
    assert [r.levelname for r in lines] == ["DEBUG"], [r.getMessage() for r in lines]
    assert "using paths as action names" in lines[0].getMessage()
