"""Fixtures of the delivery tests: a collector served on 127.0.0.1 (``CollectorServer``) and
both dispatchers behind one synchronous driver, so that every scenario runs against each."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from matomo_tracking.config import TrackingConfig
from matomo_tracking.hits import Hit
from matomo_tracking.testing import CollectorServer
from tests.delivery.celery_driver import broker, celery_factory
from tests.delivery.drivers import Driver, asyncio_driver, thread_driver
from tests.delivery.sender_driver import NOT_FOR_THE_SENDER, SenderDriver

__all__ = ["Driver", "broker", "celery_factory"]  # and fixtures of the Celery executor

#: Small timings, so that outages, retries and deadlines take a second or two.
FAST: dict[str, Any] = {
    "batch_max_age": 0.05,
    "backoff_base": 0.05,
    "backoff_max": 0.4,
    "timeout": 2.0,
    "probe_interval": 0.2,
    "shutdown_timeout": 2.0,
}


def hit(
    n: int,
    *,
    created: float | None = None,
    pad: int = 0,
    site: int = 1,
    visitor: str | None = None,
) -> Hit:
    """Hit ``n``: its URL is unique (``http://shop.test/<n>``), its visitor id ``visitor``
    (default: one of its own); ``pad`` bytes of extra data."""
    params = {"idsite": str(site), "rec": "1", "url": f"http://shop.test/{n}", "ua": "Delivery/1"}
    params["_id"] = visitor if visitor is not None else f"{abs(n) + 1:016x}"
    if pad:
        params["dimension1"] = "x" * pad
    return Hit(params, time.time() if created is None else created)


#: How each executor is made for a test: ``(config, collector) -> Driver``. The journal's
#: external sender adds itself here as ``"sender"`` (and to ``EXECUTORS``).
DRIVERS: dict[str, Callable[[TrackingConfig, CollectorServer], Driver]] = {
    "thread": thread_driver,
    "asyncio": asyncio_driver,
    "sender": SenderDriver,
}
#: The executors every delivery test runs against; tests marked ``celery`` also run against
#: Celery (a real Redis and a real worker, see ``celery_driver.py``).
EXECUTORS = ["thread", "asyncio", "sender"]

Make = Callable[..., Driver]


@pytest.fixture
def matomo() -> Iterator[CollectorServer]:
    """A collector on 127.0.0.1 (site 1, no token)."""
    with CollectorServer() as server:
        yield server


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test taking ``make`` runs once per executor (Celery too where marked)."""
    if "make" in metafunc.fixturenames:
        kinds = list(EXECUTORS)
        if metafunc.definition.get_closest_marker("celery") is not None:
            kinds.append("celery")
        metafunc.parametrize("make", kinds, indirect=True)


@pytest.fixture
def make(request: pytest.FixtureRequest, matomo: CollectorServer) -> Iterator[Make]:
    """``make(**options)``: a driver of the executor under test, configured with ``FAST``
    timings and ``options`` for the ``matomo`` collector; closed after the test."""
    made: list[Driver] = []
    kind = request.param
    if kind == "sender" and request.node.originalname in NOT_FOR_THE_SENDER:
        pytest.skip(NOT_FOR_THE_SENDER[request.node.originalname])
    factory = request.getfixturevalue("celery_factory") if kind == "celery" else DRIVERS[kind]

    def build(**options: Any) -> Driver:
        config = TrackingConfig(**{"url": matomo.base_url, **FAST, **options})
        driver = factory(config, matomo)
        made.append(driver)
        return driver

    yield build
    for driver in made:
        driver.close(0.5)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
