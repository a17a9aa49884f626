"""The Celery executor in the delivery suite: a real Redis broker and a real Celery worker
(solo pool) per test, both started here, configured like the web side (the same options, the
collector's URL); the web side is a ``CeleryDispatcher`` driven from the test's thread."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from matomo_tracking.config import TrackingConfig
from matomo_tracking.testing import CollectorServer
from matomo_wsgi.celery import CeleryDispatcher
from tests.delivery.celery_app import make_app
from tests.delivery.drivers import Driver
from tests.servers import ServerProcess, free_port, require_command

#: The options the worker is given too (those that shape delivery there).
WORKER_OPTIONS = (
    "token_auth",
    "batch_max_hits",
    "batch_max_bytes",
    "connect_timeout",
    "timeout",
    "backoff_base",
    "backoff_max",
    "max_hit_age",
)


class CeleryWorker(ServerProcess):
    """A Celery worker process; started once it logs that it is ready (it has no port)."""

    def start(self) -> CeleryWorker:
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.startup_timeout
        while " ready." not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Celery worker did not start:\n{self.log()}")
            time.sleep(0.05)
        return self


def start_worker(broker: str, matomo_url: str, options: dict[str, Any]) -> CeleryWorker:
    """A worker for ``broker`` delivering to ``matomo_url`` with ``options``."""
    env = {
        "MATOMO_BROKER": broker,
        "MATOMO_URL": matomo_url,
        "MATOMO_OPTIONS": json.dumps(options),
    }
    args = ["-A", "tests.delivery.celery_app", "worker", "--pool", "solo"]
    args += ["--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    args += ["--without-heartbeat", "--hostname", "matomo-test@%h"]
    return CeleryWorker("celery", args, port=0, env=env).start()


def celery_driver(config: TrackingConfig, matomo: CollectorServer, broker: str) -> Driver:
    """A ``CeleryDispatcher`` whose batches a real worker delivers to the collector; its
    ``stats()`` describe the hand-over to the broker (what Matomo answered is the worker's,
    in ``log()``)."""
    options = {key: getattr(config, key) for key in WORKER_OPTIONS}
    worker = start_worker(broker, matomo.base_url, options)
    app, task = make_app(broker, matomo.base_url, options)

    def stop() -> None:
        worker.__exit__(None, None, None)
        app.close()

    driver = Driver("celery", config, CeleryDispatcher(task, config=config), stop)
    driver.log = worker.log
    return driver


@pytest.fixture
def broker() -> Iterator[str]:
    """A Redis server on a free port of 127.0.0.1, as a Celery broker URL."""
    require_command("redis-server")
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with ServerProcess("redis-server", args, port=port):
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def celery_factory(broker: str) -> Callable[[TrackingConfig, CollectorServer], Driver]:
    """Makes Celery drivers on this test's broker."""

    def factory(config: TrackingConfig, matomo: CollectorServer) -> Driver:
        return celery_driver(config, matomo, broker)

    return factory
