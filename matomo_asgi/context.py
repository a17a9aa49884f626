"""Reach the per-request ``TrackingContext`` from Starlette and FastAPI code."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from matomo_tracking.context import TrackingContext
from matomo_tracking.flow import context_in

__all__ = ["get_context"]


def get_context(request: HTTPConnection) -> TrackingContext:
    """The ``TrackingContext`` of ``request`` (the same object as ``request.state.matomo``).

    Usable as a FastAPI dependency: ``matomo: TrackingContext = Depends(get_context)``.
    The middleware puts one on every request, tracked or not (what is done to the context of
    an untracked request is discarded); without a Matomo middleware a detached context is
    returned, as on the WSGI side, so handler code never needs a branch.
    """
    return context_in(request.scope.get("state"))
