"""Apps of the metrics end-to-end tests, configured by ``MATOMO_URL``: each tracked, with its
dispatcher's delivery metrics served on ``/metrics`` (not tracked).

    uvicorn --factory tests.metrics.apps:asgi_from_env
    gunicorn -w 2 tests.metrics.apps:wsgi_app   # with PROMETHEUS_MULTIPROC_DIR set
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, make_asgi_app, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import matomo_asgi
import matomo_wsgi
from matomo_tracking.metrics import PrometheusMetrics


def _options() -> dict[str, Any]:
    return {
        "url": os.environ["MATOMO_URL"],
        "visitor_salt": "metrics",
        "batch_max_age": 0.05,
        "probe_interval": 0.2,
        "backoff_base": 0.1,
        "backoff_max": 0.5,
        "ignore_paths": ["/metrics"],
    }


async def _item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"item {request.path_params['n']}")


def asgi_from_env() -> matomo_asgi.MatomoMiddleware:
    """A Starlette app, tracked, its metrics (this process's registry) on ``/metrics``."""
    registry = CollectorRegistry()
    routes = [Route("/items/{n}", _item), Mount("/metrics", make_asgi_app(registry))]
    app = matomo_asgi.MatomoMiddleware(Starlette(routes=routes), **_options())
    PrometheusMetrics(registry=registry).attach(app.dispatcher)  # type: ignore[arg-type]
    return app


def _items(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO", "").startswith("/metrics"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # every worker's figures, from PROMETHEUS_MULTIPROC_DIR
        return make_wsgi_app(registry)(environ, start_response)  # type: ignore[no-any-return]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid {os.getpid()}".encode()]


#: The WSGI app for gunicorn: made in each worker (no --preload), metrics in the shared directory.
wsgi_app = matomo_wsgi.MatomoMiddleware(_items, **_options())
PrometheusMetrics().attach(wsgi_app.dispatcher)  # type: ignore[arg-type]
