"""Matomo tracking for ASGI apps (FastAPI, Starlette, Django ASGI, ...): ``MatomoMiddleware``
tracks every request; ``AsyncioDispatcher`` delivers the hits from the event loop."""

from matomo_asgi.context import get_context
from matomo_asgi.dispatcher import AsyncioDispatcher
from matomo_asgi.middleware import MatomoMiddleware
from matomo_tracking.context import TrackingContext

__all__ = ["AsyncioDispatcher", "MatomoMiddleware", "TrackingContext", "get_context"]
