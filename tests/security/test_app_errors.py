"""An exception from the app: it propagates unchanged (the very same object), the request is
tracked as a 500 (or with the status already sent), and nothing of its message reaches a hit
or a log record."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

import pytest

from tests.security.harness import (
    ADAPTERS,
    Tracked,
    asgi_middleware,
    asgi_scope,
    run_asgi,
    run_wsgi,
    wsgi_environ,
    wsgi_middleware,
)
from tests.sentinel import SENTINEL_TOKEN

MARKER = "marker-5b1e0c7a"
OPTIONS = {"status_dimension": 1, "bots": "bot-reports", "token_auth": SENTINEL_TOKEN}


class AppBug(Exception):
    """What the app raises."""


def make_error() -> AppBug:
    return AppBug(f"database password is {SENTINEL_TOKEN} ({MARKER})")


def failing_asgi_app(error: BaseException, where: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if where == "before_start":
            raise error
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise error

    return app


def failing_wsgi_app(error: BaseException, where: str) -> Any:
    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        if where == "before_start":
            raise error
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()

    def body() -> Iterable[bytes]:
        yield b"partial"
        raise error

    return app


def run(adapter: str, error: BaseException, where: str) -> Tracked:
    if adapter == "asgi":
        middleware, dispatcher = asgi_middleware(failing_asgi_app(error, where), **OPTIONS)
        outcome = run_asgi(middleware, asgi_scope(path="/checkout"))
        config = middleware.config
    else:
        wsgi, dispatcher = wsgi_middleware(failing_wsgi_app(error, where), **OPTIONS)
        outcome = run_wsgi(wsgi, wsgi_environ(path="/checkout"))
        config = wsgi.config
    return Tracked(outcome, dispatcher.take(), config)


def assert_nothing_of_the_message(tracked: Tracked, caplog: pytest.LogCaptureFixture) -> None:
    sent = json.dumps([dict(hit.params) for hit in tracked.hits])
    logged = "\n".join(logging.Formatter().format(record) for record in caplog.records)
    for text in (sent, logged):
        assert MARKER not in text
        assert SENTINEL_TOKEN not in text


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_app_exception_propagates_unchanged_and_is_tracked_as_500_without_its_message(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    error = make_error()

    tracked = run(adapter, error, "before_start")

    assert tracked.outcome.error is error  # the very same object, message intact
    assert MARKER in str(error)
    assert error.__cause__ is None
    assert tracked.hit["dimension1"] == tracked.hit["http_status"] == "500"
    assert tracked.hit["action_name"] == "/checkout"
    assert_nothing_of_the_message(tracked, caplog)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_app_exception_after_the_response_started_keeps_the_status_sent(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    error = make_error()

    tracked = run(adapter, error, "after_start")

    assert tracked.outcome.error is error
    assert tracked.hit["http_status"] == "200"  # what the client already received
    assert tracked.hit["bw_bytes"] == "7"
    assert_nothing_of_the_message(tracked, caplog)
