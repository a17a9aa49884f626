"""A plain WSGI callable, tracked: `MATOMO_URL=... gunicorn examples.wsgi_app:app`
(or `python examples/wsgi_app.py` for the standard library's server)."""

import os
from collections.abc import Callable, Iterable
from typing import Any

from matomo_wsgi import MatomoMiddleware


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from plain WSGI\n"]


app = MatomoMiddleware(
    hello,
    url=os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
    site_id=int(os.environ.get("MATOMO_SITE_ID", "1")),
    token_auth=os.environ.get("MATOMO_TOKEN_AUTH") or None,
)

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), app) as server:
        server.serve_forever()
