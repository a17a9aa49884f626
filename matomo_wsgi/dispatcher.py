"""The thread dispatcher: background threads of each process deliver hits to Matomo in bulk.

``submit`` encodes the hit and queues it within the caps; it never blocks and never raises.
A dispatcher thread cuts the queue into batches (``batch_max_hits``, ``batch_max_bytes``,
``batch_max_age``) and hands them to sender threads as the core's ``BatchWindow`` allows: one
batch at a time while the queue is shallow, up to ``max_concurrent_batches`` at once while a
backlog waits. Each sender executes the core's delivery policy (``BatchDelivery``) over one
keep-alive connection (an ``httpx.Client`` of one connection, reused from batch to batch).

The threads start lazily in the process that first submits, so a dispatcher made before a fork
(gunicorn ``--preload``) works in every worker: the child forgets the parent's queue, threads,
locks and HTTP connections and starts its own on its first hit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import random
import ssl
import threading
import time
import weakref
from collections import deque

import httpx

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import (
    Answer,
    BatchDelivery,
    BatchWindow,
    DispatchStats,
    QueueBudget,
    Send,
    Sleep,
    StatsRecorder,
    TransportError,
    cut_batch,
)
from matomo_tracking.hits import Hit
from matomo_tracking.wire import BULK_HEADERS, EncodedHit, encode_hit
from matomo_wsgi._process_exit import close_at_child_exit

__all__ = ["ThreadDispatcher", "close_all", "post_batch"]

logger = logging.getLogger(__name__)

#: Seconds between two "queue full" warnings.
_WARN_INTERVAL = 60.0
#: Seconds a sender thread waits for work before it ends (the last one stays).
_SENDER_IDLE = 60.0
_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)

# Every live dispatcher of this process, for ``close_all`` (gunicorn's worker_exit hook).
_live: weakref.WeakSet[ThreadDispatcher] = weakref.WeakSet()


class ThreadDispatcher:
    """Delivers hits to Matomo from background threads of each process.

    ``submit(hit)`` never blocks and never raises: it returns False when the hit is dropped
    (queue full, dispatcher closed), counted in ``stats().dropped``. ``flush(timeout)`` waits
    for what was submitted so far; ``close(timeout)`` delivers what is left within the
    deadline, counts the rest as dropped (``"shutdown"``) and stops the threads. Both run at
    interpreter exit (``atexit``) with ``config.shutdown_timeout``.

    Batches go one at a time while the queue is shallow; while a backlog of full batches waits
    (or a flush or close wants everything out), one more goes in flight with each answer from
    Matomo, up to ``config.max_concurrent_batches``, delivered by as many sender threads
    (started as needed), and back to one when an answer calls for a retry (the core's
    ``BatchWindow``). Hits being delivered count against the queue's caps until their batch
    is done.

    With ``config.sync_mode`` every ``submit`` delivers inline in the caller's thread, with the
    same retry policy, for at most ``config.timeout`` seconds (for scripts and serverless
    functions that exit right after their work).

    ``http_client``: your own ``httpx.Client`` (TLS, proxies; its connection limits apply:
    allow ``max_concurrent_batches`` connections); else clients are made per process, one
    connection each and one per batch in flight at most (reused from batch to batch). Redirects
    are never followed, whatever the client's setting, so the token never travels to another
    address.
    """

    def __init__(self, config: TrackingConfig, *, http_client: httpx.Client | None = None) -> None:
        if not isinstance(config, TrackingConfig):
            raise TypeError(f"config must be a TrackingConfig, got {type(config).__name__}")
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(
                f"http_client must be an httpx.Client, got {type(http_client).__name__}"
            )
        self.config = config
        self._endpoint = config.endpoint
        self._user_client = http_client
        self._closed = False
        self._reset()
        _live.add(self)
        atexit.register(self._at_exit)
        if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
            os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    def __repr__(self) -> str:
        return f"ThreadDispatcher(endpoint={self._endpoint!r}, closed={self._closed})"

    def _reset(self) -> None:
        """The per-process state (also what a forked child starts again with)."""
        config = self.config
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Conditions of the lock: the dispatcher thread waits on ``_changed`` (a hit queued,
        # a batch done, a flush, a close), senders on ``_work`` (a batch handed over), flush()
        # and close() on ``_progress`` (hits finished).
        self._changed = threading.Condition(self._lock)
        self._work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._queue: deque[EncodedHit] = deque()
        self._queue_bytes = 0
        self._since = 0.0  # when the queue last went from empty to not (time.time())
        self._budget = QueueBudget(config.queue_max_hits, config.queue_max_bytes)
        self._stats = StatsRecorder(secret=config.token_auth)
        self._window = BatchWindow(config, self._batch_limit())
        self._batches: deque[list[EncodedHit]] = deque()  # cut, waiting for a sender
        self._admitted = 0  # hits ever queued
        self._done = 0  # of those, hits delivered, refused or given up on
        self._flush_target = 0  # partial batches go at once until _done reaches it
        self._thread: threading.Thread | None = None  # cuts batches
        self._senders: list[threading.Thread] = []
        self._idle_senders = 0
        self._stopping = False
        # Clients made here, idle: one connection each (httpcore's pool slows down with the
        # number of connections it holds), one per batch in flight at most, sharing one TLS
        # setup; closed by close().
        self._clients: list[httpx.Client] = []
        self._clients_closed = False
        self._tls: ssl.SSLContext | None = None
        self._wake = threading.Event()
        self._deadline: float | None = None
        self._rng = random.Random()
        # Set once close() gave up on what was left (counted then): a batch a sender still
        # holds is not counted a second time.
        self._given_up = False

    def _batch_limit(self) -> int:
        """How many batches may be delivered at once."""
        return self.config.max_concurrent_batches

    # -- the contract --------------------------------------------------------------------
    def submit(self, hit: Hit) -> bool:
        """Queue ``hit`` for delivery; False if it was dropped (the drop is counted)."""
        try:
            if self._pid != os.getpid():  # a fork the at-fork hook did not see
                self._reset()
            encoded = encode_hit(hit)
            if self.config.sync_mode:
                return self._submit_inline(encoded)
            with self._lock:
                if self._closed:
                    self._stats.drop("closed")
                    return False
                if not self._budget.admit(encoded.size):
                    self._stats.drop("queue_full")
                    self._warn_full()
                    return False
                self._stats.queued += 1
                self._admitted += 1
                self._queue.append(encoded)
                before = self._queue_bytes
                self._queue_bytes += encoded.size
                count = len(self._queue)
                if count == 1:
                    self._since = time.time()
                # Wake the dispatcher thread when this hit changes what it waits for: a first
                # hit (its age starts the clock), a batch that just became full, a flush.
                if (
                    count == 1
                    or count == self.config.batch_max_hits
                    or before < self.config.batch_max_bytes <= self._queue_bytes
                    or self._flush_target > self._done
                ):
                    self._changed.notify()
                self._ensure_thread()
            return True
        except Exception:
            logger.warning("matomo: could not queue a hit", exc_info=True)
            with contextlib.suppress(Exception), self._lock:
                self._stats.drop("error")
            return False

    def stats(self) -> DispatchStats:
        """What was queued, sent, retried and dropped so far in this process."""
        with self._lock:
            return self._stats.snapshot()

    @property
    def pending(self) -> int:
        """Hits queued or being delivered."""
        with self._lock:
            return self._budget.hits

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything submitted so far (partial batches go at once); wait up to
        ``timeout`` seconds (default ``config.shutdown_timeout``). True when all of it was
        delivered or given up on by the policy; else logs how many hits are still queued
        (they stay queued)."""
        limit = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        with self._lock:
            target = self._admitted
            running = self._thread is not None and self._thread.is_alive()
            if self._done >= target or not running:
                return self._done >= target
            self._flush_target = max(self._flush_target, target)
            self._changed.notify()
            if self._wait_done(target, deadline):
                return True
            left = self._budget.hits
        logger.warning("matomo: flush timed out after %.1f s; %d hit(s) still queued", limit, left)
        return False

    def _wait_done(self, target: int, deadline: float) -> bool:
        """Wait (lock held) until ``target`` hits are finished, at most until ``deadline``."""
        while self._done < target:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left within ``timeout`` seconds (default ``config.shutdown_timeout``),
        count the rest as dropped (``"shutdown"``, and logged), stop the threads and close the
        HTTP clients this dispatcher made; later hits are dropped (``"closed"``). Returns whether
        everything was delivered or given up on by the policy in time. Idempotent."""
        limit = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            dropped_before = self._stats.dropped["shutdown"]
            running = self._thread is not None and self._thread.is_alive()
            # Senders give up at the deadline on their own; partial batches go at once.
            self._deadline = deadline
            target = self._admitted
            self._changed.notify()
        _live.discard(self)
        atexit.unregister(self._at_exit)
        self._wake.set()  # backoffs under way look at the deadline again
        if running:
            with self._lock:
                self._wait_done(target, deadline)
        elif self.pending:
            # No thread in this process (it ended, or we are exiting and may not start one):
            # deliver from here.
            self._drain_inline(deadline)
        self._give_up("shutdown")
        with self._lock:
            lost = self._stats.dropped["shutdown"] - dropped_before
        if lost:
            logger.warning(
                "matomo: dispatcher closed after %.1f s with %d hit(s) undelivered (dropped)",
                limit,
                lost,
            )
        self._close_client()
        return lost == 0

    # -- submit helpers ------------------------------------------------------------------
    def _warn_full(self) -> None:
        if self._budget.warning_due(time.monotonic(), _WARN_INTERVAL):
            logger.warning(
                "matomo: queue full (%d hits / %d bytes); dropping hits until Matomo catches up "
                "(dropped so far: %d)",
                self._budget.max_hits,
                self._budget.max_bytes,
                self._stats.dropped["queue_full"],
            )

    def _ensure_thread(self) -> None:
        # Called with the lock held.
        if self._thread is not None and self._thread.is_alive():
            return
        thread = threading.Thread(target=self._run, name="matomo-dispatcher", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            # Interpreter shutting down: close() delivers what is queued inline.
            return
        self._thread = thread
        close_at_child_exit(close_all)  # atexit never runs in multiprocessing children

    def _submit_inline(self, encoded: EncodedHit) -> bool:
        with self._lock:
            if self._closed:
                self._stats.drop("closed")
                return False
            self._stats.queued += 1
            self._admitted += 1
            self._budget.hits += 1
            self._budget.bytes += encoded.size
        self._deliver([encoded], deadline=time.monotonic() + self.config.timeout, reason="timeout")
        return True

    # -- the threads ---------------------------------------------------------------------
    def _run(self) -> None:
        """The dispatcher thread: cut batches off the queue when the window lets them go and
        hand them to sender threads, until ``close()`` is done."""
        config = self.config
        while True:
            inline: list[EncodedHit] | None = None
            with self._lock:
                if self._stopping:
                    return
                try:
                    count = len(self._queue)
                    delay = self._window.wait(
                        hits=count,
                        size=self._queue_bytes,
                        age=self._age() if count else 0.0,
                        urgent=self._closed or self._flush_target > self._done,
                    )
                    if delay is None or delay > 0:
                        self._changed.wait(delay)
                        continue
                    batch, size = cut_batch(
                        self._queue,
                        max_hits=config.batch_max_hits,
                        max_bytes=config.batch_max_bytes,
                    )
                    self._queue_bytes -= size
                    self._window.started()
                    self._batches.append(batch)
                    if self._hire():
                        self._work.notify()
                    else:  # no sender runs, and none can start (the interpreter is exiting)
                        inline = self._batches.popleft()
                except Exception:
                    logger.warning("matomo: the dispatcher thread hit an error", exc_info=True)
                    self._changed.wait(0.1)
            if inline is not None:
                self._send(inline)

    def _age(self) -> float:
        # How long the oldest queued hit has waited: since it was made, or since it was
        # queued when it was made long before (a tracker's backdated hit).
        return time.time() - max(self._queue[0].created, self._since)

    def _hire(self) -> bool:
        """(Lock held.) Start a sender thread when the batches waiting outnumber the idle
        senders; False when none runs and none can be started."""
        if len(self._batches) > self._idle_senders and len(self._senders) < self._window.limit:
            thread = threading.Thread(target=self._serve, name="matomo-sender", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # the interpreter is exiting
                return bool(self._senders)
            self._senders.append(thread)
        return True

    def _serve(self) -> None:
        """A sender thread: deliver the batches handed over, one after the other."""
        me = threading.current_thread()
        try:
            while True:
                with self._lock:
                    self._idle_senders += 1
                    try:
                        while not self._batches and not self._stopping:
                            idle = not self._work.wait(_SENDER_IDLE)
                            if idle and not self._batches and len(self._senders) > 1:
                                break  # a quiet spell: fewer threads are enough
                    finally:
                        self._idle_senders -= 1
                    if not self._batches:
                        return
                    batch = self._batches.popleft()
                self._send(batch)
        finally:
            with self._lock:
                if me in self._senders:
                    self._senders.remove(me)

    def _send(self, batch: list[EncodedHit]) -> None:
        """Deliver a batch the window let go, then free its place in the window."""
        try:
            self._deliver(batch, deadline=None, reason="shutdown", windowed=True)
        finally:
            with self._lock:
                self._window.finished()
                self._changed.notify()

    def _drain_inline(self, deadline: float) -> None:
        """Deliver what is queued from the calling thread (no dispatcher thread is running)."""
        config = self.config
        while time.monotonic() < deadline:
            with self._lock:
                if self._batches:
                    batch = self._batches.popleft()
                elif self._queue:
                    batch, size = cut_batch(
                        self._queue,
                        max_hits=config.batch_max_hits,
                        max_bytes=config.batch_max_bytes,
                    )
                    self._queue_bytes -= size
                else:
                    return
            self._deliver(batch, deadline=deadline, reason="shutdown")

    def _deliver(
        self,
        hits: list[EncodedHit],
        *,
        deadline: float | None,
        reason: str,
        windowed: bool = False,
    ) -> None:
        """Deliver one batch with ``_deliver_batch``, then give its room in the queue back
        (hits it hands back go to the front of the queue, with their room)."""
        back: list[EncodedHit] | None = None
        try:
            back = self._deliver_batch(hits, deadline=deadline, reason=reason, windowed=windowed)
        finally:
            if back:
                with self._lock:
                    self._queue.extendleft(reversed(back))
                    self._queue_bytes += sum(h.size for h in back)
                kept = {id(h) for h in back}
                hits = [h for h in hits if id(h) not in kept]
            self._finished(hits, reason=None)

    def _deliver_batch(
        self,
        hits: list[EncodedHit],
        *,
        deadline: float | None,
        reason: str,
        windowed: bool = False,
    ) -> list[EncodedHit] | None:
        """The step a subclass replaces (the Celery dispatcher hands the batch to a task):
        execute the core's delivery policy for one batch over HTTP; at ``deadline`` (or the
        one ``close()`` sets while it runs) give up what is left, counted as ``reason``.
        ``windowed``: a batch the ``BatchWindow`` let go, which reports Matomo's answers to
        it; returns the hits to queue again when the window says so."""
        lock = self._lock
        with lock:
            delivery = BatchDelivery(hits, self.config, self._stats)
        try:
            return self._run_delivery(delivery, deadline, reason, windowed)
        finally:
            if windowed:
                with lock:
                    self._window.ended(delivery)

    def _run_delivery(
        self, delivery: BatchDelivery, deadline: float | None, reason: str, windowed: bool
    ) -> list[EncodedHit] | None:
        lock = self._lock
        try:
            while True:
                deadline = self._deadline if deadline is None else deadline
                if deadline is not None and time.monotonic() >= deadline:
                    self._abandon(delivery, reason)
                    return None
                with lock:
                    step = delivery.next_step(time.time(), self._rng.random())
                if step is None:
                    return None
                if isinstance(step, Sleep):
                    if not self._sleep(step.seconds, deadline):
                        self._abandon(delivery, reason)
                        return None
                    continue
                result = self._post(step, deadline)
                with lock:
                    if self._given_up:
                        delivery.take_remaining()  # counted by close() already
                        return None
                    if isinstance(result, Answer):
                        delivery.answered(result, time.time())
                    else:
                        delivery.failed(result[0], result[1], time.time())
                    if windowed:
                        if not self._window.answered(delivery):
                            # Another batch is resent to a failing Matomo: this one waits.
                            return delivery.take_remaining()
                        self._changed.notify()  # Matomo may be back: more batches may go
        except Exception:
            logger.warning("matomo: delivering a batch failed", exc_info=True)
            self._abandon(delivery, "error")
        return None

    def _abandon(self, delivery: BatchDelivery, reason: str) -> None:
        with self._lock:
            if self._given_up:
                delivery.take_remaining()  # counted by close() already
            else:
                delivery.abandon(reason)

    def _finished(self, hits: list[EncodedHit], *, reason: str | None) -> None:
        with self._lock:
            self._budget.release(len(hits), sum(h.size for h in hits))
            self._done += len(hits)
            if reason is not None and not self._given_up:
                self._stats.drop(reason, len(hits))
            self._progress.notify_all()

    def _sleep(self, seconds: float, deadline: float | None) -> bool:
        """Wait ``seconds``; False (give up) if that would pass the deadline, which ``close``
        may set while we wait."""
        end = time.monotonic() + seconds
        while True:
            limit = self._deadline if deadline is None else deadline
            if limit is not None and end > limit:
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            if limit is not None:
                # The wait ends before the deadline: nothing left to interrupt it for.
                time.sleep(remaining)
                return True
            # close() sets the deadline, then this event, so a long backoff is re-examined.
            self._wake.wait(remaining)

    def _post(self, step: Send, deadline: float | None) -> Answer | tuple[TransportError, str]:
        timeout = self.config.timeout
        if deadline is not None:
            timeout = max(0.05, min(timeout, deadline - time.monotonic()))
        client = self._take_client()
        try:
            return post_batch(client, self._endpoint, step.body, timeout)
        finally:
            self._give_client(client)

    def _take_client(self) -> httpx.Client:
        if self._user_client is not None:
            return self._user_client
        with self._lock:
            if self._clients:
                return self._clients.pop()  # the one used last: its connection is the warmest
            tls = self._tls
        if tls is None:  # made once (it loads the CA certificates), outside the lock
            tls = httpx.create_ssl_context()
            with self._lock:
                tls = self._tls = self._tls or tls
        return httpx.Client(
            timeout=self.config.timeout, follow_redirects=False, limits=_ONE_CONNECTION, verify=tls
        )

    def _give_client(self, client: httpx.Client) -> None:
        if client is self._user_client:
            return
        with self._lock:
            if not self._clients_closed:
                self._clients.append(client)
                return
        _close_quietly(client)  # close() came while it was posting

    def _close_client(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
            self._clients_closed = True
        for client in clients:
            _close_quietly(client)

    def _give_up(self, reason: str) -> None:
        """Count whatever is still pending as dropped, and stop the threads."""
        with self._lock:
            left = self._budget.hits
            if left:
                self._stats.drop(reason, left)
                self._budget.release(left, self._budget.bytes)
                self._given_up = True
            self._queue.clear()
            self._queue_bytes = 0
            self._batches.clear()
            self._done = max(self._done, self._admitted)
            self._stopping = True
            self._changed.notify_all()
            self._work.notify_all()
            self._progress.notify_all()

    def _at_exit(self) -> None:
        try:
            self.close(self.config.shutdown_timeout)
        except Exception:  # pragma: no cover - never fail the interpreter's exit
            logger.debug("matomo: closing at exit failed", exc_info=True)


def post_batch(
    client: httpx.Client, endpoint: str, body: bytes, timeout: float
) -> Answer | tuple[TransportError, str]:
    """POST one bulk body (never following a redirect); Matomo's answer, or how it failed."""
    try:
        response = client.post(
            endpoint,
            content=body,
            headers=BULK_HEADERS,
            follow_redirects=False,
            timeout=timeout,
        )
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
        return TransportError.TIMEOUT, _describe(exc)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        return TransportError.CONNECT, _describe(exc)
    except Exception as exc:
        return TransportError.OTHER, _describe(exc)
    return Answer(
        status=response.status_code,
        body=response.content,
        retry_after=response.headers.get("retry-after"),
        location=response.headers.get("location"),
    )


def _close_quietly(client: httpx.Client) -> None:
    try:
        client.close()
    except Exception:  # pragma: no cover
        logger.debug("matomo: closing an HTTP client failed", exc_info=True)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _after_fork(ref: weakref.ref[ThreadDispatcher]) -> None:
    """In a forked child: forget the parent's thread, queue, locks and connections (the parent
    delivers its own queued hits); the child's first hit starts its own thread."""
    dispatcher = ref()
    if dispatcher is not None:
        dispatcher._reset()
        if not dispatcher._closed:
            _live.add(dispatcher)


def close_all(timeout: float | None = None) -> bool:
    """Close every ``ThreadDispatcher`` of this process, each within ``timeout`` (default: its
    own ``shutdown_timeout``); returns whether all finished in time."""
    done = True
    for dispatcher in list(_live):
        done = dispatcher.close(timeout) and done
    return done
