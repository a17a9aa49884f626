"""The asyncio executor's journal rounds (``spool=``): one at a time, beside the batches, in a
thread of its own (never on the event loop), and a last one at ``aclose``.

One thread for every round of a process: the journal is used by one thread at a time, and the
memory its rounds allocate is reused (the default executor's threads each kept an allocator
arena: +200 MB after a 60 s outage)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

from matomo_tracking.spool import Spool, SpoolWork

__all__ = ["JournalRounds"]

logger = logging.getLogger("matomo_asgi.dispatcher")


class JournalRounds:
    """Runs ``spool``'s rounds for an asyncio executor whose queue ``lock`` guards."""

    def __init__(self, spool: Spool, lock: AbstractContextManager[Any]) -> None:
        self.spool = spool
        self._lock = lock
        self._thread: ThreadPoolExecutor | None = None
        self._round: tuple[asyncio.Future[None], SpoolWork] | None = None  # under way

    def due(self, now: float) -> bool:
        """(Lock held.) Whether a round is due now (many hits wait and none is under way: the
        one under way wakes the worker when it ends, and the next starts then)."""
        return self._round is None and not self.spool.due(now)

    def step(self, now: float, *woken: asyncio.Event) -> float | None:
        """(On the loop.) Start a round if one is due; the seconds until the next one is due,
        or None while one runs (the ``woken`` events are set when it ends)."""
        if self._round is not None:
            return None
        with self._lock:
            due = self.spool.due(now)
            if due:
                return due
            work = self.spool.take(now)
        running = self._run(work)
        self._round = (running, work)

        def ended(future: asyncio.Future[None]) -> None:
            if self._round is not None and self._round[0] is future:
                self._round = None
                self._done(work, future)
                for event in woken:
                    event.set()

        running.add_done_callback(ended)
        return None

    async def close(self) -> None:
        """The round under way ends, then everything left goes to the journal."""
        if self._round is not None:
            running, work = self._round
            self._round = None
            with contextlib.suppress(Exception):
                await running
            self._done(work, running)
        with self._lock:
            work = self.spool.take(time.time(), final=True)
        running = self._run(work)
        with contextlib.suppress(Exception):
            await running
        self._done(work, running)
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    def _run(self, work: SpoolWork) -> asyncio.Future[None]:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="matomo-journal")
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._thread, self.spool.run, work, time.time())

    def _done(self, work: SpoolWork, running: asyncio.Future[None]) -> None:
        if not running.done():  # on another loop's thread: its bookkeeping is lost, not rows
            return
        if not running.cancelled() and running.exception() is not None:
            logger.warning("matomo: a journal round failed", exc_info=running.exception())
        with self._lock:
            self.spool.done(work, time.time())
