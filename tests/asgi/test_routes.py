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

    class Keep:
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
