"""The per-request flow shared by the WSGI middleware and the Django middleware: the cheap path
check, the request view and its filters, the context, and (once the response is known) the
hits handed to the dispatcher. Nothing here may raise into a request."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.hits import HitBuilder
from matomo_tracking.request import RequestView, ResponseView
from matomo_wsgi.context import ENVIRON_KEY

__all__ = ["Pending", "Tracking"]

logger = logging.getLogger("matomo_wsgi")

#: Seconds between two logs of an internal error.
_LOG_INTERVAL = 60.0


class Pending:
    """A request being tracked: its view, context and when it arrived."""

    __slots__ = ("context", "now", "route", "start", "view")

    def __init__(
        self, view: RequestView, context: TrackingContext, start: float, now: float
    ) -> None:
        self.view = view
        self.context = context
        self.start = start  # perf_counter() at arrival, for the time to first byte
        self.now = now  # Unix time at arrival: when the hit happened
        self.route: str | None = None


class Tracking:
    """One configuration's builder, random source and dispatcher, and the request flow."""

    __slots__ = ("_last_log", "builder", "config", "dispatcher", "errors", "rng")

    def __init__(self, config: TrackingConfig, dispatcher: Dispatcher) -> None:
        self.config = config
        self.builder = HitBuilder.for_config(config, random_salt=os.urandom(32))
        self.dispatcher = dispatcher
        self.rng = random.Random()
        self.errors = 0
        self._last_log = -_LOG_INTERVAL

    def begin(
        self, environ: MutableMapping[str, Any], make_view: Callable[[], RequestView]
    ) -> Pending | None:
        """Start tracking a request whose environ (or Django ``META``) is ``environ``; None
        when it is not tracked. Either way ``environ["matomo"]`` gets a context (a detached
        one when not tracked, so handler code never has to check), and a second middleware
        further in passes the request through (the outer one wins)."""
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO") or "/"
        # The cheapest check first, before any view is built. Only for ASCII paths: others
        # are decoded by the view, and checked again there.
        if (
            isinstance(method, str)
            and isinstance(path, str)
            and path.isascii()
            and self.builder.filters.skip_path(method.upper(), path)
        ):
            environ[ENVIRON_KEY] = self.builder.new_context()
            return None
        start = time.perf_counter()
        try:
            view = make_view()
            context = self.builder.new_context()
            if self.builder.filters.skip_request(view, self.rng.random()) is not None:
                environ[ENVIRON_KEY] = context
                return None
        except Exception:
            self.internal_error("reading the request")
            environ[ENVIRON_KEY] = TrackingContext()
            return None
        environ[ENVIRON_KEY] = context
        return Pending(view, context, start, time.time())

    def finish(
        self,
        pending: Pending,
        *,
        status: int,
        content_type: str,
        ttfb: float | None,
        body_bytes: int,
        failed: bool,
    ) -> None:
        """Build the request's hits and hand them to the dispatcher. ``ttfb`` is the
        ``perf_counter()`` reading at the first response byte."""
        try:
            ttfb_ms = None if ttfb is None else max(0.0, (ttfb - pending.start) * 1000.0)
            response = ResponseView(
                status=status,
                content_type=content_type,
                ttfb_ms=ttfb_ms,
                body_bytes=body_bytes,
                failed=failed,
            )
            hits = self.builder.build(
                pending.view,
                response,
                pending.context,
                now=pending.now,
                rng=self.rng,
                route=pending.route,
            )
            for hit in hits:
                self.dispatcher.submit(hit)
        except Exception:
            self.internal_error("building the hits")

    def internal_error(self, what: str) -> None:
        """Count an internal failure and log it (with its traceback) at most once a minute."""
        self.errors += 1
        now = time.monotonic()
        if now - self._last_log >= _LOG_INTERVAL:
            self._last_log = now
            logger.warning(
                "matomo: %s failed; the request is not tracked (%d such error(s) so far)",
                what,
                self.errors,
                exc_info=True,
            )
