"""The Flask app of the WSGI tests. ``create_app()`` is the bare app; ``app`` (for gunicorn)
is tracked by ``MatomoMiddleware`` configured from environment variables: ``MATOMO_URL``,
``MATOMO_TIMEOUT``, ``MATOMO_SHUTDOWN_TIMEOUT``, ``MATOMO_BATCH_MAX_AGE``, and
``MATOMO_WARMUP=1`` to track one request at import (in gunicorn's master under ``--preload``,
so that the master's dispatcher thread runs before the workers are forked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, request, send_file, stream_with_context

from matomo_wsgi import MatomoMiddleware, get_context

#: The file ``/download`` serves (this module).
DATA_FILE = Path(__file__)


def create_app() -> Flask:
    app = Flask(__name__)
    shop = Blueprint("shop", __name__, url_prefix="/shop")

    @app.get("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, Any]:
        get_context(request).set_dimension(2, str(os.getpid()))
        return {"id": item_id, "pid": os.getpid()}

    @app.get("/event")
    def event() -> str:
        context = get_context(request)
        context.set_action_name("Custom name")
        context.track_event("shop", "view", "item")
        return "ok"

    @app.get("/skipped")
    def skipped() -> str:
        get_context(request).skip()
        return "not tracked"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret failure detail")

    @app.get("/download")
    def download() -> Response:
        return send_file(DATA_FILE, mimetype="application/octet-stream")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Any:
            for _ in range(10):
                yield "x" * 100

        return Response(stream_with_context(chunks()), mimetype="text/plain")

    @shop.get("/products/<slug>")
    def product(slug: str) -> str:
        return slug

    app.register_blueprint(shop)
    return app


def _options_from_env() -> dict[str, Any]:
    return {
        "url": os.environ.get("MATOMO_URL", "http://127.0.0.1:9/"),
        "visitor_salt": "e2e-salt",
        "status_dimension": 1,
        "bytes_dimension": 3,
        "timeout": float(os.environ.get("MATOMO_TIMEOUT", "5")),
        "shutdown_timeout": float(os.environ.get("MATOMO_SHUTDOWN_TIMEOUT", "5")),
        "batch_max_age": float(os.environ.get("MATOMO_BATCH_MAX_AGE", "0.2")),
    }


app = create_app()
app.wsgi_app = MatomoMiddleware(app.wsgi_app, **_options_from_env())  # type: ignore[method-assign]

if os.environ.get("MATOMO_WARMUP") == "1":
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    _environ = EnvironBuilder(path="/items/0", headers=[("User-Agent", "warmup")]).get_environ()
    _body, _status, _headers = run_wsgi_app(app.wsgi_app, _environ, buffered=True)
