"""The WSGI benchmark app (Flask), bare or wrapped, picked by environment variables.

``BENCH_VARIANT``: ``bare`` (default), ``ours`` (``matomo_wsgi.MatomoMiddleware``),
``stub`` (the same, with a
dispatcher that only counts: the request path without delivery), ``noop`` (the smallest
middleware of the same shape, ``bench.apps.noop``: the floor of wrapping the app) or ``peer``
(flask-matomo2's ``Matomo`` extension). ``BENCH_MATOMO_URL``: the collector's base URL.
``BENCH_OPTIONS``: JSON object of extra ``TrackingConfig`` options for ``ours``.

Routes: ``GET /items/<int:item_id>`` (small JSON, a path parameter) and ``GET /page`` (small
HTML). ``GET /_bench/stats`` (not tracked): how many requests the two routes served, and the
dispatcher's statistics for ``ours``.

Serve: ``BENCH_VARIANT=ours gunicorn -k gthread --threads 8 bench.apps.wsgi_app:app``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from typing import Any

from flask import Flask, Response, jsonify

PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Page</title></head>"
    "<body><h1>A page</h1><p>Some text to track.</p></body></html>"
)
STATS_PATH = "/_bench/stats"

flask_app = Flask(__name__)
_served = 0  # requests the routes answered
_served_lock = threading.Lock()


def _count() -> None:
    global _served
    with _served_lock:
        _served += 1


@flask_app.get("/items/<int:item_id>")
def item(item_id: int) -> Response:
    """A small JSON document that depends on the path parameter."""
    _count()
    return jsonify({"id": item_id, "name": f"item {item_id}", "price": item_id * 3 % 97})


@flask_app.get("/page")
def page() -> Response:
    """A small HTML page."""
    _count()
    return Response(PAGE, content_type="text/html; charset=utf-8")


@flask_app.get(STATS_PATH)
def stats() -> Response:
    """Requests served so far, and the dispatcher's statistics for ``ours``."""
    return jsonify({"served": _served, "dispatcher": dispatcher_stats(app)})


def dispatcher_stats(wrapped: object) -> dict[str, Any]:
    """``stats()`` of the middleware's dispatcher as a dict (empty if there is none)."""
    dispatcher = getattr(wrapped, "dispatcher", None)
    if dispatcher is None:
        return {}
    return dataclasses.asdict(dispatcher.stats())


def build(variant: str, url: str, options: dict[str, Any]) -> Any:
    """The WSGI app for ``variant``: bare, or wrapped in our middleware or the peer's."""
    if variant == "bare":
        return flask_app
    if variant == "noop":
        from bench.apps.noop import NoopWSGI

        return NoopWSGI(flask_app)
    if variant in ("ours", "stub"):
        from matomo_wsgi import MatomoMiddleware

        if variant == "stub":  # our request path, delivery replaced by a counter
            from bench.apps.counting import CountingDispatcher

            options = {**options, "dispatcher": CountingDispatcher()}
        return MatomoMiddleware(flask_app, url=url, site_id=1, ignore_paths=("/_bench",), **options)
    if variant == "peer":
        from flask_matomo2 import Matomo  # type: ignore[import-untyped,import-not-found,unused-ignore]

        Matomo(flask_app, matomo_url=url, id_site=1, ignored_routes=[STATS_PATH])
        return flask_app
    raise ValueError(
        f"BENCH_VARIANT={variant!r} is invalid: expected bare, noop, ours, stub or peer"
    )


app = build(
    os.environ.get("BENCH_VARIANT", "bare"),
    os.environ.get("BENCH_MATOMO_URL", "http://127.0.0.1:8765"),
    json.loads(os.environ.get("BENCH_OPTIONS") or "{}"),
)
