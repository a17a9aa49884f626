"""Delivery statistics (``DispatchStats``, and ``StatsRecorder``, which counts the events of a
``DeliveryQueue``) and the one-batch policy ``BatchDelivery``: a Celery worker's task asks it
for its next step (send this body, or sleep: Celery's retry countdown), performs it and
reports what happened. Every other executor runs ``delivery_queue.DeliveryQueue``; both judge
answers with ``answers``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from matomo_tracking.answers import (
    Answer,
    TransportError,
    answer_maybe_processed,
    backoff_delay,
    bulk_counts,
    explain_refusal,
    parse_retry_after,
)
from matomo_tracking.config import TrackingConfig
from matomo_tracking.wire import EncodedHit, bulk_body

if TYPE_CHECKING:
    from matomo_tracking.delivery_queue import DeliveryEvent

__all__ = [
    "Answer",
    "BatchDelivery",
    "DispatchStats",
    "Send",
    "Sleep",
    "StatsRecorder",
    "TransportError",
    "backoff_delay",
    "parse_retry_after",
]

logger = logging.getLogger("matomo_tracking.delivery")


@dataclass(frozen=True, slots=True)
class DispatchStats:
    """A snapshot of what a dispatcher did since it started.

    ``sent``: hits in batches Matomo answered with 2xx. ``invalid``: hits Matomo counted as
    invalid. ``unconfirmed``: hits in 2xx answers that did not count them (Matomo skips some
    silently; a queued-tracking Matomo gives no counts). ``retried``: batch resends.
    ``possible_duplicates``: hits resent after Matomo may already have received them (a
    timeout after the body was sent). ``failed``: hits given up on. ``dropped``: hits never
    sent, by reason. ``last_error`` never contains the token.
    """

    queued: int = 0
    sent: int = 0
    invalid: int = 0
    unconfirmed: int = 0
    retried: int = 0
    possible_duplicates: int = 0
    failed: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    batches: int = 0
    last_error: str | None = None

    @property
    def dropped_total(self) -> int:
        """All dropped hits, whatever the reason."""
        return sum(self.dropped.values())


class StatsRecorder:
    """Mutable counters behind ``DispatchStats`` (not thread-safe by itself: dispatchers
    update it from their single worker, or under their own lock)."""

    __slots__ = (
        "_failing",
        "_secret",
        "_unconfirmed_logged",
        "batches",
        "dropped",
        "failed",
        "invalid",
        "last_error",
        "possible_duplicates",
        "queued",
        "retried",
        "sent",
        "unconfirmed",
    )

    def __init__(self, secret: str | None = None) -> None:
        self._secret = secret
        self.queued = 0
        self.sent = 0
        self.invalid = 0
        self.unconfirmed = 0
        self.retried = 0
        self.possible_duplicates = 0
        self.failed = 0
        self.batches = 0
        self.dropped: Counter[str] = Counter()
        self.last_error: str | None = None
        self._failing: str | None = None  # the kind of the error logged last, until a success
        self._unconfirmed_logged = False

    def error(self, message: str, *, kind: str | None = None) -> None:
        """Record an error as ``last_error`` (the token masked if it slipped in) and log it at
        WARNING; an error of the same ``kind`` as the one before it (the same outage, the same
        refusal batch after batch) is logged at DEBUG only, until ``recovered()``."""
        if self._secret:
            message = message.replace(self._secret, "***")
        self.last_error = message
        if kind is not None and kind == self._failing:
            logger.debug("matomo: %s", message)
        else:
            logger.warning("matomo: %s", message)
        self._failing = kind

    def recovered(self, message: str = "Matomo accepts hits again") -> None:
        """A batch went through: the next error is logged at WARNING again, and the end of
        a run of retries or refusals (error kinds ``retry:...``, ``refused:...``) is logged
        at INFO with ``message``."""
        failing, self._failing = self._failing, None
        if failing is not None and failing.startswith(("retry:", "refused:")):
            logger.info("matomo: %s", message)

    def record(self, event: DeliveryEvent) -> None:
        """Count one event of a ``DeliveryQueue`` (the queue's first listener)."""
        kind, count = event.kind, event.count
        if kind == "queued":
            self.queued += count
        elif kind == "sent":
            self.sent += count
            self.batches += 1
        elif kind == "dropped":
            self.dropped[event.reason] += count
        elif kind == "retried":
            self.retried += 1
        elif kind == "possible_duplicate":
            self.possible_duplicates += count
        elif kind == "failed":
            self.failed += count
        elif kind == "invalid":
            self.invalid += count
        elif kind == "unconfirmed":
            self.unconfirmed += count

    def unconfirmed_hits(self, count: int, sent: int) -> None:
        """Count ``count`` of ``sent`` hits that a 2xx answer did not confirm (never resent);
        explained once at INFO, then logged at DEBUG."""
        self.unconfirmed += count
        self.explain_unconfirmed(count, sent)

    def explain_unconfirmed(self, count: int, sent: int) -> None:
        """Log that ``count`` of ``sent`` hits went unconfirmed: once at INFO, then at DEBUG."""
        message = (
            "matomo: Matomo's answer confirmed %d of %d hit(s) (not resent; a Matomo with "
            "QueuedTracking, or a proxy answering for it, gives no counts; see "
            "stats().unconfirmed)"
        )
        if self._unconfirmed_logged:
            logger.debug(message, sent - count, sent)
        else:
            self._unconfirmed_logged = True
            logger.info(message, sent - count, sent)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` hits dropped for ``reason``."""
        self.dropped[reason] += count

    def snapshot(self) -> DispatchStats:
        """An immutable copy of the counters."""
        return DispatchStats(
            queued=self.queued,
            sent=self.sent,
            invalid=self.invalid,
            unconfirmed=self.unconfirmed,
            retried=self.retried,
            possible_duplicates=self.possible_duplicates,
            failed=self.failed,
            dropped=dict(self.dropped),
            batches=self.batches,
            last_error=self.last_error,
        )


@dataclass(frozen=True, slots=True)
class Send:
    """Step: POST ``body`` to the endpoint."""

    body: bytes = field(repr=False)  # it holds token_auth
    count: int


@dataclass(frozen=True, slots=True)
class Sleep:
    """Step: wait ``seconds`` before the next step."""

    seconds: float


class BatchDelivery:
    """Delivers one batch: expiry, sending, classifying answers, retrying, splitting.

    Loop: ``step = d.next_step(now, draw)``; a ``Send`` is POSTed and answered with
    ``d.answered(...)`` or ``d.failed(...)``; a ``Sleep`` is waited; None means done.
    ``abandon(reason)`` gives up what is left (shutdown deadline). A dispatcher that waits
    elsewhere (Celery's retry countdown) calls ``suspend()`` at a ``Sleep`` and ``resume()``
    once the wait is over, possibly in another process.
    """

    __slots__ = (
        "_attempt",
        "_config",
        "_in_flight",
        "_pending",
        "_retry_after",
        "_sleep_due",
        "_stats",
    )

    def __init__(
        self, hits: list[EncodedHit], config: TrackingConfig, stats: StatsRecorder
    ) -> None:
        self._config = config
        self._stats = stats
        self._pending: list[list[EncodedHit]] = [hits] if hits else []
        self._in_flight: list[EncodedHit] | None = None
        self._attempt = 0
        self._retry_after: float | None = None
        self._sleep_due = False

    @classmethod
    def resume(
        cls,
        batches: list[list[EncodedHit]],
        attempt: int,
        config: TrackingConfig,
        stats: StatsRecorder,
    ) -> BatchDelivery:
        """Continue a delivery suspended at a ``Sleep`` (``suspend()``) once the wait is over:
        the first step sends again, and the next backoff follows from ``attempt``."""
        delivery = cls([], config, stats)
        delivery._pending = [list(b) for b in batches if b]
        delivery._attempt = max(0, attempt)
        return delivery

    def suspend(self) -> tuple[list[list[EncodedHit]], int]:
        """Right after a ``Sleep`` step: hand back what is left (in batches, as split so far)
        and the attempt count, for ``resume()`` after the wait; this delivery is then empty."""
        if self._in_flight is not None:
            raise RuntimeError("answer the previous Send first")
        batches, self._pending = self._pending, []
        self._sleep_due = False
        return batches, self._attempt

    @property
    def retry_due(self) -> bool:
        """Whether the last answer (or failure) calls for a resend after a backoff: Matomo
        is down, overloaded or slow."""
        return self._sleep_due

    @property
    def remaining(self) -> int:
        """Hits not yet delivered or given up on."""
        # the batch in flight is the first pending one: count it once
        return sum(len(b) for b in self._pending)

    def next_step(self, now: float, draw: float) -> Send | Sleep | None:
        """What to do next, or None when the batch is finished."""
        if self._in_flight is not None:
            raise RuntimeError("answer the previous Send first")
        if self._sleep_due:
            self._sleep_due = False
            delay = backoff_delay(
                self._attempt - 1,
                base=self._config.backoff_base,
                cap=self._config.backoff_max,
                draw=draw,
                retry_after=self._retry_after,
            )
            return Sleep(delay)
        while self._pending:
            batch = self._expire(self._pending[0], now)
            if not batch:
                self._pending.pop(0)
                continue
            self._pending[0] = batch
            self._in_flight = batch
            return Send(bulk_body(batch, token_auth=self._config.token_auth, now=now), len(batch))
        return None

    def _expire(self, batch: list[EncodedHit], now: float) -> list[EncodedHit]:
        if self._config.token_auth is not None:
            return batch
        limit = self._config.max_hit_age
        fresh = [h for h in batch if now - h.created < limit]
        if len(fresh) != len(batch):
            dropped = len(batch) - len(fresh)
            self._stats.drop("too_old", dropped)
            self._stats.error(
                f"dropped {dropped} hit(s) older than {limit:.0f} s: Matomo refuses hits "
                "older than 24 h without token_auth",
                kind="too_old",
            )
        return fresh

    def _done(self) -> list[EncodedHit]:
        batch = self._in_flight
        if batch is None:
            raise RuntimeError("no Send in flight")
        self._in_flight = None
        self._pending.pop(0)
        return batch

    def _retry(self, reason: str, retry_after: float | None = None, *, kind: str) -> None:
        batch = self._in_flight
        if batch is None:
            raise RuntimeError("no Send in flight")
        self._in_flight = None
        self._attempt += 1
        self._retry_after = retry_after
        self._sleep_due = True
        self._stats.retried += 1
        self._stats.error(
            f"{reason}; retrying {len(batch)} hit(s) (attempt {self._attempt + 1})", kind=kind
        )

    def answered(self, answer: Answer, now: float) -> None:
        """Matomo answered the last ``Send`` with an HTTP status."""
        status = answer.status
        if 200 <= status < 300:
            batch = self._done()
            self._attempt = 0
            self._stats.batches += 1
            self._stats.sent += len(batch)
            tracked, invalid = bulk_counts(answer.body)
            if not invalid:
                self._stats.recovered()
            else:  # batch after batch of invalid hits is logged once
                self._stats.invalid += invalid
                self._stats.error(
                    f"Matomo counted {invalid} of {len(batch)} hit(s) invalid (wrong site id, a "
                    "parameter that needs token_auth, or a malformed value); see Diagnostics > "
                    "Tracking failures in Matomo",
                    kind="invalid",
                )
            confirmed = (tracked or 0) + (invalid or 0)
            if tracked is None or confirmed < len(batch):
                self._stats.unconfirmed_hits(len(batch) - confirmed, len(batch))
            return
        if status in (408, 429) or status >= 500:
            if answer_maybe_processed(status) and self._in_flight is not None:
                # A gateway gave up waiting: Matomo behind it may have recorded the batch.
                self._stats.possible_duplicates += len(self._in_flight)
            self._retry(
                f"Matomo answered HTTP {status}",
                parse_retry_after(answer.retry_after, now),
                kind=f"retry:{status}",
            )
            return
        if status == 413:
            batch = self._done()
            if len(batch) == 1:
                self._stats.drop("too_large")
                self._stats.error(
                    "Matomo refused a single hit as too large (HTTP 413); dropped",
                    kind="too_large",
                )
            else:
                half = len(batch) // 2
                self._pending[0:0] = [batch[:half], batch[half:]]
                self._stats.retried += 1
            return
        batch = self._done()
        self._stats.failed += len(batch)
        self._stats.error(
            explain_refusal(status, answer.location, len(batch)), kind=f"refused:{status}"
        )

    def failed(self, error: TransportError, detail: str, now: float) -> None:
        """The last ``Send`` got no HTTP answer (connection refused, timeout, ...)."""
        batch = self._in_flight
        if batch is None:
            raise RuntimeError("no Send in flight")
        if error.maybe_processed:
            self._stats.possible_duplicates += len(batch)
        self._retry(
            f"could not reach Matomo ({error.value}: {detail})", kind=f"retry:{error.value}"
        )

    def take_remaining(self) -> list[EncodedHit]:
        """Stop and hand back every hit not yet delivered or given up on, in order, uncounted
        (a worker that is torn down requeues them for its successor)."""
        hits = [hit for batch in self._pending for hit in batch]
        self._pending.clear()
        self._in_flight = None
        self._sleep_due = False
        return hits

    def abandon(self, reason: str) -> int:
        """Give up on every hit left (counted as dropped for ``reason``); returns how many."""
        left = self.remaining
        self._pending.clear()
        self._in_flight = None
        self._sleep_due = False  # nothing left to wait for
        if left:
            self._stats.drop(reason, left)
        return left
