"""The asyncio executor of the core's ``DeliveryQueue``: a worker task asks the queue for the
next batch, starts a task that POSTs it and reports the outcome, and waits as told. Nothing
here decides or counts: the queue does. Batches are POSTed with h11 over asyncio streams
(``lean_posting``), or with httpx (``posting``) when you give an ``http_client`` or a proxy of
the environment applies to the endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Coroutine
from typing import Any

import httpx

from matomo_asgi._journaling import JournalRounds
from matomo_asgi._waiting import running_loop, sooner, woken
from matomo_asgi.posting import poster_for
from matomo_tracking.config import TrackingConfig, masked_url
from matomo_tracking.delivery_queue import Admission, Batch, DeliveryQueue
from matomo_tracking.dispatcher import QueueBackedDispatcher
from matomo_tracking.hits import Hit
from matomo_tracking.spool import open_journal, spool_for
from matomo_tracking.wire import encode_hit

__all__ = ["AsyncioDispatcher"]

logger = logging.getLogger(__name__)

_POLL = 0.01  # seconds between looks when waiting from another event loop or thread


class AsyncioDispatcher(QueueBackedDispatcher):
    """Delivers hits to Matomo from a worker task on the event loop.

    ``submit(hit)`` admits the hit to the core's ``DeliveryQueue``; it never blocks or raises
    and returns False when the hit is dropped (counted). The worker starts with ``start()``
    (lifespan startup) or on the first ``submit`` in a running loop; when its loop ends, the
    next loop to submit takes over. ``aflush``/``aclose`` wait (``aclose`` drops what is left
    at the deadline, ``shutdown``); ``flush``/``close`` do the same from a thread.
    ``http_client``: your own ``httpx.AsyncClient`` (redirects never followed; closed by
    you); else connections are made per loop, one per batch in flight, kept alive (httpx
    clients when a proxy of the environment applies to the endpoint, which they honour).
    """

    def __init__(
        self, config: TrackingConfig, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self._http_client = http_client
        self._lock = threading.Lock()
        self._journal = open_journal(config)  # a journal that cannot be used fails here
        self._reset()

    def _reset(self) -> None:
        """The per-process state (a forked child starts again with it, empty)."""
        self._pid = os.getpid()
        self._queue = DeliveryQueue(self.config, listeners_of=getattr(self, "_queue", None))
        self._rng = random.Random()
        spool = spool_for(self._journal, self._queue, self._rng.getrandbits(63) | 1)
        self._journaling = spool and JournalRounds(spool, self._lock)
        self._poster = poster_for(self.config, self._http_client)  # no parent's connections
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None

    def __repr__(self) -> str:
        endpoint = masked_url(self.config.endpoint)
        return f"AsyncioDispatcher(endpoint={endpoint!r}, pending={self.pending})"

    # -- submitting ------------------------------------------------------------------------
    def submit(self, hit: Hit) -> bool:
        """Queue ``hit`` for delivery; False if it was dropped. Never blocks, never raises."""
        try:
            encoded = encode_hit(hit)
            with self._lock:
                if os.getpid() != self._pid:  # the parent's queue is the parent's
                    self._reset()
                now = time.time()
                admission = self._queue.admit(encoded, now)
                wake = admission is Admission.WAKE or bool(
                    self._journaling and self._journaling.due(now)
                )
            if admission:
                self._ensure_worker(wake)
            return bool(admission)
        except Exception:
            with self._lock:
                self._queue.reject("error")
            logger.warning("matomo: could not queue a hit", exc_info=True)
            return False

    def start(self) -> None:
        """Start (or open again after ``aclose``) the worker on the running event loop."""
        with self._lock:
            if os.getpid() != self._pid:
                self._reset()
            self._queue.reopen()
        self._ensure_worker(True, take_over=True)

    def _ensure_worker(self, wake: bool, *, take_over: bool = False) -> None:
        running, loop = running_loop(), self._loop
        if take_over and running is not None and running is not loop:
            self._start_worker(running)  # start() on this loop: the worker lives here now
        elif running is not None and running is loop:
            worker = self._worker
            if worker is None or worker.done():
                self._start_worker(running)
            elif wake and self._wakeup is not None:
                self._wakeup.set()
        elif loop is not None and not loop.is_closed() and loop.is_running():
            if wake:  # the worker's loop runs in another thread: wake it there
                with contextlib.suppress(RuntimeError):  # that loop just stopped
                    loop.call_soon_threadsafe(self._ensure_worker, True)
        elif running is not None:
            self._start_worker(running)
        # else no loop runs anywhere yet: the hits wait for the first loop to start a worker

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._poster.forget()  # a client made on another loop holds its connections
        self._loop = loop
        self._wakeup = wakeup = asyncio.Event()
        self._progress = progress = asyncio.Event()
        self._worker = loop.create_task(self._run(wakeup, progress), name="matomo-dispatcher")

    # -- the worker ------------------------------------------------------------------------
    async def _run(self, wakeup: asyncio.Event, progress: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        senders: set[asyncio.Task[None]] = set()
        me = asyncio.current_task()

        try:
            while self._worker is me:  # aclose() ends it by forgetting it
                wakeup.clear()
                now = time.time()
                journal = self._journaling.step(now, wakeup, progress) if self._journaling else None
                with self._lock:
                    step = self._queue.next_step(now, self._rng.random())
                if isinstance(step, Batch):
                    task = loop.create_task(self._send(step, wakeup, progress), name="matomo-batch")
                    senders.add(task)
                    task.add_done_callback(senders.discard)
                    continue
                progress.set()  # a deadline may have settled hits
                await woken(wakeup, sooner(step.seconds, journal))
        finally:
            for task in senders:
                task.cancel()
            if senders:
                await asyncio.gather(*senders, return_exceptions=True)
            await self._poster.close()

    async def _send(self, batch: Batch, wakeup: asyncio.Event, progress: asyncio.Event) -> None:
        """One batch's task: POST it and report; cancelled (the loop is torn down), its hits
        go back to the queue for the next worker (unless given up at the deadline)."""
        try:
            outcome = await self._poster.post(batch)
        except asyncio.CancelledError:
            with self._lock:
                self._queue.give_back(batch)
            raise
        with self._lock:
            self._queue.report(batch, outcome, time.time())
        wakeup.set()
        progress.set()

    # -- flushing and closing --------------------------------------------------------------
    async def aflush(self, timeout: float | None = None) -> bool:
        """Wait until what was submitted so far is delivered or given up on, at most
        ``timeout`` s (default ``shutdown_timeout``); partial batches go at once."""
        with self._lock:
            target = self._queue.flush_target()
        return await self._await(target, self._seconds(timeout))

    async def aclose(self, timeout: float | None = None) -> bool:
        """Refuse new hits, deliver what is held within ``timeout`` s, drop the rest
        (``shutdown``), close the clients made here; whether nothing was dropped."""
        limit = self._seconds(timeout)
        with self._lock:
            target = self._queue.close(time.time() + limit)
        await self._await(target, limit + 0.5)  # the worker gives up at the deadline
        worker, wakeup, self._worker = self._worker, self._wakeup, None
        if worker is not None and wakeup is not None and not worker.done():
            if worker.get_loop() is asyncio.get_running_loop():
                wakeup.set()
                await asyncio.wait({worker}, timeout=1.0)
            else:  # a worker on a loop in another thread: wake it there to end
                with contextlib.suppress(RuntimeError):
                    worker.get_loop().call_soon_threadsafe(wakeup.set)
        with self._lock:
            done = self._queue.finish_close()
        if self._journaling:  # what is left stays in the journal, for the next process
            await self._journaling.close()
        await self._poster.close()
        return done

    async def _await(self, target: int, timeout: float) -> bool:
        self._ensure_worker(True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            progress = self._progress if self._loop is loop else None
            if progress is not None:
                progress.clear()
            with self._lock:
                if self._queue.flushed(target):
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if progress is None:  # the worker is on another loop: look again soon
                await asyncio.sleep(min(_POLL, remaining))
            else:
                await woken(progress, remaining)

    def flush(self, timeout: float | None = None) -> bool:
        """``aflush`` from a thread that runs no event loop (blocking it)."""
        return self._blocking(self.aflush(timeout), self._seconds(timeout))

    def close(self, timeout: float | None = None) -> bool:
        """``aclose`` from a thread that runs no event loop (blocking it)."""
        return self._blocking(self.aclose(timeout), self._seconds(timeout))

    def _blocking(self, work: Coroutine[Any, Any, bool], timeout: float) -> bool:
        if running_loop() is not None:  # waiting here would block this loop (and its worker)
            work.close()
            logger.warning("matomo: flush()/close() called on an event loop: await aflush()")
            return False
        loop = self._loop
        if loop is not None and loop.is_running():  # the worker's loop, in another thread
            return asyncio.run_coroutine_threadsafe(work, loop).result(timeout + 5.0)
        return asyncio.run(work)  # no loop runs the worker: deliver on a loop of our own
