"""A ``DeliveryQueue`` kept in step with a real journal file (``Spool``), driven as an executor
drives it: rows written in rounds, deleted once settled, memory overflowing into the journal
and read back in order, a dead process's rows delivered by the next, the shutdown hand-back,
the external sender's journal-only mode, a full or failing journal counted."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from matomo_tracking import TrackingConfig
from matomo_tracking.answers import Answer
from matomo_tracking.delivery_queue import Batch, DeliveryQueue, Wait
from matomo_tracking.journal import Journal
from matomo_tracking.spool import SYNC_HITS, SYNC_INTERVAL, Spool, lease_for
from tests.core.builders import MATOMO, NOW
from tests.core.test_delivery_queue import hit, urls

ME, OTHER = 11, 22


def config(**options: object) -> TrackingConfig:
    settings: dict[str, object] = {"url": MATOMO, "timeout": 1.0, "backoff_base": 1.0}
    settings.update(options)
    return TrackingConfig(**settings)  # type: ignore[arg-type]


def spooled(
    path: Path,
    owner: int = ME,
    *,
    external: bool = False,
    max_bytes: int = 1 << 30,
    busy_timeout: float = 5.0,
    **options: object,
) -> tuple[DeliveryQueue, Spool, Journal]:
    journal = Journal(path, max_bytes=max_bytes, busy_timeout=busy_timeout)
    queue = DeliveryQueue(config(**options))
    return queue, Spool(journal, queue, owner=owner, external=external), journal


def round_trip(spool: Spool, now: float, *, final: bool = False) -> None:
    """One round, as an executor makes it (take and done under its lock, run off it)."""
    work = spool.take(now, final=final)
    spool.run(work, now)
    spool.done(work, now)


def deliver(queue: DeliveryQueue, now: float) -> list[str]:
    """Send every batch the queue holds now (a flush), Matomo answering each at once."""
    queue.flush_target()
    sent: list[str] = []
    while True:
        step = queue.next_step(now, 0.5)
        if isinstance(step, Wait):
            return sent
        sent += urls(step)
        answer = json.dumps({"tracked": step.count, "invalid": 0}).encode()
        queue.answered(step, Answer(200, answer), now)


def rows(path: Path) -> int:
    journal = Journal(path)
    counts = journal.counts(NOW)
    journal.close()
    assert counts is not None
    return counts.rows


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite3"


def test_admitted_hits_are_journaled_and_deleted_once_settled(path: Path) -> None:
    queue, spool, journal = spooled(path, batch_max_hits=3)
    queue.admit(hit(0), NOW)
    round_trip(spool, NOW)
    for n in range(1, 3):
        queue.admit(hit(n), NOW)
    assert spool.due(NOW) == pytest.approx(SYNC_INTERVAL)  # the next round within 0.2 s
    round_trip(spool, NOW + SYNC_INTERVAL)
    assert rows(path) == 3
    # another process cannot take them: this one holds them
    other = Journal(path)
    assert other.claim(OTHER, NOW, lease=9, max_hits=9, max_bytes=1 << 20) is None

    assert deliver(queue, NOW) == ["0", "1", "2"]
    assert spool.due(NOW) == 0.0  # rows to delete
    round_trip(spool, NOW + SYNC_INTERVAL)

    assert rows(path) == 0
    assert queue.pending == 0
    other.close()
    journal.close()


def test_a_hit_settled_before_its_round_never_reaches_the_file(path: Path) -> None:
    queue, spool, journal = spooled(path, batch_max_hits=1)
    queue.admit(hit(0), NOW)
    assert deliver(queue, NOW) == ["0"]

    round_trip(spool, NOW)

    assert rows(path) == 0
    journal.close()


def test_a_hit_settled_while_its_round_runs_is_deleted_next_round(path: Path) -> None:
    queue, spool, journal = spooled(path, batch_max_hits=1)
    queue.admit(hit(0), NOW)
    work = spool.take(NOW)
    spool.run(work, NOW)  # written...
    assert deliver(queue, NOW) == ["0"]  # ...and sent before the round is done
    spool.done(work, NOW)
    assert rows(path) == 1

    round_trip(spool, NOW + SYNC_INTERVAL)

    assert rows(path) == 0
    journal.close()


def test_many_waiting_hits_call_for_a_round_at_once(path: Path) -> None:
    queue, spool, journal = spooled(path, queue_max_hits=SYNC_HITS * 2)
    for n in range(SYNC_HITS):
        queue.admit(hit(n), NOW)
    assert spool.due(NOW) == 0.0
    journal.close()


def test_memory_overflows_into_the_journal_and_comes_back_in_order(path: Path) -> None:
    # one visitor, memory for 2 hits: the rest waits in the journal, new hits behind it
    queue, spool, journal = spooled(path, queue_max_hits=2, batch_max_hits=2)
    for n in range(6):
        assert queue.admit(hit(n, "v" * 16), NOW)
    round_trip(spool, NOW)
    assert rows(path) == 6
    assert queue.held == 2

    sent = deliver(queue, NOW)
    queue.admit(hit(6, "v" * 16), NOW + 0.1)  # memory has room, but older hits wait
    for step in range(1, 10):
        now = NOW + step * SYNC_INTERVAL
        round_trip(spool, now)
        sent += deliver(queue, now)

    assert sent == ["0", "1", "2", "3", "4", "5", "6"]
    stats = queue.stats()
    assert (stats.queued, stats.sent, stats.possible_duplicates, queue.pending) == (7, 7, 0, 0)
    assert rows(path) == 0
    journal.close()


def test_the_rows_of_a_dead_process_go_out_again_counted_as_possible_duplicates(
    path: Path,
) -> None:
    queue, spool, journal = spooled(path, batch_max_hits=10)
    for n in range(4):
        queue.admit(hit(n), NOW)
    round_trip(spool, NOW)
    queue.flush_target()
    batch = queue.next_step(NOW, 0.5)
    assert isinstance(batch, Batch)  # ... posted, then the process died before the answer
    journal.close()

    heir_queue, heir, heir_journal = spooled(path, OTHER, batch_max_hits=10)
    round_trip(heir, NOW + 1)
    assert heir_queue.held == 0  # the lease still runs
    later = NOW + lease_for(heir_queue.config) + 1
    round_trip(heir, later)
    assert deliver(heir_queue, later) == ["0", "1", "2", "3"]
    round_trip(heir, later + 1)

    stats = heir_queue.stats()
    assert (stats.queued, stats.sent, stats.possible_duplicates) == (4, 4, 4)
    assert rows(path) == 0
    heir_journal.close()


def test_at_the_shutdown_deadline_what_is_left_stays_in_the_journal(path: Path) -> None:
    queue, spool, journal = spooled(path, batch_max_hits=2)
    for n in range(3):
        queue.admit(hit(n), NOW)
    round_trip(spool, NOW)
    queue.admit(hit(3), NOW)  # not yet written when the process stops
    queue.close(NOW + 1)
    step = queue.next_step(NOW + 1, 0.5)  # the deadline: everything is given up
    assert isinstance(step, Wait)
    round_trip(spool, NOW + 1, final=True)
    journal.close()

    # the next process takes them at once (handed back, not a dead lease), no duplicates
    heir_queue, heir, heir_journal = spooled(path, OTHER, batch_max_hits=10)
    round_trip(heir, NOW + 2)
    assert deliver(heir_queue, NOW + 2) == ["0", "1", "2", "3"]
    assert heir_queue.stats().possible_duplicates == 0
    heir_journal.close()


def test_an_external_sender_spool_only_writes_free_rows(path: Path) -> None:
    queue, spool, journal = spooled(path, external=True)
    for n in range(3):
        assert queue.admit(hit(n), NOW)
    assert queue.held == 0  # nothing in memory: nothing is sent from here
    assert isinstance(queue.next_step(NOW + 5, 0.5), Wait)
    round_trip(spool, NOW)

    assert queue.pending == 0  # written: this process is done with them
    assert queue.stats().queued == 3
    sender = Journal(path)
    claim = sender.claim(OTHER, NOW, lease=9, max_hits=9, max_bytes=1 << 20)
    assert claim is not None
    assert claim.possible_duplicates == 0
    assert len(claim.hits) == 3
    sender.close()
    journal.close()


def test_an_app_warns_when_its_journal_grows_and_no_sender_claims(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue, spool, journal = spooled(path, external=True)
    with caplog.at_level(logging.WARNING, logger="matomo_tracking.journal"):
        for second in range(0, 110, 10):
            queue.admit(hit(second), NOW + second)
            round_trip(spool, NOW + second)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # after a minute of rows and no claim; once a minute at most
    assert "no sender has claimed any for 60 s" in warnings[0]
    assert f"matomo-middleware send --spool {path}" in warnings[0]

    caplog.clear()
    sender = Journal(path)
    assert sender.claim(OTHER, NOW + 110, lease=9, max_hits=1, max_bytes=1 << 20) is not None
    with caplog.at_level(logging.WARNING, logger="matomo_tracking.journal"):
        for second in range(110, 160, 10):
            queue.admit(hit(second), NOW + second)
            round_trip(spool, NOW + second)
    assert caplog.records == []  # a sender claims: all is well
    sender.close()
    journal.close()


def test_a_full_journal_drops_what_memory_cannot_hold(path: Path) -> None:
    size = len(hit(0).data)
    queue, spool, journal = spooled(
        path, max_bytes=3 * size + 2, queue_max_hits=2, batch_max_hits=2
    )
    for n in range(5):
        queue.admit(hit(n), NOW)
    round_trip(spool, NOW)

    stats = queue.stats()
    assert stats.dropped == {"spool_full": 2}
    assert queue.pending == 3  # two in memory, one in the journal
    assert deliver(queue, NOW) == ["0", "1"]
    for step in range(1, 4):
        round_trip(spool, NOW + step)
    assert deliver(queue, NOW + 4) == ["2"]
    journal.close()


def test_an_external_app_counts_what_it_cannot_write(path: Path) -> None:
    queue, spool, journal = spooled(path, external=True, busy_timeout=0.1)
    queue.admit(hit(0), NOW)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        round_trip(spool, NOW)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert queue.stats().dropped == {"spool_error": 1}
    assert queue.pending == 0
    journal.close()
