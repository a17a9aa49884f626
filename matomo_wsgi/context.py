"""Reach the per-request ``TrackingContext`` from a WSGI environ, a Flask/Werkzeug request or a
Django request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matomo_tracking.context import TrackingContext
from matomo_tracking.flow import CONTEXT_KEY, context_in

__all__ = ["ENVIRON_KEY", "get_context"]

#: Where the middleware puts the request's ``TrackingContext`` (Flask ``request.environ``,
#: Django ``request.META``), tracked or not.
ENVIRON_KEY = CONTEXT_KEY


def _environ_of(request_or_environ: object) -> Mapping[str, Any]:
    if isinstance(request_or_environ, Mapping):
        return request_or_environ
    # Django's HttpRequest first: its WSGIRequest also has ``environ`` (the same dict), its
    # ASGIRequest only ``META``.
    for attribute in ("META", "environ"):
        value = getattr(request_or_environ, attribute, None)
        if isinstance(value, Mapping):
            return value
    raise TypeError(
        "get_context() expects a WSGI environ, a Flask/Werkzeug request or a Django "
        f"HttpRequest, got {type(request_or_environ).__name__}"
    )


def get_context(request_or_environ: object) -> TrackingContext:
    """The ``TrackingContext`` of the current request: set its action name, user id or
    dimensions, add events and goals, or ``skip()`` it.

    Accepts a WSGI environ, a Flask/Werkzeug request (``flask.request``) or a Django
    ``HttpRequest``. The middleware puts one on every request, tracked or not (what is done to
    the context of an untracked request is discarded); without a Matomo middleware a detached
    context is returned, so handler code never needs a branch.
    """
    return context_in(_environ_of(request_or_environ))
