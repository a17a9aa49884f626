"""Route templates (``/items/{item_id}``) as action names, so that Matomo groups the pages of
one route instead of listing every id.

Read after the app ran: FastAPI and Starlette leave the matched route in ``scope["route"]``;
below a ``Mount`` (whose route knows only its own part) and for routers that set nothing the
app's routes are walked the way the router walks them. Litestar leaves the template (its
routers' paths included) in ``scope["path_template"]``. Quart and Falcon keep the matched rule
on their request object only, so their app's own router is asked again with the path (Quart's
werkzeug ``url_map``, Falcon's router), and Django's URL resolver for Django's ASGI handler.
No framework is imported: an app is recognised by a class taken from ``sys.modules``, so a
framework never imported is never looked for (Django's resolver is imported only when the
app is a Django handler). None means "no template": the hit falls back to the app-relative
path. A framework object lacking what is read (an unknown or future version) gives the path
too, logged once at debug level.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from matomo_tracking.routes import RouteUnavailable, falcon_route, find_wrapped, litestar_route

__all__ = ["RouteFinder", "route_template"]

logger = logging.getLogger(__name__)

_MAX_DEPTH = 8  # nested mounts (and wrapping middleware) followed at most this deep
_MOUNT_TAIL = "/{path}"  # how a Starlette Mount's path_format ends


def route_template(route: object) -> str | None:
    """The path template of a routing object (``path_format``, else ``path``), or None."""
    for attribute in ("path_format", "path"):
        value = getattr(route, attribute, None)
        if isinstance(value, str) and value.startswith("/"):
            return value
    return None


def _match_name(match: object) -> str:
    # Starlette's Match enum, compared by name so that Starlette need not be imported.
    return str(getattr(match, "name", ""))


def _walk(routes: Sequence[Any], scope: dict[str, Any], prefix: str, depth: int) -> str | None:
    partial: tuple[Any, Mapping[str, Any]] | None = None
    for route in routes:
        matches = getattr(route, "matches", None)
        if not callable(matches):
            continue
        match, child = matches(scope)
        name = _match_name(match)
        if name == "FULL":
            return _resolve(route, scope, child, prefix, depth)
        if name == "PARTIAL" and partial is None:
            partial = (route, child)
    if partial is not None:  # e.g. the path matched but not the method: Starlette's 405
        return _resolve(partial[0], scope, partial[1], prefix, depth)
    return None


def _resolve(
    route: Any, scope: dict[str, Any], child: Mapping[str, Any], prefix: str, depth: int
) -> str | None:
    template = route_template(route)
    sub_routes = getattr(route, "routes", None)
    if sub_routes is not None:  # a Mount or Host: the template is its prefix plus the inner one
        if not sub_routes or depth >= _MAX_DEPTH:
            return None  # a mounted app without routes (static files, another framework)
        mount_prefix = "" if template is None else template.removesuffix(_MOUNT_TAIL)
        inner_scope = {**scope, **child}
        return _walk(list(sub_routes), inner_scope, prefix + mount_prefix, depth + 1)
    return None if template is None else prefix + template


class RouteFinder:
    """Finds the route template of a request once the app has handled it."""

    __slots__ = (
        "_app",
        "_django",
        "_failed",
        "_falcon",
        "_quart",
        "_router",
        "_searched",
        "_unavailable",
    )

    def __init__(self, app: object) -> None:
        self._app = app
        self._router: object | None = None
        self._django = False
        self._quart: object | None = None
        self._falcon: object | None = None
        self._searched = False
        self._failed = False
        self._unavailable = False

    def _search(self) -> None:
        self._searched = True
        for module, name, slot in (
            ("quart.app", "Quart", "_quart"),
            ("falcon.app", "App", "_falcon"),
        ):
            kind = getattr(sys.modules.get(module), name, None)
            found = find_wrapped(self._app, kind) if isinstance(kind, type) else None
            if found is not None:
                setattr(self, slot, found)
                return
        # Follow the ``.app`` chain of wrapping middleware to the object that has the routes.
        handler_type: type | None = None
        django_asgi = sys.modules.get("django.core.handlers.asgi")
        if django_asgi is not None:
            handler_type = getattr(django_asgi, "ASGIHandler", None)
        node: object | None = self._app
        for _ in range(_MAX_DEPTH * 2):
            if node is None:
                break
            if handler_type is not None and isinstance(node, handler_type):
                self._django = True
                return
            routes = getattr(node, "routes", None)
            if isinstance(routes, Sequence) and not isinstance(routes, str):
                self._router = node
                return
            node = getattr(node, "app", None)

    def find(self, scope: Mapping[str, Any], root_path: str, app_path: str) -> str | None:
        """The template of the route that handled ``scope``, or None.

        ``root_path`` is ``scope["root_path"]`` as it was before the app ran (a ``Mount``
        extends it), ``app_path`` the app-relative path. Never raises.
        """
        try:
            return self._find(scope, root_path, app_path)
        except RouteUnavailable as exc:
            # An unknown or future framework version: paths from now on, said once.
            self._unavailable = True
            logger.debug("matomo: %s; using paths as action names", exc)
            return None
        except Exception:
            if not self._failed:
                self._failed = True
                logger.warning(
                    "matomo: could not read the route template; using paths as action names",
                    exc_info=True,
                )
            return None

    def _find(self, scope: Mapping[str, Any], root_path: str, app_path: str) -> str | None:
        if self._unavailable:
            return None
        litestar = litestar_route(scope)
        if litestar is not None:
            return litestar
        if not self._searched:
            self._search()
        if self._quart is not None:
            return _quart_route(self._quart, scope, root_path, app_path)
        if self._falcon is not None:
            return falcon_route(self._falcon, app_path)
        route = scope.get("route")
        template = route_template(route) if route is not None else None
        root_after = scope.get("root_path") or ""
        if not isinstance(root_after, str):
            root_after = root_path
        mounted = root_after != root_path
        if template is not None and not mounted:
            return template
        if self._router is not None:
            routes = getattr(self._router, "routes", None)
            if isinstance(routes, Sequence) and routes:
                probe = {
                    "type": scope.get("type", "http"),
                    "path": scope.get("path", "/"),
                    "root_path": root_path,
                    "method": scope.get("method", "GET"),
                    "headers": scope.get("headers", []),
                    "path_params": {},
                }
                walked = _walk(list(routes), probe, "", 0)
                if walked is not None:
                    return walked
        if template is not None and not template.endswith(_MOUNT_TAIL):
            # Mounted, and the mounts could not be walked: the mount prefix as requested.
            mount = root_after[len(root_path) :] if root_after.startswith(root_path) else ""
            return mount + template
        if self._django:
            return _django_route(app_path)
        return None


def _django_route(path: str) -> str | None:
    from django.conf import settings

    if not settings.configured:
        return None
    from django.urls import Resolver404, resolve

    try:
        match = resolve(path)
    except Resolver404:
        return None
    route = match.route
    if not route:
        return None
    return route if route.startswith("/") else "/" + route


def _quart_route(app: object, scope: Mapping[str, Any], root_path: str, path: str) -> str | None:
    # Quart matches with its werkzeug url_map bound to the request; bind it the same way.
    bind = getattr(getattr(app, "url_map", None), "bind", None)
    if not callable(bind):
        raise RouteUnavailable("the Quart app has no url_map.bind()")
    host = "localhost"
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1").lower()
            break
    adapter = bind(host, script_name=root_path or None, url_scheme=scope.get("scheme", "http"))
    try:
        rule, _ = adapter.match(path, method=scope.get("method", "GET"), return_rule=True)
    except Exception as exc:
        if isinstance(getattr(exc, "code", None), int):
            return None  # werkzeug's NotFound, MethodNotAllowed, RequestRedirect
        raise
    text = getattr(rule, "rule", None)
    if not isinstance(text, str):
        raise RouteUnavailable("the Quart url_map matched a rule without .rule")
    return text if text.startswith("/") else None
