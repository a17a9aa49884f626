"""Route templates (``/items/<int:item_id>``) as action names, so that Matomo groups the pages
of one route instead of listing every id.

Flask and Werkzeug keep the request in ``environ["werkzeug.request"]`` and its matched rule in
``request.url_rule.rule`` (read while the request is alive: Flask clears the key when its
request context ends). Django keeps the resolved route in ``request.resolver_match.route``; a
Django WSGI handler wrapped by the WSGI middleware is asked through Django's URL resolver.
Flask and Django are never imported here: objects are read by attribute, and Django's
resolver is imported only when the wrapped app is a Django handler. None means "no template":
the hit falls back to the app-relative path.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["django_route", "is_django_handler", "resolve_django_route", "werkzeug_route"]

_MAX_DEPTH = 8  # wrapping middleware followed at most this deep


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
    module = sys.modules.get("django.core.handlers.wsgi")
    handler = getattr(module, "WSGIHandler", None) if module is not None else None
    if not isinstance(handler, type):
        return False
    node: object | None = app
    for _ in range(_MAX_DEPTH):
        if isinstance(node, handler):
            return True
        inner = getattr(node, "application", None)
        node = inner if inner is not None else getattr(node, "app", None)
        if node is None:
            return False
    return False


def resolve_django_route(path_info: str) -> str | None:
    """The route Django's URL resolver gives the app-relative ``path_info``, or None."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path_info)
    except Resolver404:
        return None
    route = match.route
    return _rooted(route) if isinstance(route, str) and route else None
