"""A plain ASGI app and a plain WSGI app with a journal, for real servers::

    uvicorn --factory tests.journal.apps:asgi_from_env
    gunicorn -w 2 -c tests/wsgi/gunicorn_conf.py 'tests.journal.apps:wsgi_from_env()'

Configured by the environment: ``MATOMO_URL``, ``MATOMO_SPOOL`` (the journal),
``MATOMO_SENDER`` (``app`` or ``external``), ``MATOMO_QUEUE_MAX_HITS``, ``MATOMO_TIMEOUT``,
``MATOMO_TOKEN_AUTH``, and ``HANDLER_LOG``: a file where the handler notes each request it
handled, as a line ``<n> <time.time()>`` (``GET /n/<n>``), written before it answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from matomo_asgi import MatomoMiddleware as AsgiMiddleware
from matomo_wsgi import MatomoMiddleware as WsgiMiddleware

_ENV_OPTIONS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("MATOMO_SPOOL", "spool", str),
    ("MATOMO_SENDER", "sender", str),
    ("MATOMO_QUEUE_MAX_HITS", "queue_max_hits", int),
    ("MATOMO_TIMEOUT", "timeout", float),
    ("MATOMO_TOKEN_AUTH", "token_auth", str),
)


def options_from_env() -> dict[str, Any]:
    """Middleware options from the environment (``MATOMO_URL`` is required)."""
    options: dict[str, Any] = {
        "url": os.environ["MATOMO_URL"],
        "batch_max_hits": 20,
        "batch_max_age": 0.05,
        "backoff_base": 0.05,
        "backoff_max": 0.5,
        "probe_interval": 0.2,
        "connect_timeout": 0.5,
        "shutdown_timeout": 2.0,
        "visitor_salt": "journal-tests",
    }
    for variable, key, convert in _ENV_OPTIONS:
        value = os.environ.get(variable)
        if value:
            options[key] = convert(value)
    return options


def _note(path: str) -> None:
    line = f"{path.rsplit('/', 1)[-1]} {time.time():.6f}\n".encode()
    log = os.environ.get("HANDLER_LOG")
    if log:  # one write of one line: whole lines, whatever the processes
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: the middleware answers it for this app
        return
    _note(scope["path"])
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def asgi_from_env() -> AsgiMiddleware:
    """The ASGI app, tracked (uvicorn ``--factory``)."""
    return AsgiMiddleware(_asgi_app, **options_from_env())


def _wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    _note(environ.get("PATH_INFO", "/"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def wsgi_from_env() -> WsgiMiddleware:
    """The WSGI app, tracked (gunicorn ``'module:wsgi_from_env()'``)."""
    return WsgiMiddleware(_wsgi_app, **options_from_env())
