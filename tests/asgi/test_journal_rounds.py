"""The asyncio executor's journal rounds with a real journal file: a round is due when many
hits wait, but not while one is under way (its end wakes the worker; a submit waking it for
every hit meanwhile only costs CPU)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from matomo_asgi._journaling import JournalRounds
from matomo_tracking.delivery_queue import DeliveryQueue
from matomo_tracking.journal import Journal
from matomo_tracking.spool import SYNC_HITS, Spool, SpoolWork
from tests.core.builders import NOW
from tests.core.test_delivery_queue import hit
from tests.core.test_spool import config


class HeldSpool(Spool):
    """A spool whose rounds wait for ``release`` (the journal's I/O, slowed down)."""

    def __init__(self, journal: Journal, queue: DeliveryQueue) -> None:
        super().__init__(journal, queue, owner=7, external=False)
        self.release = threading.Event()
        self.running = threading.Event()

    def run(self, work: SpoolWork, now: float) -> None:
        self.running.set()
        self.release.wait(10)
        super().run(work, now)


def test_no_round_is_due_while_one_is_under_way(tmp_path: Path) -> None:
    queue = DeliveryQueue(config(queue_max_hits=10 * SYNC_HITS))
    spool = HeldSpool(Journal(tmp_path / "spool.sqlite3"), queue)
    lock = threading.Lock()
    rounds = JournalRounds(spool, lock)

    async def scenario() -> tuple[bool, bool, bool, bool]:
        woken = asyncio.Event()
        for n in range(SYNC_HITS):
            queue.admit(hit(n), NOW)
        before = rounds.due(NOW)  # many hits wait, no round yet: due
        assert rounds.step(NOW, woken) is None  # the round starts (in its thread)
        await asyncio.to_thread(spool.running.wait, 10)
        for n in range(SYNC_HITS, 3 * SYNC_HITS):
            queue.admit(hit(n), NOW)
        during = rounds.due(NOW)  # as many wait again, but one round is under way
        spool.release.set()
        await asyncio.wait_for(woken.wait(), 10)  # its end wakes the worker
        after = rounds.due(NOW)  # and the hits that came meanwhile are due now
        assert rounds.step(NOW, woken) is None
        woken.clear()
        await asyncio.wait_for(woken.wait(), 10)
        await rounds.close()
        return before, during, after, rounds.due(NOW)

    before, during, after, closed = asyncio.run(scenario())
    assert (before, during, after, closed) == (True, False, True, False)
    journal = Journal(tmp_path / "spool.sqlite3")
    counts = journal.counts(NOW)
    journal.close()
    assert counts is not None
    assert counts.rows == 3 * SYNC_HITS  # all written, none lost
