"""The ASGI benchmark app (Starlette), bare or wrapped, picked by environment variables.

``BENCH_VARIANT``: ``bare`` (default), ``ours`` (``matomo_asgi.MatomoMiddleware``),
``stub`` (the same, with a
dispatcher that only counts: the request path without delivery), ``noop`` (the smallest
middleware of the same shape, ``bench.apps.noop``: the floor of wrapping the app) or ``peer``
(asgi-matomo's ``MatomoMiddleware``). ``BENCH_MATOMO_URL``: the collector's base URL.
``BENCH_OPTIONS``: JSON object of extra ``TrackingConfig`` options for ``ours``.

Routes: ``GET /items/{item_id}`` (small JSON, a path parameter) and ``GET /page`` (small
HTML). ``GET /_bench/stats`` (not tracked): how many requests the two routes served, and the
dispatcher's statistics for ``ours``.

Serve: ``BENCH_VARIANT=ours uvicorn bench.apps.asgi_app:app --http httptools --loop uvloop``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Page</title></head>"
    "<body><h1>A page</h1><p>Some text to track.</p></body></html>"
)
STATS_PATH = "/_bench/stats"
_served = 0  # requests the routes answered (one event loop: no lock needed)


async def item(request: Request) -> JSONResponse:
    """A small JSON document that depends on the path parameter."""
    global _served
    _served += 1
    item_id: int = request.path_params["item_id"]
    return JSONResponse({"id": item_id, "name": f"item {item_id}", "price": item_id * 3 % 97})


async def page(request: Request) -> HTMLResponse:
    """A small HTML page."""
    global _served
    _served += 1
    return HTMLResponse(PAGE)


async def stats(request: Request) -> JSONResponse:
    """Requests served so far, and the dispatcher's statistics for ``ours``."""
    return JSONResponse({"served": _served, "dispatcher": dispatcher_stats(app)})


def dispatcher_stats(wrapped: object) -> dict[str, Any]:
    """``stats()`` of the middleware's dispatcher as a dict (empty if there is none)."""
    dispatcher = getattr(wrapped, "dispatcher", None)
    if dispatcher is None:
        return {}
    return dataclasses.asdict(dispatcher.stats())


bare = Starlette(
    routes=[
        Route("/items/{item_id:int}", item),
        Route("/page", page),
        Route(STATS_PATH, stats),
    ]
)


def build(variant: str, url: str, options: dict[str, Any]) -> Any:
    """The app for ``variant``: bare, or wrapped in our middleware or the peer's."""
    if variant == "bare":
        return bare
    if variant == "noop":
        from bench.apps.noop import NoopASGI

        return NoopASGI(bare)
    if variant in ("ours", "stub"):
        from matomo_asgi import MatomoMiddleware

        if variant == "stub":  # our request path, delivery replaced by a counter
            from bench.apps.counting import CountingDispatcher

            options = {**options, "dispatcher": CountingDispatcher()}
        return MatomoMiddleware(bare, url=url, site_id=1, ignore_paths=("/_bench",), **options)
    if variant == "peer":
        from asgi_matomo import MatomoMiddleware as PeerMiddleware  # type: ignore[import-untyped,import-not-found,unused-ignore]

        # asgi-matomo types its app with asgiref's TypedDicts, stricter than Starlette's.
        peer = PeerMiddleware(bare, matomo_url=url, idsite=1, exclude_paths=[STATS_PATH])  # type: ignore[arg-type,unused-ignore]
        return peer
    raise ValueError(
        f"BENCH_VARIANT={variant!r} is invalid: expected bare, noop, ours, stub or peer"
    )


app = build(
    os.environ.get("BENCH_VARIANT", "bare"),
    os.environ.get("BENCH_MATOMO_URL", "http://127.0.0.1:8765"),
    json.loads(os.environ.get("BENCH_OPTIONS") or "{}"),
)
