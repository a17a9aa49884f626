"""Route templates read off framework objects by attribute, for both adapters.

Nothing here imports a framework: the adapters find the framework's app in the chain of
wrappers (``find_wrapped``, with the class they took from ``sys.modules``, so a framework that
was never imported is never looked for) and hand it over. A framework object that lacks what
is read here (an unknown or future version) raises ``RouteUnavailable``; the adapters then
log it once at debug level and fall back to the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["RouteUnavailable", "falcon_route", "find_wrapped", "litestar_route"]

_MAX_DEPTH = 8  # wrapping middleware followed at most this deep


class RouteUnavailable(LookupError):
    """A framework object lacks the attributes its route template is read from."""


def find_wrapped(app: object, kind: type) -> Any | None:
    """``app``, or the object it wraps, that is an instance of ``kind``; else None.

    Followed: a bound method's ``__self__`` (``app.asgi_app``, ``app.wsgi_app``), then
    ``.app`` (most middleware) or ``.application`` (WhiteNoise), at most eight deep.
    """
    node: object | None = app
    for _ in range(_MAX_DEPTH):
        if node is None:
            return None
        if isinstance(node, kind):
            return node
        owner = getattr(node, "__self__", None)
        if owner is not None and isinstance(owner, kind):
            return owner
        inner = getattr(node, "app", None)
        node = inner if inner is not None else getattr(node, "application", None)
    return None


def falcon_route(app: object, path: str) -> str | None:
    """The ``uri_template`` of the Falcon route (WSGI ``falcon.App`` or ``falcon.asgi.App``)
    that takes the app-relative ``path``, or None when none does (a 404, a sink, static files).

    Falcon keeps the matched template on its request object only; its router is asked again
    with the path, as Falcon itself asks it (trailing slash stripped when the app does).
    """
    find = getattr(getattr(app, "_router", None), "find", None)
    if not callable(find):
        raise RouteUnavailable("the Falcon app has no router with find()")
    options = getattr(app, "req_options", None)
    if getattr(options, "strip_url_path_trailing_slash", False) and len(path) > 1:
        path = path.rstrip("/") or "/"
    found = find(path)
    if found is None:
        return None
    if not isinstance(found, tuple) or len(found) < 4:
        raise RouteUnavailable("the Falcon router's find() returned an unknown shape")
    template = found[3]
    return template if isinstance(template, str) and template.startswith("/") else None


def litestar_route(scope: Mapping[str, Any]) -> str | None:
    """The path template Litestar's router left in the scope (routers' paths included), or
    None when Litestar did not route the request (404) or handed it to a mounted app.

    Raises ``RouteUnavailable`` when Litestar routed it (``route_handler`` is set) but left no
    ``path_template`` (a version that does not record it).
    """
    if "route_handler" not in scope:
        return None
    template = scope.get("path_template")
    if not isinstance(template, str):
        raise RouteUnavailable("Litestar routed the request but left no path_template")
    return template if template.startswith("/") else None
