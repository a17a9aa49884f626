"""MatomoMiddleware in-process: what reaches Matomo for each request, and what the app and its
client see (nothing changes for them)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, cast

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from matomo_asgi import AsyncioDispatcher, MatomoMiddleware, TrackingContext, get_context
from matomo_asgi._types import Message, Receive, Scope, Send
from matomo_tracking.config import TrackingConfig
from matomo_tracking.testing import Collector
from tests.asgi.apps import fastapi_app
from tests.asgi.conftest import MATOMO, Track, client, delivered
from tests.sentinel import SENTINEL_TOKEN

pytestmark = pytest.mark.anyio

BROWSER = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "accept-language": "fr-CH, fr;q=0.9",
    "referer": "https://search.example/?q=items",
}


async def test_a_request_becomes_a_page_view(track: Track, collector: Collector) -> None:
    app = track(fastapi_app())
    async with client(app) as http:
        response = await http.get("/items/42?a=%C3%A9&b=1", headers=BROWSER)
    assert response.status_code == 200
    assert response.json() == {"item_id": 42}
    [hit] = await delivered(app, collector)
    assert hit["url"] == "http://shop.test/items/42?a=%C3%A9&b=1"
    assert hit["action_name"] == "/items/{item_id}"
    assert hit["ua"] == BROWSER["user-agent"]
    assert hit["lang"] == BROWSER["accept-language"]
    assert hit["urlref"] == BROWSER["referer"]
    assert hit["dimension3"] == "item-42"  # set by the handler through request.state.matomo
    assert int(hit["pf_srv"]) >= 0
    assert len(hit["cid"]) == 16
    assert "cip" not in hit.params  # no token: the visitor IP is never sent
    assert hit.bulk


async def test_the_root_path_is_part_of_the_url_not_of_the_action(
    track: Track, collector: Collector
) -> None:
    app = track(fastapi_app())
    async with client(app, root_path="/api") as http:
        await http.get("/api/items/1?a=%C3%A9")
    [hit] = await delivered(app, collector)
    assert hit["url"] == "http://shop.test/api/items/1?a=%C3%A9"
    assert hit["action_name"] == "/items/{item_id}"


async def test_token_sends_the_visitor_ip(track: Track) -> None:
    collector = Collector(token_auth=SENTINEL_TOKEN)
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=collector.asgi))
    async with http_client:
        app = track(fastapi_app(), token_auth=SENTINEL_TOKEN, http_client=http_client)
        async with client(app) as http:
            await http.get("/items/1")
        [hit] = await delivered(app, collector)
    assert hit["cip"] == "127.0.0.1"
    assert hit.authenticated
    assert SENTINEL_TOKEN not in repr(app.config)


async def test_context_is_request_state_matomo(track: Track, collector: Collector) -> None:
    app = track(fastapi_app())
    async with client(app) as http:
        await http.get("/named")
    page, event = await delivered(app, collector)
    assert page["action_name"] == "A named page"
    assert page["uid"] == "user-7"
    assert (event["e_c"], event["e_a"], event["e_n"]) == ("shop", "view", "named")
    assert event["pv_id"] == page["pv_id"]
    assert event["uid"] == "user-7"


async def test_get_context_is_the_same_object_and_a_dependency(
    track: Track, collector: Collector
) -> None:
    seen: list[TrackingContext] = []
    api = FastAPI()

    @api.get("/dep")
    async def dep(
        request: Request, matomo: Annotated[TrackingContext, Depends(get_context)]
    ) -> str:
        seen.append(matomo)
        assert request.state.matomo is matomo
        matomo.set_action_name("from a dependency")
        return "ok"

    app = track(api)
    async with client(app) as http:
        assert (await http.get("/dep")).status_code == 200
    assert isinstance(seen[0], TrackingContext)
    [hit] = await delivered(app, collector)
    assert hit["action_name"] == "from a dependency"


async def test_get_context_without_the_middleware_is_a_detached_context() -> None:
    # As on the WSGI side: handler code (and its unit tests, without the middleware) never
    # needs a branch; what is done to the detached context is discarded.
    api = FastAPI()
    seen: list[TrackingContext] = []

    @api.get("/")
    async def home(request: Request) -> str:
        seen.append(get_context(request))
        seen.append(get_context(request))
        return "ok"

    async with client(api) as http:
        await http.get("/")
    assert all(isinstance(context, TrackingContext) for context in seen)
    assert seen[0] is not seen[1]


async def test_skip_sends_nothing(track: Track, collector: Collector) -> None:
    app = track(fastapi_app())
    async with client(app) as http:
        assert (await http.get("/skipped")).json() == {"ok": "skipped"}
        await http.get("/items/1")
    [hit] = await delivered(app, collector)
    assert hit["action_name"] == "/items/{item_id}"


async def test_stacked_twice_tracks_once(track: Track, collector: Collector) -> None:
    inner = track(fastapi_app())
    outer = track(inner)
    async with client(outer) as http:
        await http.get("/named")
    assert len(await delivered(outer, collector)) == 2  # the page view and its event
    assert outer.dispatcher.stats().queued == 2
    assert inner.dispatcher.stats().queued == 0


async def test_an_exception_is_re_raised_unchanged_and_tracked_as_500(
    track: Track, collector: Collector
) -> None:
    raised = RuntimeError("boom: secret detail 31337")

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise raised

    app = track(failing, status_dimension=1)
    async with client(app) as http:
        with pytest.raises(RuntimeError) as info:
            await http.get("/boom")
    assert info.value is raised
    [hit] = await delivered(app, collector)
    assert hit["dimension1"] == "500"
    assert not any("31337" in value or "secret" in value for value in hit.params.values())


async def test_an_exception_after_the_response_started_keeps_its_status(
    track: Track, collector: Collector
) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 203, "headers": []})
        await send({"type": "http.response.body", "body": b"par", "more_body": True})
        raise ValueError("stream broke")

    app = track(half, status_dimension=1, bytes_dimension=2)
    async with client(app) as http:
        with pytest.raises(ValueError, match="stream broke"):
            await http.get("/")
    [hit] = await delivered(app, collector)
    assert (hit["dimension1"], hit["dimension2"]) == ("203", "3")


async def test_fastapi_server_error_is_tracked_and_answered_500(
    collector: Collector, matomo_http: httpx.AsyncClient
) -> None:
    config = TrackingConfig(url=MATOMO, status_dimension=1)
    dispatcher = AsyncioDispatcher(config, http_client=matomo_http)
    app = fastapi_app()
    app.add_middleware(MatomoMiddleware, url=MATOMO, status_dimension=1, dispatcher=dispatcher)
    # Inside FastAPI the middleware sits within ServerErrorMiddleware: the client gets a 500.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
        response = await http.get("/boom")
    assert response.status_code == 500
    assert await dispatcher.aclose(5.0)
    [hit] = collector.hits
    assert hit["action_name"] == "/boom"
    assert hit["dimension1"] == "500"
    assert "31337" not in str(hit.params)


async def test_streaming_is_forwarded_message_by_message(
    track: Track, collector: Collector
) -> None:
    forwarded: list[Message] = []
    checks: list[bool] = []

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
        await send(start)
        for i in range(3):
            message = {"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True}
            await send(message)
            checks.append(forwarded[-1] is message)  # already passed on: nothing is buffered
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        forwarded.append(message)

    app = track(stream, bytes_dimension=2)
    await app(_scope("/events"), receive, send)
    assert checks == [True, True, True]
    assert [m["type"] for m in forwarded] == ["http.response.start", *["http.response.body"] * 4]
    assert b"".join(m["body"] for m in forwarded[1:]) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    [hit] = await delivered(app, collector)
    assert hit["dimension2"] == "27"


async def test_sse_response_through_fastapi_is_unchanged(
    track: Track, collector: Collector
) -> None:
    plain = fastapi_app()
    async with client(plain) as http:
        expected = await http.get("/stream")
    app = track(fastapi_app())
    async with client(app) as http:
        response = await http.get("/stream")
    assert response.content == expected.content == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert response.headers == expected.headers
    [hit] = await delivered(app, collector)
    assert hit["action_name"] == "/stream"


async def test_other_scopes_pass_through_untouched(track: Track, collector: Collector) -> None:
    calls: list[tuple[Scope, Receive, Send]] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send))

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        pass

    app = track(inner)
    for kind in ("websocket", "webtransport"):
        scope: dict[str, Any] = {"type": kind, "path": "/ws", "headers": []}
        await app(scope, receive, send)
        assert calls[-1] == (scope, receive, send)
        assert calls[-1][0] is scope
        assert scope == {"type": kind, "path": "/ws", "headers": []}
    assert await delivered(app, collector) == []


@pytest.mark.parametrize(
    ("options", "path", "method", "tracked"),
    [
        ({"ignore_paths": ["/health"]}, "/health", "GET", False),
        ({"ignore_paths": ["/health"]}, "/health/db", "GET", False),
        ({"ignore_paths": ["/health"]}, "/healthy", "GET", True),
        ({"ignore_patterns": [r"/items/\d+"]}, "/items/12", "GET", False),
        ({"ignore_patterns": [r"/items/\d+"]}, "/items/12/x", "GET", True),
        ({}, "/items/1", "HEAD", False),
        ({}, "/items/1", "OPTIONS", False),
        ({"ignore_methods": []}, "/items/1", "OPTIONS", True),
        ({"ignore_html": True}, "/page", "GET", False),
        ({"ignore_html": True}, "/items/1", "GET", True),
        ({"ignore_status_codes": [404]}, "/nowhere", "GET", False),
        ({"sample_rate": 0.0}, "/items/1", "GET", False),
        ({"ignore_user_agents": ["Firefox"]}, "/items/1", "GET", False),
    ],
    ids=lambda value: str(value) if not isinstance(value, dict) else ",".join(value) or "-",
)
async def test_filters(
    track: Track,
    collector: Collector,
    options: dict[str, Any],
    path: str,
    method: str,
    tracked: bool,
) -> None:
    seen: list[object] = []

    async def remember(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope.get("state", {}).get("matomo"))
        await inner(scope, receive, send)

    inner = fastapi_app()
    app = track(remember, **options)
    async with client(app) as http:
        await http.request(method, path, headers=BROWSER)
    hits = await delivered(app, collector)
    assert len(hits) == (1 if tracked else 0)
    # Handlers always find a context, even on requests that are not tracked.
    assert isinstance(seen[0], TrackingContext)


async def test_a_dead_matomo_changes_nothing(track: Track) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    dead = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with dead:
        app = track(fastapi_app(), http_client=dead, backoff_base=10.0)
        async with client(app) as http:
            for _ in range(3):
                response = await http.get("/items/5")
                assert response.json() == {"item_id": 5}
        await asyncio.sleep(0.05)
        stats = app.dispatcher.stats()
        await app.aclose(0.05)
    assert (stats.queued, stats.sent) == (3, 0)
    assert stats.retried >= 1
    assert "connect" in str(stats.last_error)


async def test_sync_mode_delivers_before_the_call_returns(
    track: Track, collector: Collector
) -> None:
    app = track(fastapi_app(), sync_mode=True, batch_max_age=30.0)
    async with client(app) as http:
        await http.get("/items/1")
        assert len(collector.hits) == 1
        await http.get("/items/2")
        assert len(collector.hits) == 2


async def test_aclose_without_lifespan_delivers_and_closes(
    track: Track, collector: Collector
) -> None:
    app = track(fastapi_app(), batch_max_age=30.0)
    async with client(app) as http:
        await http.get("/items/1")
    assert collector.hits == []  # waiting for the batch to fill
    await app.aclose()
    assert len(collector.hits) == 1
    assert app.dispatcher.submit is not None
    async with client(app) as http:
        await http.get("/items/2")  # after close: dropped, counted, the response unchanged
    assert app.dispatcher.stats().dropped == {"closed": 1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "url is required"),
        ({"url": "ftp://matomo.example"}, "url="),
        ({"url": "https://m.example", "site_id": 0}, "site_id=0"),
        ({"url": "https://m.example", "sample_rate": 2}, "sample_rate=2"),
        ({"url": "https://m.example", "ignore_paths": ["health"]}, "ignore_paths="),
        ({"url": "https://m.example", "ignore_patterns": ["("]}, "ignore_patterns="),
        ({"url": "https://m.example", "trusted_proxies": ["nope"]}, "trusted_proxies="),
        ({"url": "https://m.example", "colour": "blue"}, "colour"),
        ({"url": "https://m.example", "token_auth": ""}, "token_auth='***'"),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        MatomoMiddleware(PlainTextResponse("x"), **options)


def test_a_dispatcher_and_an_http_client_do_not_go_together() -> None:
    config_url = "https://m.example"
    dispatcher = AsyncioDispatcher(TrackingConfig(url=config_url))
    with pytest.raises(ValueError, match="http_client"):
        MatomoMiddleware(
            PlainTextResponse("x"),
            url=config_url,
            dispatcher=dispatcher,
            http_client=cast(httpx.AsyncClient, object()),
        )


async def test_a_dispatcher_of_your_own_is_used_and_not_closed(
    collector: Collector, matomo_http: httpx.AsyncClient
) -> None:
    dispatcher = AsyncioDispatcher(
        TrackingConfig(url="http://matomo.test", batch_max_age=30.0), http_client=matomo_http
    )
    app = MatomoMiddleware(
        Starlette(routes=[Route("/", _home)]), url="http://matomo.test", dispatcher=dispatcher
    )
    async with client(app) as http:
        await http.get("/")
    await app.aclose()  # flushes a dispatcher it did not make, without closing it
    assert len(collector.hits) == 1
    assert dispatcher.submit is not None
    async with client(app) as http:
        await http.get("/")
    assert await dispatcher.aclose(2.0)
    assert len(collector.hits) == 2


async def _home(request: Any) -> PlainTextResponse:
    return PlainTextResponse("home")


def _scope(path: str, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"shop.test")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


async def test_a_raising_hook_changes_nothing_for_the_request(
    track: Track, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(request: Any) -> str:
        raise KeyError("hook bug")

    app = track(fastapi_app(), action_name=broken, user_id=broken)
    async with client(app) as http:
        for n in (1, 2):
            assert (await http.get(f"/items/{n}")).json() == {"item_id": n}
    hits = await delivered(app, collector)
    assert [h["action_name"] for h in hits] == ["/items/{item_id}"] * 2
    assert all("uid" not in h.params for h in hits)
    assert caplog.text.count("hook raised") == 2  # once per hook, not once per request


async def test_an_app_that_sends_no_response_is_tracked_as_500(
    track: Track, collector: Collector
) -> None:
    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    app = track(silent, status_dimension=1)
    await app(_scope("/quiet"), receive, send)
    [hit] = await delivered(app, collector)
    assert hit["dimension1"] == "500"
    assert "pf_srv" not in hit.params
