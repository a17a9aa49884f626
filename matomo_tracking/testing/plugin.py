"""pytest plugin (registered by the ``matomo`` entry point): fixtures that point a middleware
or tracker at a local collector so tests can assert on the hits an app produces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from matomo_tracking.testing.collector import Collector
from matomo_tracking.testing.server import CollectorServer

__all__ = ["matomo_collector", "matomo_server"]


@pytest.fixture
def matomo_collector() -> Collector:
    """A fresh in-memory collector (site 1); serve it with ``collector.asgi``/``.wsgi``."""
    return Collector()


@pytest.fixture
def matomo_server(matomo_collector: Collector) -> Iterator[CollectorServer]:
    """The ``matomo_collector`` served on 127.0.0.1; pass ``matomo_server.base_url`` as
    ``url=`` and read ``matomo_server.collector.hits``."""
    with CollectorServer(matomo_collector) as server:
        yield server
