"""A ``DeliveryQueue`` kept in step with a ``Journal`` (``spool=``): what every executor, and
the sender process, runs when a journal is configured. Pure: the journal does the I/O, time
is passed in.

The queue stays the one place that decides; the spool only listens to its events and moves
rows. An executor makes three calls, the middle one off its lock (and off the event loop)::

    with lock: work = spool.take(now)          # what to write, settle, release, claim room
    spool.run(work, now)                       # the journal's transactions
    with lock: spool.done(work, now)           # rows claimed go into the queue

whenever ``spool.due(now)`` says so (every ``SYNC_INTERVAL`` at the most, at once when
``SYNC_HITS`` hits wait), and once more when it flushes or closes.

- A hit the queue admits is written leased to this process (it holds it in memory); a hit
  beyond the memory caps (the queue's ``overflow``) is written free, for whichever process
  has room first, and read back when room comes.
- Rows are deleted once the queue settled their hits (sent, refused, dropped for good); at
  the shutdown deadline what is left is handed back to the journal for the next process
  (the hits of a batch still in flight as possible duplicates: Matomo may have them).
- Rows of a dead process are claimed once their lease expired, counted as possible
  duplicates.
- ``external`` (``sender="external"``): every hit is written free and nothing is sent; the
  spool warns now and then when the journal grows and no sender claims rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery_queue import DeliveryEvent, DeliveryQueue, EventKind
from matomo_tracking.journal import Claim, Journal, StoredHit
from matomo_tracking.wire import EncodedHit

__all__ = [
    "SYNC_HITS",
    "SYNC_INTERVAL",
    "Spool",
    "SpoolWork",
    "lease_for",
    "open_journal",
    "spool_for",
]

logger = logging.getLogger("matomo_tracking.journal")

#: Seconds between two journal transactions at the most.
SYNC_INTERVAL = 0.2
#: Hits waiting to be written that call for a transaction at once.
SYNC_HITS = 100
# Seconds between two attempts to claim rows that found none; between two lease renewals
# (a fraction of the lease); between two looks at an external sender's progress.
_CLAIM_RETRY = 1.0
_RENEW_FRACTION = 1 / 3
_WATCH_INTERVAL = 10.0
_SENDER_SILENCE = 60.0
_WARN_INTERVAL = 60.0


def open_journal(config: TrackingConfig) -> Journal | None:
    """The journal ``config.spool`` names (``JournalError`` if it cannot be used), or None."""
    if config.spool is None:
        return None
    return Journal(config.spool, max_bytes=config.spool_max_bytes)


def spool_for(journal: Journal | None, queue: DeliveryQueue, owner: int) -> Spool | None:
    """The spool an executor runs for ``queue`` (None without a journal): ``owner`` is this
    process's number (a random 63-bit int); ``sender="external"`` makes it journal-only."""
    if journal is None:
        return None
    return Spool(journal, queue, owner=owner, external=queue.config.sender == "external")


def lease_for(config: TrackingConfig) -> float:
    """How long a process holds the rows it claimed: longer than a bulk request may take
    (three ``timeout``s and a connect), so that only a dead or stuck process loses them."""
    return max(5.0, 3.0 * config.timeout + config.connect_timeout)


@dataclass(slots=True)
class SpoolWork:
    """One round of journal work, taken under the executor's lock (``Spool.take``), done off
    it (``Spool.run``), and finished under it (``Spool.done``)."""

    held: list[EncodedHit] = field(default_factory=list)
    spare: list[EncodedHit] = field(default_factory=list)
    spare_sent: list[EncodedHit] = field(default_factory=list)
    settle: list[int] = field(default_factory=list)
    settle_bytes: int = 0
    release: list[int] = field(default_factory=list)
    release_sent: list[int] = field(default_factory=list)
    room: int = 0
    room_bytes: int = 0
    # results of ``run``
    first_row: int = 0
    written: int = 0
    lost: int = 0
    lost_reason: str = ""
    failed: bool = False
    claim: Claim | None = None


class Spool:
    """Keeps ``queue``'s hits in ``journal`` (see the module's docstring).

    ``owner``: this process's number in the journal (a random 63-bit int, drawn by the
    executor). ``external`` (``sender="external"``): the app only writes the journal.
    """

    __slots__ = (
        "_claim_at",
        "_claim_floor",
        "_config",
        "_gone_in_flight",
        "_journal",
        "_lease",
        "_next_sync",
        "_queue",
        "_release",
        "_release_sent",
        "_renew_at",
        "_rows",
        "_rows_since",
        "_seen_rows",
        "_settle",
        "_settle_bytes",
        "_unwritten",
        "_unwritten_sent",
        "_warned",
        "_watch_at",
        "_writing",
        "external",
        "owner",
    )

    def __init__(
        self, journal: Journal, queue: DeliveryQueue, *, owner: int, external: bool = False
    ) -> None:
        self._journal = journal
        self._queue = queue
        self._config = queue.config
        self.owner = owner
        self.external = external
        self._lease = lease_for(self._config)
        # rows are claimed when a batch fits in memory
        self._claim_floor = min(self._config.batch_max_hits, self._config.queue_max_hits)
        queue.overflow = []
        queue.hold = not external
        queue.listeners.append(self._event)
        self._rows: dict[int, tuple[EncodedHit, int]] = {}  # id(hit) -> (hit, its row)
        self._unwritten: dict[int, EncodedHit] = {}  # admitted, held, not yet written
        self._writing: dict[int, EncodedHit | None] = {}  # being written; None: settled meanwhile
        # given up in flight at the deadline (possibly processed) before they had a row
        self._gone_in_flight: set[int] = set()  # ids of hits being written
        self._unwritten_sent: list[EncodedHit] = []  # never written
        self._settle: list[int] = []
        self._settle_bytes = 0
        self._release: list[int] = []
        self._release_sent: list[int] = []  # given up in flight: possibly processed
        self._next_sync = 0.0
        self._claim_at = 0.0
        self._renew_at = 0.0
        self._watch_at = 0.0
        self._seen_rows: int | None = None
        self._rows_since: float | None = None  # since when the journal holds rows
        self._warned: float | None = None

    # -- the queue's events (under the executor's lock) --------------------------------------

    def _event(self, event: DeliveryEvent) -> None:
        kind = event.kind
        if kind == EventKind.QUEUED:
            if not event.reason:  # admitted into memory (overflow is read from the queue)
                for hit in event.hits:
                    self._unwritten[id(hit)] = hit
            return
        if kind not in (EventKind.SENT, EventKind.FAILED, EventKind.DROPPED):
            return
        keep = kind == EventKind.DROPPED and event.reason == "shutdown"
        release = self._release_sent if event.in_flight else self._release
        for hit in event.hits:
            key = id(hit)
            found = self._rows.pop(key, None)
            if found is not None:
                if keep:
                    release.append(found[1])
                else:
                    self._settle.append(found[1])
                    self._settle_bytes += len(hit.data)
            elif self._unwritten.pop(key, None) is not None:
                if keep and event.in_flight:  # for the next process, as possibly processed
                    self._unwritten_sent.append(hit)
                elif keep:  # never written: the journal keeps it for the next process
                    self._queue.overflow.append(hit)  # type: ignore[union-attr]
            elif key in self._writing:
                self._writing[key] = None if not keep else hit
                if keep and event.in_flight:
                    self._gone_in_flight.add(key)

    # -- the executor's rounds ---------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Hits not yet written to the journal."""
        overflow = self._queue.overflow
        unwritten = len(self._unwritten) + len(self._unwritten_sent)
        return unwritten + (len(overflow) if overflow is not None else 0)

    def due(self, now: float) -> float:
        """Seconds until the next round is due (0: now)."""
        if self.waiting >= SYNC_HITS or self._settle or self._release or self._release_sent:
            return 0.0
        return max(0.0, self._next_sync - now)

    def take(self, now: float, *, final: bool = False) -> SpoolWork:
        """Under the executor's lock: what the next round writes, settles and releases, and
        the room it may claim rows into. ``final``: the executor stops; every hit it still
        has is written free and every row it holds handed back, for the next process."""
        queue = self._queue
        overflow = queue.overflow if queue.overflow is not None else []
        unwritten = list(self._unwritten.values())
        work = SpoolWork(
            held=[] if final else unwritten,
            spare=unwritten + overflow if final else list(overflow),
            spare_sent=self._unwritten_sent,
            settle=self._settle,
            settle_bytes=self._settle_bytes,
            release=self._release,
            release_sent=self._release_sent,
        )
        if final:
            work.release.extend(row for _, row in self._rows.values())
            self._rows.clear()
        overflow.clear()
        self._unwritten = {}
        self._unwritten_sent = []
        self._settle = []
        self._settle_bytes = 0
        self._release = []
        self._release_sent = []
        for hit in work.held:
            self._writing[id(hit)] = hit
        config = self._config
        if not (self.external or final or queue.closed) and now >= self._claim_at:
            work.room = config.queue_max_hits - queue.held
            work.room_bytes = config.queue_max_bytes - queue.held_bytes
        self._next_sync = now + SYNC_INTERVAL
        return work

    def run(self, work: SpoolWork, now: float) -> None:
        """Off the executor's lock: the journal's transactions for ``work``."""
        journal, owner = self._journal, self.owner
        if work.release:
            journal.release(owner, work.release, now)
        if work.release_sent:
            journal.release(owner, work.release_sent, now, sent=True)
        if work.held or work.spare or work.spare_sent or work.settle:  # one transaction
            outcome = journal.append(
                owner,
                now,
                held=work.held,
                sent=work.spare_sent,
                spare=work.spare,
                lease=self._lease,
                settle=work.settle,
                settle_size=work.settle_bytes,
            )
            work.first_row = outcome.first_row
            work.written = outcome.stored
            work.failed = outcome.settled < 0
            work.lost = outcome.full + outcome.failed
            work.lost_reason = "spool_error" if outcome.failed else "spool_full"
        if now >= self._renew_at and not self.external:
            self._renew_at = now + self._lease * _RENEW_FRACTION
            journal.renew(owner, now, lease=self._lease)
        if work.room >= self._claim_floor:
            work.claim = journal.claim(
                owner,
                now,
                lease=self._lease,
                max_hits=work.room,
                max_bytes=work.room_bytes,
            )
        if self.external and now >= self._watch_at:
            self._watch_at = now + _WATCH_INTERVAL
            self._watch(now)

    def done(self, work: SpoolWork, now: float) -> None:
        """Under the executor's lock: remember the rows written, put the rows claimed into the
        queue (what no longer fits goes back to the journal), count what was lost."""
        queue = self._queue
        if work.failed:  # the transaction did not happen: delete those rows next time
            self._settle.extend(work.settle)
            self._settle_bytes += work.settle_bytes
        held_written = min(work.written, len(work.held))
        given_up = self._gone_in_flight  # empty but at a shutdown
        for index, hit in enumerate(work.held):
            key = id(hit)
            state = self._writing.pop(key, None)
            gone = bool(given_up) and key in given_up
            if gone:
                given_up.discard(key)
            if index >= held_written:
                continue  # not journaled (full, failing): still delivered from memory
            row = work.first_row + index
            if state is None:
                self._settle.append(row)  # settled while it was being written
                self._settle_bytes += len(hit.data)
            elif gone:  # given up in flight while it was being written
                self._release_sent.append(row)
            else:
                self._rows[key] = (hit, row)
        # the hits given up in flight come next (counted as dropped then, whatever happens)
        spare_written = max(0, work.written - held_written - len(work.spare_sent))
        lost = work.spare[spare_written:]
        if lost:
            queue.hand_over(lost, work.lost_reason)
        if work.spare[:spare_written]:
            if self.external:  # written for the sender: done here
                queue.hand_over(work.spare[:spare_written])
            else:  # a backlog in the journal goes first: new hits queue up behind it
                queue.hold = False
        claim = work.claim
        if work.room >= self._claim_floor and (claim is None or len(claim.hits) < work.room):
            queue.hold = not self.external  # the journal holds nothing more to claim now
        if claim is None:
            if work.room >= self._claim_floor:
                self._claim_at = now + _CLAIM_RETRY
            return
        if claim.possible_duplicates:
            event = DeliveryEvent(EventKind.POSSIBLE_DUPLICATE, claim.possible_duplicates)
            for listener in queue.listeners:
                listener(event)
        taken = 0
        for own, run in _runs(claim, self.owner):
            count = queue.restore(run, now, new=not own)
            for hit in run[:count]:
                self._rows[id(hit)] = (hit, hit.row)
            taken += count
            if count < len(run):
                break
        self._release.extend(hit.row for hit in claim.hits[taken:])

    # -- an external sender's progress -------------------------------------------------------

    def _watch(self, now: float) -> None:
        counts = self._journal.counts(now)
        if counts is None:
            return
        grew = self._seen_rows is not None and counts.rows > self._seen_rows
        self._seen_rows = counts.rows
        if not counts.rows:
            self._rows_since = None
            return
        if self._rows_since is None:
            self._rows_since = now
        last = counts.last_claim
        quiet = now - (self._rows_since if last is None else max(last, self._rows_since))
        if (
            grew
            and quiet >= _SENDER_SILENCE
            and (self._warned is None or now - self._warned >= _WARN_INTERVAL)
        ):
            self._warned = now
            logger.warning(
                "matomo: the journal %s holds %d hit(s) and no sender has claimed any for "
                "%.0f s: is `matomo-middleware send --spool %s` running?",
                self._journal.path,
                counts.rows,
                quiet,
                self._journal.path,
            )


def _runs(claim: Claim, owner: int) -> list[tuple[bool, list[StoredHit]]]:
    """The claimed hits in runs of the same origin (this process's own, or another's)."""
    runs: list[tuple[bool, list[StoredHit]]] = []
    for hit in claim.hits:
        own = hit.origin == owner
        if runs and runs[-1][0] == own:
            runs[-1][1].append(hit)
        else:
            runs.append((own, [hit]))
    return runs
