"""The thread executor's journal rounds (``spool=``), in a thread of their own so that the
delivery threads never wait for the disk: a round when the core's ``Spool`` says one is due,
and a last one at ``close``."""

from __future__ import annotations

import contextlib
import threading
import time

from matomo_tracking.spool import Spool

__all__ = ["JournalThread"]


class JournalThread:
    """Runs ``spool``'s rounds; ``lock`` is the executor's, ``woken`` are its conditions to
    notify after each round (rows read back, hits written)."""

    def __init__(self, spool: Spool, lock: threading.Lock, *woken: threading.Condition) -> None:
        self.spool = spool
        self._lock = lock
        self._woken = woken
        self._due = threading.Condition(lock)
        self._thread: threading.Thread | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        """Whether the thread was started."""
        return self._thread is not None

    def poke(self, now: float) -> None:
        """(Lock held.) Wake the thread if a round is due now (many hits wait)."""
        if not self.spool.due(now):
            self._due.notify()

    def start(self) -> None:
        """(Lock held.) Start the thread unless it runs."""
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="matomo-journal", daemon=True)
            with contextlib.suppress(RuntimeError):  # exiting: ``stop`` makes the last round
                thread.start()
                self._thread = thread

    def stop(self, timeout: float) -> None:
        """End the thread (within ``timeout`` if it is in a round), then hand everything left
        to the journal (the last round)."""
        with self._lock:
            self._stopping = True
            self._due.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._round(final=True)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                due = self.spool.due(time.time())
                if due:
                    self._due.wait(due)
                    continue
            self._round()

    def _round(self, *, final: bool = False) -> None:
        spool = self.spool
        with self._lock:
            work = spool.take(time.time(), final=final)
        spool.run(work, time.time())
        with self._lock:
            spool.done(work, time.time())
            for condition in self._woken:
                condition.notify_all()
