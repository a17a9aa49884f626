"""The ``noop`` benchmark variant: the smallest middleware of our shape, for each stack.

It does what any tracking middleware must do and nothing else: wrap the app, see the
response's status and its end, and count. What it costs a served request over ``bare`` is
the floor of wrapping an app at all (an extra coroutine or ``start_response`` frame per
request, and for ASGI a wrapped ``send`` per message); ``stub`` minus ``noop`` is then what
our own request path costs (views, filters, the hit), without delivery.

``BENCH_NOOP_BURN_US``: CPU microseconds of plain Python work to spend per request (a loop
calibrated with ``time.process_time`` at import), to see what a known amount of work costs
once served: the served cost of per-request work is not its in-process cost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = ["NoopASGI", "NoopWSGI"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _calibrated_burn(microseconds: float) -> range:
    """A range whose empty loop takes about ``microseconds`` of this process's CPU."""
    if microseconds <= 0:
        return range(0)
    sample = range(1_000_000)
    started = time.process_time()
    for _ in range(20):
        for _ in sample:
            pass
    per_iteration = (time.process_time() - started) / 20e6
    return range(int(microseconds / 1e6 / per_iteration))


_BURN = _calibrated_burn(float(os.environ.get("BENCH_NOOP_BURN_US") or 0))


def _burn() -> None:
    for _ in _BURN:
        pass


class NoopASGI:
    """Wraps an ASGI app; counts HTTP requests by status once the response ended."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: dict[int, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.seen[status] = self.seen.get(status, 0) + 1
            _burn()


class NoopWSGI:
    """Wraps a WSGI app; counts requests by status once the body was handed over."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.seen: dict[str, int] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        status = ""

        def observe(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = status_line[:3]
            return start_response(status_line, headers, exc_info)

        result = self.app(environ, observe)
        try:
            yield from result
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            self.seen[status] = self.seen.get(status, 0) + 1  # gthread: a benign race
            _burn()
