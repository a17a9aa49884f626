"""Test kit: a Matomo-compatible collector (ASGI and WSGI callables), a threaded server for it,
and a pytest plugin (fixtures ``matomo_collector`` and ``matomo_server``)."""

from matomo_tracking.testing.collector import Collector, ReceivedHit
from matomo_tracking.testing.server import CollectorServer

__all__ = ["Collector", "CollectorServer", "ReceivedHit"]
