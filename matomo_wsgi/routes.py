"""Route templates (``/items/<int:item_id>``) as action names, so that Matomo groups the pages
of one route instead of listing every id.

Flask and Werkzeug keep the request in ``environ["werkzeug.request"]`` and its matched rule in
``request.url_rule.rule`` (read while the request is alive: Flask clears the key when its
request context ends). Django keeps the resolved route in ``request.resolver_match.route``; a
Django WSGI handler wrapped by the WSGI middleware is asked through Django's URL resolver.
Falcon keeps the matched ``uri_template`` on its request object only: its app's router is asked
again with the path. Flask, Django and Falcon are never imported here: objects are read by
attribute, apps recognised by a class taken from ``sys.modules``, and Django's resolver is
imported only when the wrapped app is a Django handler. None means "no template": the hit
falls back to the app-relative path (also when a framework object of an unknown version lacks
what is read, logged once at debug level).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from matomo_tracking.routes import RouteUnavailable, falcon_route, find_wrapped

__all__ = [
    "PathResolver",
    "django_route",
    "is_django_handler",
    "path_resolver",
    "resolve_django_route",
    "werkzeug_route",
]

logger = logging.getLogger(__name__)

PathResolver = Callable[[str], "str | None"]
"""Gives the route template of an app-relative path once the app handled it, or None."""


def werkzeug_route(environ: Mapping[str, Any]) -> str | None:
    """The matched Flask/Werkzeug rule of the request in ``environ``, or None."""
    request = environ.get("werkzeug.request")
    if request is None:
        return None
    rule = getattr(getattr(request, "url_rule", None), "rule", None)
    return rule if isinstance(rule, str) and rule else None


def _rooted(route: str) -> str:
    return route if route.startswith("/") else "/" + route


def django_route(request: object) -> str | None:
    """The route Django resolved for ``request`` (``resolver_match.route``, with a leading
    ``/``), or None before resolution or when nothing matched."""
    route = getattr(getattr(request, "resolver_match", None), "route", None)
    return _rooted(route) if isinstance(route, str) and route else None


def is_django_handler(app: object) -> bool:
    """Whether ``app`` is Django's WSGI handler, or wraps one (WhiteNoise keeps it as
    ``.application``, most middleware as ``.app``), without importing Django."""
    handler = getattr(sys.modules.get("django.core.handlers.wsgi"), "WSGIHandler", None)
    return isinstance(handler, type) and find_wrapped(app, handler) is not None


def resolve_django_route(path_info: str) -> str | None:
    """The route Django's URL resolver gives the app-relative ``path_info``, or None."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path_info)
    except Resolver404:
        return None
    route = match.route
    return _rooted(route) if isinstance(route, str) and route else None


class _FalconResolver:
    """Asks a Falcon app's router; paths only once the router turned out unreadable."""

    __slots__ = ("_app", "_unavailable")

    def __init__(self, app: object) -> None:
        self._app = app
        self._unavailable = False

    def __call__(self, path: str) -> str | None:
        if self._unavailable:
            return None
        try:
            return falcon_route(self._app, path)
        except RouteUnavailable as exc:
            self._unavailable = True
            logger.debug("matomo: %s; using paths as action names", exc)
            return None


def path_resolver(app: object) -> PathResolver | None:
    """How the route of a request to ``app`` is found after it ran: Django's URL resolver for
    a Django WSGI handler, the router of a Falcon app; None for any other app (Flask's rule is
    read from the environ while the request is alive)."""
    if is_django_handler(app):
        return resolve_django_route
    falcon = getattr(sys.modules.get("falcon.app"), "App", None)
    found = find_wrapped(app, falcon) if isinstance(falcon, type) else None
    return None if found is None else _FalconResolver(found)
