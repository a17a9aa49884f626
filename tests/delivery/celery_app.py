"""The Celery app of the Celery end-to-end test. The web side (the test) and the worker
(``celery -A tests.delivery.celery_app worker``, configured by ``MATOMO_BROKER`` and
``MATOMO_URL``) both call ``make_app`` with the same options, as the README says."""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from matomo_wsgi.celery import DeliveryTask, register_delivery_task
from tests.sentinel import SENTINEL_TOKEN

#: The delivery options both sides register the task with (short backoff for the test).
OPTIONS: dict[str, Any] = {
    "token_auth": SENTINEL_TOKEN,
    "backoff_base": 0.1,
    "backoff_max": 0.5,
    "timeout": 2.0,
    "batch_max_age": 0.05,
}


def make_app(
    broker: str, matomo_url: str, options: dict[str, Any] | None = None
) -> tuple[Any, DeliveryTask]:
    """A Celery app on ``broker`` with the delivery task registered for ``matomo_url`` with
    ``options`` (default ``OPTIONS``)."""
    app = Celery("matomo-delivery-test", broker=broker)
    app.conf.update(broker_connection_retry_on_startup=True, worker_prefetch_multiplier=16)
    chosen = OPTIONS if options is None else options
    return app, register_delivery_task(app, url=matomo_url, **chosen)


if "MATOMO_BROKER" in os.environ:  # in the worker process (options: MATOMO_OPTIONS, JSON)
    _options = json.loads(os.environ["MATOMO_OPTIONS"]) if "MATOMO_OPTIONS" in os.environ else None
    app, matomo = make_app(os.environ["MATOMO_BROKER"], os.environ["MATOMO_URL"], _options)
