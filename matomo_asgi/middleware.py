"""``MatomoMiddleware``: a pure ASGI middleware that turns every HTTP request into Matomo hits,
observing the response through ``send`` and never waiting for Matomo."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

import httpx

from matomo_asgi._types import ASGIApp, Message, Receive, Scope, Send
from matomo_asgi.dispatcher import AsyncioDispatcher
from matomo_asgi.routes import RouteFinder
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.flow import Pending, RequestFlow, check_dispatcher
from matomo_tracking.request import asgi_app_path, request_from_asgi

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from matomo_tracking.config import TrackingOptions

__all__ = ["MatomoMiddleware"]

logger = logging.getLogger(__name__)


class _Response:
    """What one request's ``send`` calls showed of its response (per request, never shared)."""

    __slots__ = ("body_bytes", "content_type", "started", "status", "ttfb")

    def __init__(self) -> None:
        self.status = 0
        self.content_type = ""
        self.ttfb: float | None = None  # the flow's timer at the response start
        self.body_bytes = 0
        self.started = False


class _Lifespan:
    """How far the wrapped app got through the lifespan protocol."""

    __slots__ = ("failed", "shutdown", "started", "startup", "stopped")

    def __init__(self) -> None:
        self.startup = False  # the app received lifespan.startup
        self.started = False  # the app answered it
        self.failed = False  # with startup.failed
        self.shutdown = False  # lifespan.shutdown was received
        self.stopped = False  # the app answered it


class MatomoMiddleware:
    """Track every HTTP request of an ASGI app (FastAPI, Starlette, Django ASGI, ...) in Matomo.

    Configured by keyword arguments (see ``TrackingConfig``; a bad value raises ``ValueError``
    naming the key). The response is observed, never buffered or changed; the hits are built
    once it is sent and handed to the dispatcher, which delivers them in the background, so a
    slow or absent Matomo never delays a response.

    Handlers shape the hit through ``request.state.matomo`` (a ``TrackingContext``; see
    ``get_context``). Route templates (``/items/{item_id}``: FastAPI, Starlette, Litestar, Quart,
    Falcon, Django) are the default action names.

    The dispatcher (an ``AsyncioDispatcher`` unless one is passed) starts on lifespan startup
    and is flushed within ``shutdown_timeout`` on lifespan shutdown; without lifespan it
    starts with the first request, and ``await middleware.aclose()`` flushes it.
    ``http_client`` is an ``httpx.AsyncClient`` for the dispatcher made here.

    ``sync_mode=True`` (for platforms that freeze the process once the ASGI call returns):
    each request's hits are delivered before the call returns, after the response was sent.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        http_client: httpx.AsyncClient | None = None,
        dispatcher: Dispatcher | None = None,
        **options: Unpack[TrackingOptions],
    ) -> None:
        self.app = app
        self.config = TrackingConfig.from_kwargs(options)
        check_dispatcher(dispatcher, http_client)
        self._owns_dispatcher = dispatcher is None
        self.dispatcher: Dispatcher = (
            dispatcher
            if dispatcher is not None
            else AsyncioDispatcher(self.config, http_client=http_client)
        )
        # The process's clocks, a random source and a salt made once per process.
        salt, rng = os.urandom(32), random.Random()
        self._flow = RequestFlow(
            self.config, self.dispatcher, salt, rng, time.time, time.perf_counter
        )
        self.builder = self._flow.builder
        self._sync_mode = self.config.sync_mode
        self._routes = RouteFinder(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- requests --------------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        elif state.__class__ is not dict and not isinstance(state, MutableMapping):
            # Not ours to write into. (The exact class first: an ABC check costs 250 ns more,
            # bench/micro.py "tricks".)
            await self.app(scope, receive, send)
            return
        pending = self._flow.begin(
            state,
            scope.get("method"),
            asgi_app_path(scope),
            lambda: request_from_asgi(scope),
        )
        if pending is None:
            await self.app(scope, receive, send)
            return

        root_path = scope.get("root_path")  # as it was before the app ran (a Mount extends it)
        root_path = root_path if isinstance(root_path, str) else ""
        timer = self._flow.timer
        response = _Response()

        async def observe(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                response.started = True
                response.ttfb = timer()
                status = message.get("status")
                response.status = status if isinstance(status, int) else 200
                response.content_type = _content_type(message.get("headers"))
            elif kind == "http.response.body":
                body = message.get("body")
                if body:
                    response.body_bytes += len(body)
            elif kind == "http.response.pathsend":  # the server sends the whole file (granian)
                response.body_bytes += _file_size(message.get("path"))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        except Exception:
            self._track(scope, root_path, pending, response, failed=True)
            if self._sync_mode:
                await self._sync_flush()
            raise
        self._track(scope, root_path, pending, response, failed=False)
        if self._sync_mode:  # (checked here: awaiting a coroutine per request is not free)
            await self._sync_flush()

    def _track(
        self, scope: Scope, root_path: str, pending: Pending, response: _Response, *, failed: bool
    ) -> None:
        path = pending.view.path
        self._flow.finish(
            pending,
            # Without a response start the server answers 500 itself.
            status=response.status if response.started else 500,
            content_type=response.content_type,
            ttfb=response.ttfb,
            body_bytes=response.body_bytes,
            failed=failed,
            find_route=lambda: self._routes.find(scope, root_path, path),
        )

    async def _sync_flush(self) -> None:
        if not self.config.sync_mode:
            return
        try:
            await self.dispatcher.aflush(self.config.timeout)
        except Exception:
            self._flow.internal_error("delivering hits in sync_mode")

    # -- lifespan --------------------------------------------------------------------------
    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen = _Lifespan()

        async def app_receive() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                seen.startup = True
                self._start()
            elif kind == "lifespan.shutdown":
                seen.shutdown = True
            return message

        async def app_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "lifespan.startup.complete":
                seen.started = True
            elif kind == "lifespan.startup.failed":
                seen.started = seen.failed = True
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # Flush before the server hears that the app is done (and exits).
                seen.stopped = True
                await self._shutdown()
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if seen.started:
                if seen.shutdown and not seen.stopped:
                    await self._shutdown()
                raise
            # The app does not speak lifespan (Django raises, others return): answer the
            # server ourselves, so that the dispatcher still starts and is flushed.
            logger.debug("matomo: the app does not support lifespan; answering it", exc_info=True)
        if seen.failed or seen.stopped:
            return
        if not seen.started:
            if not seen.startup:
                message = await receive()
                if message.get("type") != "lifespan.startup":
                    return
                self._start()
            await send({"type": "lifespan.startup.complete"})
        while not seen.shutdown:
            message = await receive()
            seen.shutdown = message.get("type") == "lifespan.shutdown"
        await self._shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    def _start(self) -> None:
        try:
            self.dispatcher.start()
        except Exception:
            logger.warning("matomo: the dispatcher did not start", exc_info=True)

    async def _shutdown(self) -> None:
        try:
            await self.aclose(self.config.shutdown_timeout)
        except Exception:
            logger.warning("matomo: flushing hits at shutdown failed", exc_info=True)

    def stats(self) -> DispatchStats:
        """The dispatcher's statistics: hits queued, sent, retried, dropped (by reason)."""
        return self.dispatcher.stats()

    async def aclose(self, timeout: float | None = None) -> None:
        """Deliver the queued hits (at most ``timeout`` s, default ``shutdown_timeout``) and
        close the dispatcher made here (a dispatcher you passed is flushed, not closed).

        Lifespan shutdown does this already; call it when the server runs without lifespan.
        """
        limit = self.config.shutdown_timeout if timeout is None else timeout
        if self._owns_dispatcher:
            await self.dispatcher.aclose(limit)
        else:
            await self.dispatcher.aflush(limit)


def _file_size(path: object) -> int:
    # A stat of a local file the server is about to open: cheaper than anything it does next.
    try:
        return os.stat(path).st_size if isinstance(path, str) else 0
    except OSError:
        return 0


def _content_type(headers: object) -> str:
    if not isinstance(headers, (list, tuple)):  # (a tuple: an X | Y union is slower here)
        return ""
    for item in headers:
        try:
            name, value = item
        except (TypeError, ValueError):
            continue
        if isinstance(name, bytes) and name.lower() == b"content-type" and isinstance(value, bytes):
            return value.decode("latin-1")
    return ""
