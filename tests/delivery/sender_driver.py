"""The delivery suite's ``sender`` executor: an app that only writes a journal
(``sender="external"``) and, in the same test process, the sender's executor delivering it
(what ``matomo-middleware send`` runs: a thread executor claiming the journal's rows)."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections import Counter
from pathlib import Path

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.hits import Hit
from matomo_tracking.journal import Journal
from matomo_tracking.testing import CollectorServer
from matomo_wsgi import ThreadDispatcher

#: Delivery tests whose subject a journal changes on purpose, with the reason; the journal's
#: own behaviour there is tested in tests/core/test_spool.py and tests/journal/.
NOT_FOR_THE_SENDER = {
    "test_a_backlog_goes_out_in_batches_side_by_side_up_to_the_cap": "batches form from the "
    "journal's rounds (every 0.2 s), not from submits",
    "test_a_shallow_queue_sends_one_batch_at_a_time": "batches form from the journal's rounds",
    "test_invalid_hits_are_counted_and_logged_without_the_token": "it counts requests, and "
    "batches form from the journal's rounds",
    "test_a_resend_after_a_read_timeout_counts_as_a_possible_duplicate": "it wants the 5 hits "
    "in one batch; they may come in two of the journal's rounds",
    "test_hits_in_flight_count_against_the_queue_caps": "beyond the memory caps hits wait in "
    "the journal instead of being dropped (queue_full)",
    "test_a_held_matomo_costs_no_more_than_the_queue_caps": "beyond the memory caps hits wait "
    "in the journal instead of being dropped",
    "test_an_outage_of_any_length_stays_within_the_caps": "beyond the memory caps hits wait in "
    "the journal instead of being dropped",
    "test_close_keeps_its_deadline_with_batches_held_and_counts_each_hit_once": "at the "
    "deadline what is left stays in the journal (not dropped as shutdown)",
}


class SenderDriver:
    """An external-sender app and its sender, driven as one dispatcher."""

    kind = "sender"

    def __init__(self, config: TrackingConfig, matomo: CollectorServer) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="sender-")
        spool = str(Path(self._dir.name) / "spool.sqlite3")
        self.config = config
        self.app = ThreadDispatcher(dataclasses.replace(config, spool=spool, sender="external"))
        self.sender = ThreadDispatcher(dataclasses.replace(config, spool=spool))
        self.sender.start()
        self._journal = Journal(spool)
        self._closed = False

    def submit(self, hit: Hit) -> bool:
        return self.app.submit(hit)

    def flush(self, timeout: float) -> bool:
        """The app's hits written, then delivered by the sender (the journal empty)."""
        deadline = time.monotonic() + timeout
        if not self.app.flush(timeout):
            return False
        while time.monotonic() < deadline:
            if self.pending == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float) -> bool:
        if self._closed:
            return True
        self._closed = True
        done = self.app.close(timeout) and self.flush(timeout) and self.sender.close(timeout)
        self.sender.close(0.1)
        self._journal.close()
        self._dir.cleanup()
        return done

    def stats(self) -> DispatchStats:
        """The sender's delivery, with what the app dropped before the journal."""
        app, sender = self.app.stats(), self.sender.stats()
        dropped = Counter(sender.dropped)
        dropped.update(app.dropped)
        return dataclasses.replace(sender, queued=app.queued, dropped=dict(dropped))

    @property
    def held(self) -> tuple[int, int]:
        with self.sender.lock:
            return self.sender.queue.held, self.sender.queue.held_bytes

    @property
    def pending(self) -> int:
        counts = self._journal.counts(time.time())
        rows = counts.rows if counts is not None else 0
        return self.app.pending + max(rows, self.sender.pending)
