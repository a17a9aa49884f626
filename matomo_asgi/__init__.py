"""Matomo tracking for ASGI apps (FastAPI, Starlette, Django ASGI, ...): ``MatomoMiddleware``
tracks every request; ``AsyncioDispatcher`` delivers the hits from the event loop;
``AsyncTracker`` tracks from code outside requests."""

from matomo_asgi.context import get_context
from matomo_asgi.dispatcher import AsyncioDispatcher
from matomo_asgi.middleware import MatomoMiddleware
from matomo_asgi.tracker import AsyncTracker
from matomo_tracking.actions import EcommerceItem
from matomo_tracking.context import TrackingContext
from matomo_tracking.delivery import DispatchStats

__all__ = [
    "AsyncTracker",
    "AsyncioDispatcher",
    "DispatchStats",
    "EcommerceItem",
    "MatomoMiddleware",
    "TrackingContext",
    "get_context",
]
