"""``MatomoMiddleware``: a pure ASGI middleware that turns every HTTP request into Matomo hits,
observing the response through ``send`` and never waiting for Matomo."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import httpx

from matomo_asgi._types import ASGIApp, Message, Receive, Scope, Send
from matomo_asgi.dispatcher import AsyncioDispatcher
from matomo_asgi.routes import RouteFinder
from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.hits import HitBuilder
from matomo_tracking.request import RequestView, ResponseView, asgi_app_path, request_from_asgi

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from matomo_tracking.config import TrackingOptions

__all__ = ["MatomoMiddleware"]

logger = logging.getLogger(__name__)

_WARN_EVERY = 60.0
_STATE_KEY = "matomo"


class _Response:
    """What one request's ``send`` calls showed of its response (per request, never shared)."""

    __slots__ = ("body_bytes", "content_type", "started", "status", "ttfb_ms")

    def __init__(self) -> None:
        self.status = 0
        self.content_type = ""
        self.ttfb_ms: float | None = None
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
        if dispatcher is not None and http_client is not None:
            raise ValueError(
                "http_client is used only by the dispatcher the middleware makes: pass it to "
                "your dispatcher instead"
            )
        self.builder = HitBuilder.for_config(self.config, random_salt=os.urandom(32))
        self._owns_dispatcher = dispatcher is None
        self.dispatcher: Dispatcher = (
            dispatcher
            if dispatcher is not None
            else AsyncioDispatcher(self.config, http_client=http_client)
        )
        self._filters = self.builder.filters
        self._sync_mode = self.config.sync_mode
        self._rng = random.Random()
        self._routes = RouteFinder(app)
        self._last_warning = -math.inf

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
        started = time.perf_counter()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        if (
            state.__class__ is not dict and not isinstance(state, MutableMapping)
        ) or _STATE_KEY in state:  # (a type check first: an ABC check is not cheap)
            # Stacked: the outer MatomoMiddleware tracks this request.
            await self.app(scope, receive, send)
            return
        context = self.builder.new_context()
        state[_STATE_KEY] = context
        try:
            # The cheapest check first, before any view is built.
            method = scope.get("method")
            method = method.upper() if isinstance(method, str) else "GET"
            skip = self._filters.skip_path(method, asgi_app_path(scope))
            view = None if skip else self._view(scope)
        except Exception:  # a malformed scope must never break the request
            self._warn("matomo: a request could not be read; it is not tracked", exc_info=True)
            view = None
        if view is None:
            context.skip()
            await self.app(scope, receive, send)
            return

        root_path = scope.get("root_path")
        root_path = root_path if isinstance(root_path, str) else ""
        response = _Response()

        async def observe(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                response.started = True
                response.ttfb_ms = (time.perf_counter() - started) * 1000.0
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
            self._track(scope, root_path, view, response, context, failed=True)
            if self._sync_mode:
                await self._sync_flush()
            raise
        self._track(scope, root_path, view, response, context, failed=False)
        if self._sync_mode:  # (checked here: awaiting a coroutine per request is not free)
            await self._sync_flush()

    def _view(self, scope: Scope) -> RequestView | None:
        """The request's view, or None when the filters skip it (the path was checked)."""
        view = request_from_asgi(scope)
        if self._filters.skip_request(view, self._rng.random()) is not None:
            return None
        return view

    def _track(
        self,
        scope: Scope,
        root_path: str,
        view: RequestView,
        response: _Response,
        context: TrackingContext,
        *,
        failed: bool,
    ) -> None:
        # Runs once the response is sent; nothing here may raise into the request.
        try:
            if context.skipped:
                return
            route = None
            if context.action_name is None:
                route = self._routes.find(scope, root_path, view.path)
            # Without a response start the server answers 500 itself.
            status = response.status if response.started else 500
            seen = ResponseView(
                status=status,
                content_type=response.content_type,
                ttfb_ms=response.ttfb_ms,
                body_bytes=response.body_bytes,
                failed=failed,
            )
            hits = self.builder.build(
                view, seen, context, now=time.time(), rng=self._rng, route=route
            )
            for hit in hits:
                self.dispatcher.submit(hit)
        except Exception:
            self._warn("matomo: a request could not be tracked", exc_info=True)

    async def _sync_flush(self) -> None:
        if not self.config.sync_mode:
            return
        try:
            await self._flush(self.config.timeout)
        except Exception:
            self._warn("matomo: delivering hits in sync_mode failed", exc_info=True)

    def _warn(self, message: str, *, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            logger.warning(message, exc_info=exc_info)

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
        start = getattr(self.dispatcher, "start", None)
        if callable(start):
            try:
                start()
            except Exception:
                logger.warning("matomo: the dispatcher did not start", exc_info=True)

    async def _shutdown(self) -> None:
        try:
            if self._owns_dispatcher and isinstance(self.dispatcher, AsyncioDispatcher):
                await self.dispatcher.aclose(self.config.shutdown_timeout)
            else:
                await self._flush(self.config.shutdown_timeout)
        except Exception:
            logger.warning("matomo: flushing hits at shutdown failed", exc_info=True)

    async def _flush(self, timeout: float) -> None:
        dispatcher: Any = self.dispatcher
        aflush = getattr(dispatcher, "aflush", None)
        if callable(aflush):
            await aflush(timeout)
            return
        flush = getattr(dispatcher, "flush", None)
        if callable(flush):  # a thread dispatcher: wait for it without blocking the loop
            await asyncio.to_thread(flush, timeout)

    def stats(self) -> DispatchStats:
        """The dispatcher's statistics: hits queued, sent, retried, dropped (by reason)."""
        return self.dispatcher.stats()

    async def aclose(self, timeout: float | None = None) -> None:
        """Deliver the queued hits (at most ``timeout`` s, default ``shutdown_timeout``) and
        close the dispatcher made here (a dispatcher you passed is flushed, not closed).

        Lifespan shutdown does this already; call it when the server runs without lifespan.
        """
        limit = self.config.shutdown_timeout if timeout is None else timeout
        if self._owns_dispatcher and isinstance(self.dispatcher, AsyncioDispatcher):
            await self.dispatcher.aclose(limit)
        else:
            await self._flush(limit)


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
