"""The pure core of matomo-middleware: request and response views in, Matomo Tracking API hits
and bulk bodies out, plus the delivery policy every dispatcher executes.

No network, threads, asyncio, clock or random reads: time and randomness are passed in.
"""

from matomo_tracking._version import __version__ as __version__
from matomo_tracking.actions import EcommerceItem
from matomo_tracking.bots import BotInfo, classify_user_agent, is_ai_bot, is_bot
from matomo_tracking.config import DEFAULT_REDACTED_QUERY_PARAMS, TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.delivery import (
    Answer,
    BatchDelivery,
    DispatchStats,
    Send,
    Sleep,
    StatsRecorder,
    TransportError,
)
from matomo_tracking.delivery_queue import DeliveryEvent, DeliveryQueue
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.hits import Hit, HitBuilder, RandomSource
from matomo_tracking.proxies import Origin, TrustedProxies
from matomo_tracking.request import RequestView, ResponseView, request_from_asgi, request_from_wsgi
from matomo_tracking.snippet import tracking_code, tracking_code_for
from matomo_tracking.wire import EncodedHit, bulk_body, encode_hit

__all__ = [
    "DEFAULT_REDACTED_QUERY_PARAMS",
    "Answer",
    "BatchDelivery",
    "BotInfo",
    "DeliveryEvent",
    "DeliveryQueue",
    "DispatchStats",
    "Dispatcher",
    "EcommerceItem",
    "EncodedHit",
    "Hit",
    "HitBuilder",
    "Origin",
    "RandomSource",
    "RequestView",
    "ResponseView",
    "Send",
    "Sleep",
    "StatsRecorder",
    "TrackingConfig",
    "TrackingContext",
    "TransportError",
    "TrustedProxies",
    "bulk_body",
    "classify_user_agent",
    "encode_hit",
    "is_ai_bot",
    "is_bot",
    "request_from_asgi",
    "request_from_wsgi",
    "tracking_code",
    "tracking_code_for",
]
