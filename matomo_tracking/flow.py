"""The one request flow that every adapter runs (ASGI, WSGI, Django): take the request view,
pre-filter, let the app run, take the response view, post-filter, build the hits, submit.

The adapters only translate their protocol into views and back; what a hit looks like, when it
happened (the request's arrival), where handlers find their ``TrackingContext``, which
dispatchers are accepted and what happens when something fails are decided here, once. The
clocks and the random source are passed in (the core reads none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.hits import HitBuilder
from matomo_tracking.identity import RandomSource
from matomo_tracking.request import RequestView, ResponseView

__all__ = ["CONTEXT_KEY", "Pending", "RequestFlow", "check_dispatcher", "context_in"]

logger = logging.getLogger("matomo_tracking")

#: Where each adapter puts the request's ``TrackingContext``: ``scope["state"]["matomo"]``
#: (ASGI), ``environ["matomo"]`` (WSGI, Flask ``request.environ``, Django ``request.META``).
CONTEXT_KEY = "matomo"
#: Seconds between two logs of an internal error.
_LOG_INTERVAL = 60.0


def context_in(container: object) -> TrackingContext:
    """The ``TrackingContext`` that a middleware put in ``container`` (an ASGI state, a WSGI
    environ), or a detached one when there is none, so handler code never needs a branch
    (what is done to a detached context is discarded)."""
    context = container.get(CONTEXT_KEY) if isinstance(container, Mapping) else None
    return context if isinstance(context, TrackingContext) else TrackingContext()


def check_dispatcher(dispatcher: object, http_client: object) -> None:
    """Refuse a ``dispatcher`` that is not one (``TypeError``), and an ``http_client`` given
    with it (``ValueError``: the client is used only by the dispatcher a middleware makes)."""
    if dispatcher is None:
        return
    if http_client is not None:
        raise ValueError(
            "http_client is used only by the dispatcher the middleware makes: pass it to "
            "your dispatcher instead"
        )
    if not isinstance(dispatcher, Dispatcher):
        raise TypeError(
            f"dispatcher={dispatcher!r} is invalid: expected a Dispatcher with submit(hit), "
            "stats() and the lifecycle (start, flush, close, aflush, aclose; "
            "matomo_tracking.dispatcher.DispatcherBase has them), such as "
            "matomo_asgi.AsyncioDispatcher or matomo_wsgi.ThreadDispatcher"
        )


class Pending:
    """A request being tracked: its view, its context, when it arrived, and its route once an
    adapter knows it."""

    __slots__ = ("context", "now", "route", "start", "view")

    def __init__(
        self, view: RequestView, context: TrackingContext, start: float, now: float
    ) -> None:
        self.view = view
        self.context = context
        self.start = start  # the timer's reading at arrival, for the time to the first byte
        self.now = now  # the clock's reading (Unix seconds) at arrival: when the hit happened
        self.route: str | None = None


class RequestFlow:
    """One configuration's request flow: its builder, random source and dispatcher.

    ``salt`` is the random salt made once per process (see ``HitBuilder.for_config``),
    ``rng`` the random source; ``clock`` gives Unix seconds (the hit's time), ``timer`` a
    monotonic reading in seconds (the time to the first byte, the spacing of error logs).
    Nothing here raises into a request.
    """

    __slots__ = (
        "_clock",
        "_last_log",
        "builder",
        "config",
        "dispatcher",
        "errors",
        "rng",
        "timer",
    )

    def __init__(
        self,
        config: TrackingConfig,
        dispatcher: Dispatcher,
        salt: bytes,
        rng: RandomSource,
        clock: Callable[[], float],
        timer: Callable[[], float],
    ) -> None:
        self.config = config
        self.builder = HitBuilder.for_config(config, random_salt=salt)
        self.dispatcher = dispatcher
        self.rng = rng
        self.timer = timer
        self.errors = 0
        self._clock = clock
        self._last_log = -_LOG_INTERVAL

    def begin(
        self,
        container: MutableMapping[str, Any],
        method: object,
        path: str | None,
        make_view: Callable[[], RequestView],
    ) -> Pending | None:
        """Start a request whose context goes into ``container``; None when it is not tracked.

        ``path`` (the app-relative path, or None when it is not known cheaply) and ``method``
        (as the server gave it) are checked first, before any view is made. A container that
        already has a context was claimed by an outer middleware: left alone (the outer one
        tracks). Otherwise it gets a context either way; an untracked request's is skipped.
        """
        if CONTEXT_KEY in container:
            return None
        start = self.timer()
        context = self.builder.new_context()
        container[CONTEXT_KEY] = context
        filters = self.builder.filters
        try:
            verb = method.upper() if isinstance(method, str) and method else "GET"
            if path is not None and filters.skip_path(verb, path):
                context.skip()
                return None
            view = make_view()
            # The path was checked above unless the view's differs (WSGI: no leading "/").
            if (path != view.path or verb != view.method) and filters.skip_path(
                view.method, view.path
            ):
                context.skip()
                return None
            if filters.skip_visitor(view, self.rng.random()) is not None:
                context.skip()
                return None
        except Exception:  # a malformed request must never break it
            self.internal_error("reading the request")
            context.skip()
            return None
        return Pending(view, context, start, self._clock())

    def finish(
        self,
        pending: Pending,
        *,
        status: int,
        content_type: str,
        ttfb: float | None,
        body_bytes: int,
        failed: bool,
        find_route: Callable[[], str | None] | None = None,
    ) -> None:
        """Post-filter, build the request's hits and submit them. ``ttfb`` is the timer's
        reading at the first response byte; ``find_route`` gives the route template when
        ``pending.route`` is unknown and the action name is not set (asked only then)."""
        try:
            context = pending.context
            if context.skipped:
                return
            route = pending.route
            if route is None and find_route is not None and context.action_name is None:
                route = find_route()
            ttfb_ms = None if ttfb is None else max(0.0, (ttfb - pending.start) * 1000.0)
            # Positional: keyword arguments to a class cost a dict per call (bench/micro.py).
            response = ResponseView(status, content_type, ttfb_ms, body_bytes, failed)
            hits = self.builder.build(
                pending.view, response, context, now=pending.now, rng=self.rng, route=route
            )
            submit = self.dispatcher.submit
            for hit in hits:
                submit(hit)
        except Exception:
            self.internal_error("building the hits")

    def internal_error(self, what: str) -> None:
        """Count an internal failure and log it (with its traceback) at most once a minute."""
        self.errors += 1
        now = self.timer()
        if now - self._last_log >= _LOG_INTERVAL:
            self._last_log = now
            logger.warning(
                "matomo: %s failed; the request is not tracked (%d such error(s) so far)",
                what,
                self.errors,
                exc_info=True,
            )
