"""The thread executor of the core's ``DeliveryQueue``: delivery threads (one per batch in
flight, started as needed) perform the batches the queue hands out with a ``Poster`` (an HTTP
POST, a hand-over to a broker) and report how they ended. Nothing here decides or counts.
Threads start in the process that first submits: a forked child (gunicorn ``--preload``)
forgets the parent's queue, threads, locks and connections and starts its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery_queue import Admission, Batch, DeliveryQueue
from matomo_tracking.dispatcher import QueueBackedDispatcher
from matomo_tracking.hits import Hit
from matomo_tracking.spool import open_journal, spool_for
from matomo_tracking.wire import encode_hit
from matomo_wsgi._journaling import JournalThread
from matomo_wsgi._process_exit import close_all, close_at_child_exit, forget, watch
from matomo_wsgi.poster import Poster

__all__ = ["Poster", "ThreadExecutor", "close_all"]

logger = logging.getLogger("matomo_wsgi.dispatcher")

#: Seconds a sender thread waits for work before it ends (the last one stays).
_SENDER_IDLE = 60.0
#: Seconds between two looks at the queue when delivering from the caller's thread.
_INLINE_POLL = 0.01


class ThreadExecutor(QueueBackedDispatcher):
    """Runs a ``DeliveryQueue`` on threads, with ``poster`` performing the batches.

    ``submit`` never blocks or raises; ``flush``/``close`` wait for the queue (``close`` also
    at exit); ``aflush``/``aclose`` from an event loop without blocking it. ``sync_mode``:
    each ``submit`` delivers in the caller's thread within ``timeout``. ``concurrency``:
    batches in flight at most; ``target``: what ``poster`` delivers to, for log lines.
    """

    def __init__(
        self,
        config: TrackingConfig,
        poster: Poster,
        *,
        concurrency: int | None = None,
        target: str = "Matomo",
    ) -> None:
        self.config = config
        self._poster = poster
        self._concurrency = concurrency
        self._limit = max(1, config.max_concurrent_batches if concurrency is None else concurrency)
        self._target = target
        self._closed = False
        self._journal = open_journal(config)  # a journal that cannot be used fails here
        self._reset()
        watch(self)  # closed at exit, told of forks

    def _reset(self) -> None:
        """The per-process state (also what a forked child starts again with)."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # idle delivery threads wait on it
        self._progress = threading.Condition(self._lock)  # flush() and close() wait on it
        previous = getattr(self, "_queue", None)  # a forked parent's: its metrics follow
        self._queue = DeliveryQueue(
            self.config, concurrency=self._concurrency, target=self._target, listeners_of=previous
        )
        if self._closed:
            self._queue.close(time.time())
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        self._stopping = False
        self._rng = random.Random()
        spool = spool_for(self._journal, self._queue, self._rng.getrandbits(63) | 1)
        self._journaling = spool and JournalThread(spool, self._lock, self._changed, self._progress)

    # -- the contract ------------------------------------------------------------------------
    def submit(self, hit: Hit) -> bool:
        """Queue ``hit`` for delivery; False if it was dropped (the drop is counted)."""
        try:
            if self._pid != os.getpid():  # a fork the at-fork hook did not see
                self._reset()
                self._poster.reset()
            encoded = encode_hit(hit)
            with self._lock:
                admission = self._queue.admit(encoded, time.time())
                if not admission:
                    return False
                target = self._queue.admitted
                if not self.config.sync_mode:
                    if admission is Admission.WAKE:
                        self._changed.notify()
                    if self._journaling:
                        self._journaling.poke(time.time())
                    self._ensure_thread()
                    return True
            self._drain(target, time.time() + self.config.timeout, "timeout")
            return True
        except Exception:
            logger.warning("matomo: could not queue a hit", exc_info=True)
            with self._lock:
                self._queue.reject("error")
            return False

    def start(self) -> None:
        """Start the loop thread if hits wait (it also starts on the first ``submit``)."""
        with self._lock:
            if (self._queue.pending or self._journaling) and not self.config.sync_mode:
                self._ensure_thread()

    def flush(self, timeout: float | None = None) -> bool:
        """Send what was submitted so far at once; wait up to ``timeout`` s (default
        ``shutdown_timeout``). False (logged) if hits are still queued then (they stay)."""
        limit = self._seconds(timeout)
        deadline = time.time() + limit
        with self._lock:
            target = self._queue.flush_target()
            if self._queue.flushed(target) or not self._threads:
                return self._queue.flushed(target)
            self._changed.notify()
            if self._wait(target, deadline):
                return True
            left = self._queue.pending
        logger.warning("matomo: flush timed out after %.1f s; %d hit(s) still queued", limit, left)
        return False

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left within ``timeout`` s, give up the rest (``shutdown``), stop
        the threads, release connections; later hits are dropped (``closed``). Whether
        nothing was given up. Idempotent."""
        deadline = time.time() + self._seconds(timeout)
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            target = self._queue.close(deadline)
            running = bool(self._threads)
            self._changed.notify()
        forget(self)
        if running:
            with self._lock:
                self._wait(target, deadline + 0.5)  # the loop gives up at the deadline
        else:  # no loop thread here (never started, or the interpreter is exiting)
            self._drain(target, deadline, "shutdown")
        with self._lock:
            done = self._queue.finish_close()
            self._stopping = True
            self._changed.notify_all()
            self._progress.notify_all()
        if self._journaling:  # what is left stays in the journal, for later
            self._journaling.stop(self.config.timeout)
        self._poster.close()
        return done

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush`` from an event loop (in a worker thread: the loop never blocks)."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> bool:
        """``close`` from an event loop (in a worker thread: the loop never blocks)."""
        return await asyncio.to_thread(self.close, timeout)

    # -- the threads -------------------------------------------------------------------------
    def _wait(self, target: int, deadline: float) -> bool:
        """(Lock held.) Wait until ``target`` hits are finished, at most until ``deadline``."""
        while not self._queue.flushed(target):
            remaining = deadline - time.time()
            if remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    def _ensure_thread(self) -> None:
        """(Lock held.) Start the first delivery thread unless one runs, and the journal's."""
        if self._journaling:
            self._journaling.start()
        if not self._threads:
            self._hire("matomo-dispatcher")
            close_at_child_exit(close_all)  # atexit never runs in multiprocessing children

    def _hire(self, name: str) -> None:
        """(Lock held.) Start a delivery thread (not while the interpreter exits)."""
        thread = threading.Thread(target=self._run, name=name, daemon=True)
        with contextlib.suppress(RuntimeError):  # exiting: close() delivers inline
            thread.start()
            self._threads.append(thread)

    def _run(self) -> None:
        """A delivery thread: perform the batch the queue hands out, or wait as told."""
        me = threading.current_thread()
        try:
            while True:
                with self._lock:
                    batch = self._next(len(self._threads) > 1)
                if batch is None:
                    return
                self._perform(batch)
        finally:
            with self._lock:
                if me in self._threads:
                    self._threads.remove(me)

    def _next(self, spare: bool) -> Batch | None:
        """(Lock held.) The next batch; None when stopping or, for a ``spare`` thread, after
        a quiet spell. While one thread posts, another looks (one per batch in flight)."""
        while not self._stopping:
            step = self._queue.next_step(time.time(), self._rng.random())
            if isinstance(step, Batch):
                if not self._idle and len(self._threads) < self._limit:
                    self._hire("matomo-sender")
                return step
            self._progress.notify_all()  # a deadline may have settled hits
            self._idle += 1
            woken = self._changed.wait(_SENDER_IDLE if step.seconds is None else step.seconds)
            self._idle -= 1
            if spare and not woken and step.seconds is None:
                return None
        return None

    def _perform(self, batch: Batch) -> None:
        outcome = self._poster.post(batch)
        with self._lock:
            self._queue.report(batch, outcome, time.time())
            self._changed.notify()
            self._progress.notify_all()

    def _drain(self, target: int, deadline: float, reason: str) -> None:
        """Deliver from the calling thread until ``target`` hits are finished; at
        ``deadline`` give up what is left (``reason``)."""
        while True:
            with self._lock:
                now = time.time()
                if self._queue.flushed(target):
                    return
                if now >= deadline:
                    self._queue.give_up(reason)
                    return
                step = self._queue.next_step(now, self._rng.random())
            if isinstance(step, Batch):
                self._perform(step)
            else:
                pause = _INLINE_POLL if step.seconds is None else step.seconds
                time.sleep(max(0.0, min(pause, deadline - now)))

    def after_fork(self) -> None:
        """In a forked child: forget the parent's threads, queue, locks and connections (the
        parent delivers its own hits); the child's first hit starts its own thread."""
        self._reset()
        self._poster.reset()
