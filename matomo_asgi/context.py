"""Reach the per-request ``TrackingContext`` from Starlette and FastAPI code."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from matomo_tracking.context import TrackingContext

__all__ = ["get_context"]


def get_context(request: HTTPConnection) -> TrackingContext:
    """The ``TrackingContext`` of ``request`` (the same object as ``request.state.matomo``).

    Usable as a FastAPI dependency: ``matomo: TrackingContext = Depends(get_context)``.
    Raises ``LookupError`` when no ``MatomoMiddleware`` wraps the app.
    """
    state = request.scope.get("state")
    context = state.get("matomo") if isinstance(state, dict) else None
    if not isinstance(context, TrackingContext):
        raise LookupError(
            "no Matomo tracking context on this request: wrap the app in "
            "matomo_asgi.MatomoMiddleware (app.add_middleware(MatomoMiddleware, url=...))"
        )
    return context
