"""The Celery task's side of delivery, in a worker process: the batches a task was given are
delivered with the core's one-batch policy (``BatchDelivery``) until they are finished or the
policy says to wait, and then handed back to Celery (its retry countdown) with what is left.
What travels through the broker is packed here: hits and their creation times, never the
token (each process reads its own from its configuration)."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from matomo_tracking.answers import Answer
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import BatchDelivery, Sleep, StatsRecorder
from matomo_tracking.wire import EncodedHit
from matomo_wsgi.dispatcher import HttpPoster, poster_for
from matomo_wsgi.poster import LeanPoster

__all__ = ["PackedBatch", "WorkerState", "pack_batches", "unpack_batches"]

logger = logging.getLogger("matomo_wsgi.celery")

#: A batch as it travels in a Celery message: ``[hit JSON object as text, creation time]``.
PackedBatch = list[list[Any]]


def pack_batches(batches: Sequence[Sequence[EncodedHit]]) -> list[PackedBatch]:
    """Batches of encoded hits as JSON-serialisable task arguments: each hit's JSON object
    (valid UTF-8, so text) and when it happened. Nothing else, never the token."""
    return [[[hit.data.decode("utf-8"), hit.created] for hit in batch] for batch in batches]


def unpack_batches(packed: object) -> list[list[EncodedHit]]:
    """The inverse of ``pack_batches``; raises ``ValueError`` on anything else."""
    if not isinstance(packed, list):
        raise ValueError("expected a list of batches")
    batches: list[list[EncodedHit]] = []
    for batch in packed:
        if not isinstance(batch, list):
            raise ValueError("expected a batch to be a list of hits")
        hits = []
        for item in batch:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise ValueError("expected a hit as [json text, created]")
            data, created = item
            if not isinstance(data, str) or isinstance(created, bool):
                raise ValueError("expected a hit as [json text, created]")
            if not isinstance(created, int | float):
                raise ValueError("expected a hit as [json text, created]")
            hits.append(EncodedHit(data.encode("utf-8"), float(created)))
        batches.append(hits)
    return batches


class WorkerState:
    """What the task keeps per worker process: the poster (its clients made again after a
    fork), the statistics and the random source for the backoff's jitter."""

    def __init__(self, config: TrackingConfig, http_client: httpx.Client | None) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.stats = StatsRecorder(secret=config.token_auth)
        self.rng = random.Random()
        self._poster = poster_for(config, http_client)
        self._pid = os.getpid()

    def poster(self) -> LeanPoster | HttpPoster:
        """The poster of this process (made again in a forked child)."""
        with self.lock:
            if self._pid != os.getpid():  # clients inherited over a fork: new ones
                self._pid = os.getpid()
                self._poster.reset()
            return self._poster

    def deliver(self, packed: object, attempt: int) -> tuple[object, int, float] | None:
        """Run the policy until the batches are finished (None) or a wait is due: then what
        is left, packed, the attempt count and the seconds to wait."""
        config, lock, stats = self.config, self.lock, self.stats
        try:
            batches = unpack_batches(packed)
        except ValueError as exc:
            with lock:
                stats.drop("error")
                stats.error(f"a delivery task had malformed arguments ({exc}); dropped")
            return None
        with lock:
            delivery = BatchDelivery.resume(batches, attempt, config, stats)
        try:
            while True:
                with lock:
                    step = delivery.next_step(time.time(), self.rng.random())
                if step is None:
                    return None
                if isinstance(step, Sleep):
                    with lock:
                        left, tries = delivery.suspend()
                    return pack_batches(left), tries, step.seconds
                result = self.poster().post_body(step.body, config.timeout)
                with lock:
                    if isinstance(result, Answer):
                        delivery.answered(result, time.time())
                    else:
                        delivery.failed(result[0], result[1], time.time())
        except Exception:
            logger.warning("matomo: delivering a batch failed", exc_info=True)
            with lock:
                delivery.abandon("error")
            return None
