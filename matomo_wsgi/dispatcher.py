"""The thread dispatcher: one daemon thread per process delivers hits to Matomo in bulk.

``submit`` encodes the hit and puts it on a bounded queue; it never blocks and never raises.
The worker thread gathers batches (``batch_max_hits``, ``batch_max_bytes``, ``batch_max_age``)
and executes the core's delivery policy (``BatchDelivery``) with an ``httpx.Client``.

The thread starts lazily in the process that first submits, so a dispatcher made before a fork
(gunicorn ``--preload``) works in every worker: the child forgets the parent's queue, thread,
locks and HTTP connections and starts its own on its first hit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import queue
import random
import threading
import time
import weakref
from dataclasses import dataclass, field

import httpx

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import (
    Answer,
    BatchBuilder,
    BatchDelivery,
    DispatchStats,
    QueueBudget,
    Send,
    Sleep,
    StatsRecorder,
    TransportError,
)
from matomo_tracking.hits import Hit
from matomo_tracking.wire import BULK_HEADERS, EncodedHit, encode_hit

__all__ = ["ThreadDispatcher", "close_all", "post_batch"]

logger = logging.getLogger(__name__)

#: Seconds between two "queue full" warnings.
_WARN_INTERVAL = 60.0
#: Room on the queue for control messages beyond the hit budget.
_CONTROL_ROOM = 64

# Every live dispatcher of this process, for ``close_all`` (gunicorn's worker_exit hook).
_live: weakref.WeakSet[ThreadDispatcher] = weakref.WeakSet()


@dataclass(eq=False)
class _Marker:
    """A control message: the worker sends what it holds, then sets ``done``.

    ``stop`` also ends the worker; ``deadline`` (monotonic) is when to give up on what is left.
    """

    stop: bool
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)


class ThreadDispatcher:
    """Delivers hits to Matomo from one background thread per process.

    ``submit(hit)`` never blocks and never raises: it returns False when the hit is dropped
    (queue full, dispatcher closed), counted in ``stats().dropped``. ``flush(timeout)`` waits
    for what was submitted so far; ``close(timeout)`` delivers what is left within the
    deadline, counts the rest as dropped (``"shutdown"``) and stops the thread. Both run at
    interpreter exit (``atexit``) with ``config.shutdown_timeout``.

    With ``config.sync_mode`` every ``submit`` delivers inline in the caller's thread, with the
    same retry policy, for at most ``config.timeout`` seconds (for scripts and serverless
    functions that exit right after their work).

    ``http_client``: your own ``httpx.Client`` (TLS, proxies); else one is made per process.
    Redirects are never followed, whatever the client's setting, so the token never travels
    to another address.
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
        self._queue: queue.Queue[EncodedHit | _Marker] = queue.Queue(
            config.queue_max_hits + _CONTROL_ROOM
        )
        self._budget = QueueBudget(config.queue_max_hits, config.queue_max_bytes)
        self._stats = StatsRecorder(secret=config.token_auth)
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = self._user_client
        self._owns_client = self._user_client is None
        self._wake = threading.Event()
        self._deadline: float | None = None
        self._rng = random.Random()
        # Set once close() gave up on what was left (counted then): a batch the worker still
        # holds is not counted a second time.
        self._given_up = False

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
                self._ensure_thread()
            try:
                self._queue.put_nowait(encoded)
            except queue.Full:  # flush/close markers took the spare room
                self._finished([encoded], reason="queue_full")
                return False
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
        """Send everything submitted so far; wait up to ``timeout`` seconds (default
        ``config.shutdown_timeout``). True when nothing is left; else logs how many hits are
        still queued (they stay queued)."""
        limit = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
            if not running or self._budget.hits == 0:
                return self._budget.hits == 0
        marker = _Marker(stop=False, deadline=None)
        if not self._put_marker(marker, deadline) or not marker.done.wait(
            max(0.0, deadline - time.monotonic())
        ):
            left = self.pending
            logger.warning(
                "matomo: flush timed out after %.1f s; %d hit(s) still queued", limit, left
            )
            return left == 0
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left within ``timeout`` seconds (default ``config.shutdown_timeout``),
        count the rest as dropped (``"shutdown"``, and logged), stop the thread and close the
        HTTP client this dispatcher made; later hits are dropped (``"closed"``). Returns whether
        everything was delivered or given up on by the policy in time. Idempotent."""
        limit = self.config.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            dropped_before = self._stats.dropped["shutdown"]
            thread = self._thread
            running = thread is not None and thread.is_alive()
        _live.discard(self)
        atexit.unregister(self._at_exit)
        if running and thread is not None:
            marker = _Marker(stop=True, deadline=deadline)
            self._deadline = deadline
            self._wake.set()
            if self._put_marker(marker, deadline):
                # A little grace: the worker gives up by the deadline on its own.
                marker.done.wait(max(0.0, deadline - time.monotonic()) + 0.5)
        elif self.pending:
            # No thread in this process (it ended, or we are exiting and may not start one):
            # deliver from here.
            self._deadline = deadline
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

    def _put_marker(self, marker: _Marker, deadline: float) -> bool:
        try:
            self._queue.put(marker, timeout=max(0.0, deadline - time.monotonic()))
            return True
        except queue.Full:
            return False

    def _submit_inline(self, encoded: EncodedHit) -> bool:
        with self._lock:
            if self._closed:
                self._stats.drop("closed")
                return False
            self._stats.queued += 1
            self._budget.hits += 1
            self._budget.bytes += encoded.size
        self._deliver([encoded], deadline=time.monotonic() + self.config.timeout, reason="timeout")
        return True

    # -- the worker ----------------------------------------------------------------------
    def _run(self) -> None:
        """The worker loop: gather batches and deliver them until a stop marker."""
        builder = BatchBuilder(self.config)
        max_age = self.config.batch_max_age
        batch_due = 0.0
        while True:
            try:
                timeout = max(0.0, batch_due - time.monotonic()) if builder.hits else None
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    self._send(builder.take(), None)
                    continue
                if isinstance(item, EncodedHit):
                    if not builder.hits:
                        batch_due = time.monotonic() + max_age
                    leftover = builder.offer(item)
                    if leftover is not None:
                        self._send(builder.take(), None)
                        builder.offer(leftover)
                        batch_due = time.monotonic() + max_age
                    if builder.full:
                        self._send(builder.take(), None)
                    continue
                # A marker: everything before it is in the builder or already delivered.
                self._send(builder.take(), item.deadline)
                if item.stop:
                    self._discard_queued("shutdown")
                    item.done.set()
                    return
                item.done.set()
            except Exception:
                logger.warning("matomo: the dispatcher thread hit an error", exc_info=True)
                lost = builder.take()
                if lost:
                    self._finished(lost, reason="error")

    def _send(self, hits: list[EncodedHit], deadline: float | None) -> None:
        if hits:
            self._deliver(hits, deadline=deadline, reason="shutdown")

    def _discard_queued(self, reason: str) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, EncodedHit):
                self._finished([item], reason=reason)
            else:
                item.done.set()

    def _drain_inline(self, deadline: float) -> None:
        """Deliver what is queued from the calling thread (no worker thread is running)."""
        builder = BatchBuilder(self.config)
        while time.monotonic() < deadline:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, EncodedHit):
                item.done.set()
                continue
            leftover = builder.offer(item)
            if leftover is not None:
                self._deliver(builder.take(), deadline=deadline, reason="shutdown")
                builder.offer(leftover)
            if builder.full:
                self._deliver(builder.take(), deadline=deadline, reason="shutdown")
        if builder.hits:
            self._deliver(builder.take(), deadline=deadline, reason="shutdown")

    def _deliver(self, hits: list[EncodedHit], *, deadline: float | None, reason: str) -> None:
        """Deliver one batch with ``_deliver_batch``, then give its room in the queue back."""
        try:
            self._deliver_batch(hits, deadline=deadline, reason=reason)
        finally:
            self._finished(hits, reason=None)

    def _deliver_batch(
        self, hits: list[EncodedHit], *, deadline: float | None, reason: str
    ) -> None:
        """The step a subclass replaces (the Celery dispatcher hands the batch to a task):
        execute the core's delivery policy for one batch over HTTP; at ``deadline`` (or the
        one ``close()`` sets while it runs) give up what is left, counted as ``reason``."""
        lock = self._lock
        with lock:
            delivery = BatchDelivery(hits, self.config, self._stats)
        try:
            while True:
                deadline = self._deadline if deadline is None else deadline
                if deadline is not None and time.monotonic() >= deadline:
                    self._abandon(delivery, reason)
                    return
                with lock:
                    step = delivery.next_step(time.time(), self._rng.random())
                if step is None:
                    return
                if isinstance(step, Sleep):
                    if not self._sleep(step.seconds, deadline):
                        self._abandon(delivery, reason)
                        return
                    continue
                result = self._post(step, deadline)
                with lock:
                    if self._given_up:
                        delivery.take_remaining()  # counted by close() already
                        return
                    if isinstance(result, Answer):
                        delivery.answered(result, time.time())
                    else:
                        delivery.failed(result[0], result[1], time.time())
        except Exception:
            logger.warning("matomo: delivering a batch failed", exc_info=True)
            self._abandon(delivery, "error")

    def _abandon(self, delivery: BatchDelivery, reason: str) -> None:
        with self._lock:
            if self._given_up:
                delivery.take_remaining()  # counted by close() already
            else:
                delivery.abandon(reason)

    def _finished(self, hits: list[EncodedHit], *, reason: str | None) -> None:
        with self._lock:
            self._budget.release(len(hits), sum(h.size for h in hits))
            if reason is not None and not self._given_up:
                self._stats.drop(reason, len(hits))

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
        return post_batch(self._http_client(), self._endpoint, step.body, timeout)

    def _http_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = httpx.Client(timeout=self.config.timeout, follow_redirects=False)
                    self._client = client
        return client

    def _close_client(self) -> None:
        with self._lock:
            client, owned = self._client, self._owns_client
            if owned:
                self._client = None
        if client is not None and owned:
            try:
                client.close()
            except Exception:  # pragma: no cover
                logger.debug("matomo: closing the HTTP client failed", exc_info=True)

    def _give_up(self, reason: str) -> None:
        """Count whatever is still pending as dropped."""
        with self._lock:
            left = self._budget.hits
            if left:
                self._stats.drop(reason, left)
                self._budget.release(left, self._budget.bytes)
                self._given_up = True

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
