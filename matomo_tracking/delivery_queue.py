"""The delivery engine every executor runs, without I/O: one ``DeliveryQueue`` admits hits
within the caps, keeps them in lanes by visitor, hands out the next batch, takes a batch back
to retry, settles it, keeps flush targets and the shutdown deadline, and emits every outcome
as a ``DeliveryEvent`` (``stats()`` and the metrics listen to them).

An executor (asyncio task, threads, Celery hand-over, the sender process) only waits, POSTs
and reports, under its own lock::

    step = queue.next_step(now, draw)
    if isinstance(step, Batch):     # POST step.body (timeouts: step.timeout, connect_timeout)
        queue.answered(step, answer, now)   # or queue.failed(step, error, detail, now)
    else:                           # Wait: step.seconds, or until woken (None)
        ...

and wakes its loop when ``admit`` says ``Admission.WAKE``, after each report, and after
``flush_target``/``close``. Time (``now``: Unix seconds) and randomness (``draw`` in [0, 1))
are passed in.

Concurrency, one rule for all: a hit goes to the lane of its visitor (``EncodedHit.visitor``
modulo the lane count), and a lane has one batch in flight at most, so a visitor's hits
arrive in order. While the queue is shallow one batch goes at a time (a partial batch once
its oldest hit is ``batch_max_age`` old); while a backlog waits, each good answer allows one
more batch in flight, up to ``max_concurrent_batches``; after a failure, while a batch goes
unanswered for long (a hanging Matomo), or once the backlog is gone, one again. While Matomo
fails, the backlog is resent after a capped backoff, and a one-hit probe goes every
``probe_interval`` (``Retry-After`` honoured) so that Matomo's return is seen within seconds.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final, Literal

from matomo_tracking.answers import (
    Answer,
    TransportError,
    Verdict,
    answer_maybe_processed,
    backoff_delay,
    bulk_counts,
    explain_refusal,
    judge,
    parse_retry_after,
)
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats, StatsRecorder
from matomo_tracking.wire import EncodedHit, bulk_body

__all__ = [
    "HANDED_OVER",
    "Admission",
    "Batch",
    "DeliveryEvent",
    "DeliveryQueue",
    "EventKind",
    "Listener",
    "Outcome",
    "Wait",
]

logger = logging.getLogger("matomo_tracking.delivery")

#: Seconds between two warnings of one kind (queue full, Matomo cannot keep up).
WARN_INTERVAL = 60.0
#: Seconds over which the ingestion and delivery rates are compared.
PACE_WINDOW = 10.0
#: A batch unanswered for this many times the usual round trip (at least ``STALL_FLOOR``
#: seconds) means Matomo does not answer: no further batch until it does.
STALL_FACTOR = 4.0
STALL_FLOOR = 1.0


def _created(hit: EncodedHit) -> float:
    return hit.created


class EventKind:
    """The kinds of ``DeliveryEvent`` (plain strings, so listeners may compare with ``==``)."""

    QUEUED = "queued"  # count hits admitted
    SENT = "sent"  # count hits in a batch Matomo answered with 2xx
    INVALID = "invalid"  # count hits Matomo counted invalid
    UNCONFIRMED = "unconfirmed"  # count hits a 2xx answer did not count (never resent)
    RETRIED = "retried"  # one batch goes back to its lanes for a resend (count: its hits)
    POSSIBLE_DUPLICATE = "possible_duplicate"  # count hits Matomo may have recorded already
    FAILED = "failed"  # count hits Matomo refused for good
    DROPPED = "dropped"  # count hits never delivered, ``reason`` says why
    ROUND_TRIP = "round_trip"  # one POST ended: ``status`` (0: no answer), ``seconds``


# Not frozen (treat it as immutable): one is made per hit admitted, and a frozen dataclass's
# __init__ costs three times as much (bench/micro.py ``tricks``: "per-hit dataclass").
@dataclass(slots=True, unsafe_hash=True)
class DeliveryEvent:
    """One outcome of delivery. ``count``: hits concerned; ``reason``: why hits were dropped
    (``queue_full``, ``closed``, ``shutdown``, ``too_old``, ``too_large``, ``error``...);
    ``status`` and ``seconds``: the HTTP status (0: none) and duration of a round trip;
    ``hits``: the hits concerned, where the queue holds them (queued, settled, retried; a
    journal keeps its rows in step with these); ``in_flight``: dropped while Matomo may be
    processing them (a later delivery counts them as possible duplicates). Listeners share
    it: treat it as immutable."""

    kind: str
    count: int = 1
    reason: str = ""
    status: int = 0
    seconds: float = 0.0
    hits: Sequence[EncodedHit] = field(default=(), repr=False)
    in_flight: bool = False


#: The outcome of a hand-over that delivers for good (a Celery broker took the batch).
HANDED_OVER: Final = "handed over"

#: How a batch ended, as an executor reports it (``DeliveryQueue.report``).
Outcome = Answer | tuple[TransportError, str] | Literal["handed over"]

#: A subscriber to a queue's events: called under the executor's lock, it must be quick and
#: must not call the queue back.
Listener = Callable[[DeliveryEvent], None]


class Admission(IntEnum):
    """What ``admit`` did: false when the hit was dropped (counted)."""

    DROPPED = 0
    QUEUED = 1
    WAKE = 2  # queued, and the executor's loop should look again (``next_step``)


@dataclass(frozen=True, slots=True)
class Wait:
    """Step: nothing to send now; ask again after ``seconds``, or when woken (None)."""

    seconds: float | None


@dataclass(eq=False, slots=True)
class Batch:
    """Step: POST ``body`` (``count`` hits) with a read timeout of ``timeout`` seconds, and
    report the outcome with ``answered`` or ``failed``. ``probe``: a one-hit probe of a
    failing Matomo. The hits stay the queue's until the batch is reported."""

    body: bytes = field(repr=False)  # it holds token_auth
    count: int
    timeout: float
    probe: bool
    started: float
    hits: list[EncodedHit] = field(repr=False)
    lanes: tuple[int, ...]
    abandoned: bool = False


class DeliveryQueue:
    """The one place that decides and counts delivery (see the module's docstring).

    Not thread-safe: an executor calls it under one lock. ``listeners``: callables taking
    each ``DeliveryEvent`` (the statistics behind ``stats()`` are the first).
    ``lanes``: how many lanes (default ``max_concurrent_batches``); ``concurrency``: batches
    in flight at the most (default ``max_concurrent_batches``; a hand-over to one broker
    connection wants 1); ``target``: what batches go to, in log lines; ``listeners_of``: a
    queue whose listeners (besides its statistics) this one keeps (``keep_listeners``).
    """

    def __init__(
        self,
        config: TrackingConfig,
        *,
        lanes: int | None = None,
        concurrency: int | None = None,
        target: str = "Matomo",
        listeners_of: DeliveryQueue | None = None,
    ) -> None:
        self.config = config
        self._target = target
        self._limit = max(1, config.max_concurrent_batches if concurrency is None else concurrency)
        count = max(1, config.max_concurrent_batches if lanes is None else lanes)
        self._lanes: list[deque[EncodedHit]] = [deque() for _ in range(count)]
        self._busy = [False] * count
        self._recorder = StatsRecorder(secret=config.token_auth)
        self.listeners: list[Listener] = [self._recorder.record]
        if listeners_of is not None:  # a forked child's fresh queue keeps the parent's metrics
            self.keep_listeners(listeners_of)
        #: Where hits beyond the memory caps go instead of being dropped (None: dropped).
        self.overflow: list[EncodedHit] | None = None
        #: Whether admitted hits may go into memory; False (a journal holds a backlog that
        #: must go first, or the app only writes the journal): every one goes to ``overflow``.
        self.hold = True
        # what waits (in lanes) and what is held (waiting or in flight), against the caps
        self._waiting = 0
        self._waiting_bytes = 0
        self._held = 0
        self._held_bytes = 0
        self._since = 0.0  # when the lanes last went from empty to not
        self.admitted = 0  # hits ever queued
        self.finished = 0  # of those, settled, refused or dropped
        self._flush_target = 0
        self._in_flight: list[Batch] = []
        self._allowed = 1
        self._rtt: float | None = None  # smoothed round trip of answered batches
        # failing Matomo: attempts so far, when the last failure came, when the backlog and
        # the probe may go, and Retry-After's floor
        self._attempt = 0
        self._failed_at: float | None = None
        self._retry_at: float | None = None
        self._probe_at = 0.0
        self._retry_after: float | None = None
        self._split: int | None = None  # a 413 halved the batch size until a success
        self._closed = False
        self._closing: int | None = None  # shutdown drops before close()
        self._deadline: float | None = None
        self._full_warned: float | None = None
        self._pace_warned: float | None = None
        self._pace_mark: tuple[float, int, int, int] | None = None  # time, admitted, sent, waiting

    # -- admitting ---------------------------------------------------------------------------
    def keep_listeners(self, previous: DeliveryQueue) -> None:
        """Subscribe to this queue the listeners ``previous`` had besides its own statistics:
        a forked child's fresh queue keeps the metrics attached in the parent (gunicorn
        ``--preload``), while its counts start again from nothing."""
        own = previous._recorder.record
        self.listeners.extend(listener for listener in previous.listeners if listener != own)

    def admit(self, hit: EncodedHit, now: float) -> Admission:
        """Queue ``hit`` within ``queue_max_hits`` and ``queue_max_bytes`` (hits in flight
        count until they are settled); a drop (``queue_full``, ``closed``) is counted. With
        ``overflow`` set (a journal keeps what memory cannot), a hit beyond the caps is
        admitted into that list instead (event ``queued``, reason ``overflow``)."""
        if self._closed:
            self._emit(DeliveryEvent(EventKind.DROPPED, 1, "closed", hits=(hit,)))
            return Admission.DROPPED
        if not (self.hold and self._fits(hit.size)):
            if self.overflow is None:
                self._emit(DeliveryEvent(EventKind.DROPPED, 1, "queue_full", hits=(hit,)))
                self._warn_full(now)
                return Admission.DROPPED
            self.overflow.append(hit)
            self.admitted += 1
            self._emit(DeliveryEvent(EventKind.QUEUED, 1, "overflow", hits=(hit,)))
            return Admission.QUEUED
        self.admitted += 1
        self._emit(DeliveryEvent(EventKind.QUEUED, 1, hits=(hit,)))
        return self._hold(hit, now)

    def restore(self, hits: Sequence[EncodedHit], now: float, *, new: bool) -> int:
        """Put hits kept elsewhere (a journal's rows) into the lanes, as room allows; returns
        how many were taken (the first ones). ``new``: hits this queue never admitted (rows
        of another process), counted as ``queued`` with reason ``restored``; else hits that
        went to ``overflow`` before, counted then."""
        taken = 0
        for hit in hits:
            if not self._fits(hit.size):
                break
            if new:
                self.admitted += 1
                self._emit(DeliveryEvent(EventKind.QUEUED, 1, "restored", hits=(hit,)))
            self._hold(hit, now)
            taken += 1
        return taken

    def hand_over(self, hits: Sequence[EncodedHit], reason: str = "") -> None:
        """Hits admitted into ``overflow`` left this queue for good: written to a journal that
        another process delivers (``reason`` empty), or lost (dropped for ``reason``: the
        journal full or failing)."""
        self.finished += len(hits)
        if reason and hits:
            self._emit(DeliveryEvent(EventKind.DROPPED, len(hits), reason, hits=hits))

    def _fits(self, size: int) -> bool:
        config = self.config
        return (
            self._held < config.queue_max_hits and self._held_bytes + size <= config.queue_max_bytes
        )

    def _hold(self, hit: EncodedHit, now: float) -> Admission:
        config = self.config
        size = hit.size
        self._held += 1
        self._held_bytes += size
        before = self._waiting_bytes
        self._waiting += 1
        self._waiting_bytes += size
        self._lanes[hit.visitor % len(self._lanes)].append(hit)
        waiting = self._waiting
        if waiting == 1:
            self._since = now
        if (
            waiting == 1
            or waiting == config.batch_max_hits
            or before < config.batch_max_bytes <= self._waiting_bytes
            or self.urgent
        ):
            return Admission.WAKE
        return Admission.QUEUED

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` hits the executor could not even offer (``error``...)."""
        self._emit(DeliveryEvent(EventKind.DROPPED, count, reason))

    def _warn_full(self, now: float) -> None:
        if self._full_warned is None or now - self._full_warned >= WARN_INTERVAL:
            self._full_warned = now
            logger.warning(
                "matomo: queue full (%d hits, %d bytes held); dropping new hits until Matomo "
                "catches up (see stats().dropped['queue_full'])",
                self._held,
                self._held_bytes,
            )

    # -- the executor's loop -----------------------------------------------------------------
    @property
    def urgent(self) -> bool:
        """Whether partial batches go at once (a flush, a close, ``sync_mode``)."""
        return self._closed or self.config.sync_mode or self._flush_target > self.finished

    def next_step(self, now: float, draw: float) -> Batch | Wait:
        """The next batch to POST, or how long to wait before asking again (never past the
        close deadline, when everything left is given up)."""
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            self.give_up("shutdown")
            return Wait(None)
        step = self._next(now, draw)
        if (
            deadline is not None
            and isinstance(step, Wait)
            and self._held
            and (step.seconds is None or now + step.seconds > deadline)
        ):
            return Wait(deadline - now)
        return step

    def _next(self, now: float, draw: float) -> Batch | Wait:
        if not self._waiting:
            return Wait(None)
        self._check_pace(now)
        if self._failed_at is not None:
            return self._next_while_failing(now, draw)
        if self._in_flight and self._stalled(now):
            self._allowed = 1
        if len(self._in_flight) >= min(self._allowed, self._limit):
            return Wait(None)
        config = self.config
        full = self._fills_a_batch()
        if full is None:
            return Wait(None)
        if not (full or self.urgent):
            if self._in_flight:
                return Wait(None)
            delay = config.batch_max_age - (now - max(self._oldest(), self._since))
            if delay > 0:
                return Wait(delay)
        return self._cut(now, self._max_hits(), probe=False) or Wait(None)

    def _next_while_failing(self, now: float, draw: float) -> Batch | Wait:
        if self._in_flight:
            return Wait(None)  # one request at a time to a failing Matomo
        if self._retry_at is None and self._failed_at is not None:
            delay = backoff_delay(
                self._attempt - 1,
                base=self.config.backoff_base,
                cap=self.config.backoff_max,
                draw=draw,
                retry_after=self._retry_after,
            )
            self._retry_at = self._failed_at + delay
        retry_at = self._retry_at if self._retry_at is not None else now
        due = min(retry_at, self._probe_at)
        if self._deadline is not None and due >= self._deadline:
            self.give_up("shutdown")  # nothing may go again before the deadline
            return Wait(None)
        if now >= retry_at:
            return self._cut(now, self._max_hits(), probe=False) or Wait(None)
        if now >= self._probe_at:
            return self._cut(now, 1, probe=True) or Wait(None)
        return Wait(due - now)

    def _max_hits(self) -> int:
        limit = self.config.batch_max_hits
        return limit if self._split is None else min(limit, self._split)

    def _fills_a_batch(self) -> bool | None:
        """Whether the hits waiting in free lanes fill a batch (None: there are none)."""
        free = [
            lane for lane, busy in zip(self._lanes, self._busy, strict=True) if lane and not busy
        ]
        if not free:
            return None
        hits = sum(len(lane) for lane in free)
        if hits >= self._max_hits():
            return True
        return sum(h.size for lane in free for h in lane) >= self.config.batch_max_bytes

    def _oldest(self) -> float:
        return min(lane[0].created for lane in self._lanes if lane)

    def _stalled(self, now: float) -> bool:
        limit = STALL_FLOOR if self._rtt is None else max(STALL_FLOOR, STALL_FACTOR * self._rtt)
        return any(now - batch.started > limit for batch in self._in_flight)

    def _cut(self, now: float, max_hits: int, *, probe: bool) -> Batch | None:
        """Take a batch off the free lanes, oldest first (whole runs of a lane, so few lanes
        are tied up): at most ``max_hits`` hits and ``batch_max_bytes`` bytes."""
        config = self.config
        order = sorted(
            (lane[0].created, index)
            for index, lane in enumerate(self._lanes)
            if lane and not self._busy[index]
        )
        hits: list[EncodedHit] = []
        slices: list[list[EncodedHit]] = []
        lanes: list[int] = []
        size = 0
        for _, index in order:
            lane = self._lanes[index]
            taken, taken_size = self._take(
                lane, max_hits - len(hits), config.batch_max_bytes - size, not hits
            )
            if taken:
                lanes.append(index)
                self._busy[index] = True
                hits += taken
                slices.append(taken)
                size += taken_size
            if len(hits) >= max_hits or size >= config.batch_max_bytes:
                break
        if len(slices) > 1:  # in the order they came, each lane's in its own order
            hits = list(heapq.merge(*slices, key=_created))
        self._waiting -= len(hits)
        self._waiting_bytes -= size
        hits = self._expire(hits, size, now)
        if not hits:
            for index in lanes:
                self._busy[index] = False
            return None
        timeout = config.timeout
        if self._deadline is not None:
            timeout = max(0.05, min(timeout, self._deadline - now))
        body = bulk_body(hits, token_auth=config.token_auth, now=now)
        batch = Batch(body, len(hits), timeout, probe, now, hits, tuple(lanes))
        self._in_flight.append(batch)
        return batch

    @staticmethod
    def _take(
        lane: deque[EncodedHit], room: int, room_bytes: int, first: bool
    ) -> tuple[list[EncodedHit], int]:
        """The front of ``lane`` that fits, and its size; a request's hits (one creation
        time) are not split between two batches unless they fill a batch on their own."""
        taken: list[EncodedHit] = []
        size = 0
        while lane and len(taken) < room:
            hit_size = lane[0].size
            if (taken or not first) and size + hit_size > room_bytes:
                break
            taken.append(lane.popleft())
            size += hit_size
        if lane and taken and lane[0].created == taken[-1].created:
            start = len(taken) - 1
            while start > 0 and taken[start - 1].created == taken[-1].created:
                start -= 1
            if start > 0 or not first:
                lane.extendleft(reversed(taken[start:]))
                size -= sum(h.size for h in taken[start:])
                del taken[start:]
        return taken, size

    def _expire(self, hits: list[EncodedHit], size: int, now: float) -> list[EncodedHit]:
        if self.config.token_auth is not None:
            return hits
        limit = self.config.max_hit_age
        fresh = [h for h in hits if now - h.created < limit]
        if len(fresh) != len(hits):
            old = [h for h in hits if now - h.created >= limit]
            self._settle(old, EventKind.DROPPED, "too_old")
            self._recorder.error(
                f"dropped {len(old)} hit(s) older than {limit:.0f} s: Matomo refuses hits "
                "older than 24 h without token_auth",
                kind="too_old",
            )
        return fresh

    # -- reports -----------------------------------------------------------------------------
    def answered(self, batch: Batch, answer: Answer, now: float) -> None:
        """Matomo answered ``batch`` with an HTTP status."""
        if not self._land(batch, answer.status, now):
            return
        verdict = judge(answer.status)
        if verdict is Verdict.SETTLED:
            self._settled(batch, answer.body, now)
        elif verdict is Verdict.RETRY:
            if answer_maybe_processed(answer.status):
                self._emit(
                    DeliveryEvent(EventKind.POSSIBLE_DUPLICATE, batch.count, hits=batch.hits)
                )
            self._retry(
                batch,
                f"Matomo answered HTTP {answer.status}",
                parse_retry_after(answer.retry_after, now),
                now,
                kind=f"retry:{answer.status}",
            )
        elif verdict is Verdict.SPLIT and batch.count > 1:
            self._split = max(1, batch.count // 2)
            self._requeue(batch)
            self._emit(DeliveryEvent(EventKind.RETRIED, batch.count, hits=batch.hits))
        elif verdict is Verdict.SPLIT:
            self._settle(batch.hits, EventKind.DROPPED, "too_large")
            self._recorder.error(
                "Matomo refused a single hit as too large (HTTP 413); dropped", kind="too_large"
            )
        else:
            self._settle(batch.hits, EventKind.FAILED)
            self._recorder.error(
                explain_refusal(answer.status, answer.location, batch.count),
                kind=f"refused:{answer.status}",
            )

    def failed(self, batch: Batch, error: TransportError, detail: str, now: float) -> None:
        """``batch`` got no HTTP answer (connection refused, timeout, answer cut...)."""
        if not self._land(batch, 0, now):
            return
        if error.maybe_processed:
            self._emit(DeliveryEvent(EventKind.POSSIBLE_DUPLICATE, batch.count, hits=batch.hits))
        self._retry(
            batch,
            f"could not reach {self._target} ({error.value}: {detail})",
            None,
            now,
            kind=f"retry:{error.value}",
        )

    def delivered(self, batch: Batch, now: float) -> None:
        """``batch`` was handed over for good to something that delivers it (a broker)."""
        if self._land(batch, 0, now):
            self._settle(batch.hits, EventKind.SENT)
            self._recorder.recovered(f"{self._target} accepts batches again")
            self._recovered()

    def report(self, batch: Batch, outcome: Outcome, now: float) -> None:
        """Report how ``batch`` ended, whatever the executor: an ``Answer``, a transport
        failure ``(TransportError, detail)``, or ``HANDED_OVER``."""
        if isinstance(outcome, Answer):
            self.answered(batch, outcome, now)
        elif isinstance(outcome, str):  # HANDED_OVER
            self.delivered(batch, now)
        else:
            self.failed(batch, outcome[0], outcome[1], now)

    def give_back(self, batch: Batch) -> None:
        """The executor could not finish ``batch`` (its loop is torn down): its hits go back
        to the front of their lanes, uncounted, for the next loop."""
        if batch in self._in_flight:
            self._in_flight.remove(batch)
            self._requeue(batch)

    def _land(self, batch: Batch, status: int, now: float) -> bool:
        if batch not in self._in_flight:
            if not batch.abandoned:
                raise RuntimeError("this batch is not in flight")
            return False  # given up at the deadline: counted then
        self._in_flight.remove(batch)
        for index in batch.lanes:
            self._busy[index] = False
        self._emit(
            DeliveryEvent(
                EventKind.ROUND_TRIP, batch.count, status=status, seconds=now - batch.started
            )
        )
        return True

    def _settled(self, batch: Batch, body: bytes, now: float) -> None:
        count = batch.count
        self._settle(batch.hits, EventKind.SENT)
        tracked, invalid = bulk_counts(body)
        if invalid:
            self._emit(DeliveryEvent(EventKind.INVALID, invalid))
            self._recorder.error(
                f"Matomo counted {invalid} of {count} hit(s) invalid (wrong site id, a parameter "
                "that needs token_auth, or a malformed value); see Diagnostics > Tracking "
                "failures in Matomo",
                kind="invalid",
            )
        else:
            self._recorder.recovered()
        confirmed = (tracked or 0) + invalid
        if tracked is None or confirmed < count:
            self._emit(DeliveryEvent(EventKind.UNCONFIRMED, count - confirmed))
            self._recorder.explain_unconfirmed(count - confirmed, count)
        seconds = now - batch.started
        self._rtt = seconds if self._rtt is None else 0.8 * self._rtt + 0.2 * seconds
        if self._split is not None:  # a 413 halved the size: grow back one answer at a time
            grown = self._split * 2
            self._split = None if grown >= self.config.batch_max_hits else grown
        self._recovered()

    def _recovered(self) -> None:
        if self._failed_at is not None:
            self._failed_at = self._retry_at = self._retry_after = None
            self._attempt = 0
            self._allowed = 1
            return
        # lanes are added while a backlog waits; without one, one batch at a time again
        backlog = (
            self._waiting >= self._max_hits() or self._waiting_bytes >= self.config.batch_max_bytes
        )
        self._allowed = min(self._limit, self._allowed + 1) if backlog else 1

    def _retry(
        self, batch: Batch, reason: str, retry_after: float | None, now: float, *, kind: str
    ) -> None:
        self._requeue(batch)
        self._emit(DeliveryEvent(EventKind.RETRIED, batch.count, hits=batch.hits))
        if not batch.probe or self._failed_at is None:
            self._attempt += 1
            self._retry_at = None  # drawn at the next step, from the failure's time
            self._failed_at = now
        self._retry_after = retry_after
        self._allowed = 1
        probe = self.config.probe_interval
        self._probe_at = now + max(probe, retry_after or 0.0)
        if self._retry_at is not None and retry_after is not None:
            self._retry_at = max(self._retry_at, now + min(retry_after, self.config.backoff_max))
        what = "probe hit" if batch.probe else f"{batch.count} hit(s)"
        self._recorder.error(f"{reason}; retrying {what} (attempt {self._attempt + 1})", kind=kind)

    def _requeue(self, batch: Batch) -> None:
        """Put a batch's hits back at the front of their lanes, in order."""
        for index in batch.lanes:
            self._busy[index] = False
        width = len(self._lanes)
        for hit in reversed(batch.hits):
            self._lanes[hit.visitor % width].appendleft(hit)
        if not self._waiting:
            self._since = min(h.created for h in batch.hits)
        self._waiting += batch.count
        self._waiting_bytes += sum(h.size for h in batch.hits)

    def _settle(
        self, hits: list[EncodedHit], kind: str, reason: str = "", *, in_flight: bool = False
    ) -> None:
        count = len(hits)
        if not count:
            return
        self._held -= count
        self._held_bytes -= sum(h.size for h in hits)
        self.finished += count
        self._emit(DeliveryEvent(kind, count, reason, hits=hits, in_flight=in_flight))

    def _emit(self, event: DeliveryEvent) -> None:
        for listener in self.listeners:
            listener(event)

    # -- flushing, closing, giving up --------------------------------------------------------
    def flush_target(self) -> int:
        """Everything admitted so far goes out at once; returns the target for ``flushed``."""
        self._flush_target = max(self._flush_target, self.admitted)
        return self.admitted

    def flushed(self, target: int) -> bool:
        """Whether ``target`` hits (``flush_target()``) are settled or given up on."""
        return self.finished >= target

    def close(self, deadline: float) -> int:
        """Refuse new hits (``closed``); what is held goes out at once until ``deadline``,
        when ``next_step`` gives up on what is left (``shutdown``). Returns the flush target."""
        if not self._closed:
            self._closed = True
            self._closing = self._recorder.dropped["shutdown"]
        self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
        return self.flush_target()

    def finish_close(self) -> bool:
        """After ``close``: give up what is left (``shutdown``), log how many hits the close
        left undelivered, and say whether there were none."""
        self.give_up("shutdown")
        before = self._recorder.dropped["shutdown"] if self._closing is None else self._closing
        lost = self._recorder.dropped["shutdown"] - before
        if lost:
            logger.warning("matomo: closed with %d hit(s) undelivered (dropped)", lost)
        return lost == 0

    def reopen(self) -> None:
        """Accept hits again after ``close`` (an executor started again)."""
        self._closed = False
        self._closing = None
        self._deadline = None

    @property
    def closed(self) -> bool:
        """Whether new hits are refused."""
        return self._closed

    def give_up(self, reason: str) -> int:
        """Drop every hit held, waiting or in flight (counted as ``reason``); batches in
        flight are abandoned (their reports are ignored). Returns how many hits."""
        left: list[EncodedHit] = [hit for lane in self._lanes for hit in lane]
        for lane in self._lanes:
            lane.clear()
        sent: list[EncodedHit] = []
        for batch in self._in_flight:
            batch.abandoned = True
            sent += batch.hits
        self._in_flight.clear()
        self._busy = [False] * len(self._lanes)
        self._waiting = self._waiting_bytes = 0
        self._settle(left, EventKind.DROPPED, reason)  # the executor logs the summary
        self._settle(sent, EventKind.DROPPED, reason, in_flight=True)
        return len(left) + len(sent)

    def take_waiting(self) -> list[EncodedHit]:
        """Hand over every waiting hit (oldest first), uncounted and no longer held (a
        Celery worker hands them back to the broker)."""
        hits = sorted((hit for lane in self._lanes for hit in lane), key=lambda h: h.created)
        for lane in self._lanes:
            lane.clear()
        self._waiting = self._waiting_bytes = 0
        count = len(hits)
        self._held -= count
        self._held_bytes -= sum(h.size for h in hits)
        self.admitted -= count
        return hits

    # -- state -------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Hits admitted and not yet settled or given up on (waiting, in flight, overflow)."""
        return self.admitted - self.finished

    @property
    def held(self) -> int:
        """Hits in memory (waiting or in flight), what the caps limit."""
        return self._held

    @property
    def held_bytes(self) -> int:
        """Bytes of the hits ``pending`` counts."""
        return self._held_bytes

    @property
    def in_flight(self) -> int:
        """Batches posted and not yet reported."""
        return len(self._in_flight)

    @property
    def failing(self) -> bool:
        """Whether Matomo's last answer called for a retry (and no good one came since)."""
        return self._failed_at is not None

    def stats(self) -> DispatchStats:
        """A snapshot of every counter so far."""
        return self._recorder.snapshot()

    def error(self, message: str, *, kind: str | None = None) -> None:
        """Record and log (rate-limited by kind) an executor's own trouble."""
        self._recorder.error(message, kind=kind)

    def _check_pace(self, now: float) -> None:
        sent = self._recorder.sent
        mark = self._pace_mark
        if mark is None or now < mark[0]:
            self._pace_mark = (now, self.admitted, sent, self._waiting)
            return
        elapsed = now - mark[0]
        if elapsed < PACE_WINDOW:
            return
        self._pace_mark = (now, self.admitted, sent, self._waiting)
        _, admitted, delivered, waiting = mark
        growing = self._waiting > waiting and self._waiting >= 2 * self.config.batch_max_hits
        if not growing or sent == delivered:  # no backlog, or Matomo not answering at all
            return
        if self._pace_warned is not None and now - self._pace_warned < WARN_INTERVAL:
            return
        self._pace_warned = now
        logger.warning(
            "matomo: Matomo cannot keep up: hits arrive at %.0f/s, Matomo takes %.0f/s, "
            "%d hit(s) wait (%d bytes); see 'When Matomo cannot keep up' in docs/delivery.md "
            "(spool=, the external sender, Matomo's QueuedTracking plugin)",
            (self.admitted - admitted) / elapsed,
            (sent - delivered) / elapsed,
            self._waiting,
            self._waiting_bytes,
        )
