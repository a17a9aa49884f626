"""Cloning a request (``Tracker(request=...)``, per-call ``request=``) gives the tracker's hit
what the middleware's hits for that request carry: the visitor id parameters (``_id``/``cid``
from the JavaScript tracker's ``_pk_id`` cookie, or the keyed per-visitor id), the client
hints (``uadata``), the address, user agent and language. Side by side, for Starlette and Flask
here and for Django in ``tests/wsgi/test_django.py``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from matomo_tracking.hits import Hit
from matomo_wsgi import Tracker
from tests.sentinel import SENTINEL_TOKEN
from tests.wsgi.conftest import RecordingDispatcher

PK_ID = "a1b2c3d4e5f60718"
BROWSER = {
    "user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0 Safari/537.36",
    "accept-language": "fr-CH",
    "sec-ch-ua": '"Chromium";v="124", "Not-A.Brand";v="99"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Linux"',
}
#: What must be the same on the middleware's page view and the cloned request's hit.
SAME = ("_id", "cid", "uadata", "cip", "ua", "lang", "url", "idsite")
#: (middleware options, cookie header): with a token and the JavaScript visitor id; without a
#: token, with it (``_id`` and ``cid``) and without it (the keyed per-visitor ``cid``).
CASES = {
    "token-pk-id": ({"token_auth": SENTINEL_TOKEN}, f"_pk_id.1.1fff={PK_ID}.1700000000."),
    "salt-pk-id": ({"visitor_salt": "clone-salt"}, f"other=1; _pk_id.1.1fff={PK_ID}.17000."),
    "salt-no-cookie": ({"visitor_salt": "clone-salt"}, None),
    "anonymized": ({"visitor_salt": "clone-salt", "anonymize_ip": 2}, None),
}


def assert_cloned_like_the_middleware(page: Hit, cloned: Hit, cookie: str | None) -> None:
    """The cloned request's hit carries the middleware's visitor parameters and hints."""
    assert cloned.params["e_c"] == "clone"
    for key in SAME:
        assert cloned.params.get(key) == page.params.get(key), key
    assert page.params.get("uadata")  # the comparison is not between two absent values
    assert "cid" in page.params or "_id" in page.params
    if cookie is not None:
        assert PK_ID in (page.params.get("_id"), page.params.get("cid"))


def tracker_for(options: Mapping[str, Any], dispatcher: RecordingDispatcher) -> Tracker:
    """A tracker configured as the middleware, recording its hits."""
    return Tracker(url="https://matomo.example", dispatcher=dispatcher, **options)


def starlette_pair(
    options: Mapping[str, Any], headers: dict[str, str]
) -> tuple[list[Hit], list[Hit]]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from matomo_asgi import MatomoMiddleware

    middleware_hits, tracker_hits = RecordingDispatcher(), RecordingDispatcher()
    tracker = tracker_for(options, tracker_hits)

    async def page(request: Request) -> PlainTextResponse:
        tracker.track_event("clone", "starlette", request=request)
        return PlainTextResponse("ok")

    app = MatomoMiddleware(
        Starlette(routes=[Route("/page", page)]),
        url="https://matomo.example",
        dispatcher=middleware_hits,
        **options,
    )

    async def get() -> int:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.23", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as c:
            return (await c.get("/page?x=1", headers=headers)).status_code

    assert asyncio.run(get()) == 200
    return middleware_hits.hits, tracker_hits.hits


def flask_pair(options: Mapping[str, Any], headers: dict[str, str]) -> tuple[list[Hit], list[Hit]]:
    from flask import Flask, request

    from matomo_wsgi import MatomoMiddleware

    middleware_hits, tracker_hits = RecordingDispatcher(), RecordingDispatcher()
    tracker = tracker_for(options, tracker_hits)
    app = Flask(__name__)

    @app.get("/page")
    def page() -> str:
        tracker.track_event("clone", "flask", request=request)
        return "ok"

    app.wsgi_app = MatomoMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, url="https://matomo.example", dispatcher=middleware_hits, **options
    )
    # Without its cookie jar, Werkzeug's client sends the Cookie header as given.
    response = app.test_client(use_cookies=False).get(
        "/page?x=1", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.23"}
    )
    assert response.status_code == 200
    response.close()  # the middleware tracks the request when its response is closed
    return middleware_hits.hits, tracker_hits.hits


PAIRS: dict[str, Callable[[Mapping[str, Any], dict[str, str]], tuple[list[Hit], list[Hit]]]] = {
    "starlette": starlette_pair,
    "flask": flask_pair,
}


@pytest.mark.parametrize("framework", sorted(PAIRS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cloned_request_carries_the_middlewares_visitor_ids_and_hints(
    framework: str, case: str
) -> None:
    options, cookie = CASES[case]
    headers = dict(BROWSER, host="shop.example")
    if cookie is not None:
        headers["cookie"] = cookie

    (page,), (cloned,) = PAIRS[framework](options, headers)

    assert_cloned_like_the_middleware(page, cloned, cookie)


def test_a_cloned_request_without_a_salt_sends_no_keyed_visitor_id() -> None:
    # The middleware keys its visitor ids with a random per-process salt when none is set;
    # a tracker cannot reproduce it, so it sends none rather than one no one else can match.
    tracker_hits = RecordingDispatcher()
    tracker = tracker_for({}, tracker_hits)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "HTTP_HOST": "h.example",
        "REMOTE_ADDR": "198.51.100.23",
    }

    tracker.track_event("clone", "bare", request=environ)
    tracker.track_event("clone", "forced", request=environ, visitor_id="00000000000000AA")

    bare, forced = (h.params for h in tracker_hits.hits)
    assert "cid" not in bare
    assert "_id" not in bare
    assert forced["cid"] == "00000000000000aa"


@pytest.mark.parametrize("kind", ["Tracker", "AsyncTracker"])
def test_the_constructor_clones_a_request_for_every_call(kind: str) -> None:
    from matomo_asgi import AsyncTracker

    hits = RecordingDispatcher()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/job",
        "HTTP_HOST": "h.example",
        "HTTP_USER_AGENT": "UA/9",
        "HTTP_COOKIE": f"_pk_id.1.aaaa={PK_ID}.1.",
    }
    cls = Tracker if kind == "Tracker" else AsyncTracker
    tracker = cls(url="https://matomo.example", dispatcher=hits, request=environ)

    tracker.track_event("clone", "constructor")

    (hit,) = hits.hits
    assert (hit.params["url"], hit.params["ua"], hit.params["_id"]) == (
        "http://h.example/job",
        "UA/9",
        PK_ID,
    )
    with pytest.raises(TypeError, match="request=int is not supported"):
        cls(url="https://matomo.example", dispatcher=hits, request=3)
