"""The asyncio dispatcher: hits are queued by ``submit`` (never blocking); a worker task on the
event loop cuts them into bulk batches and starts a task per batch, as many at once as the
core's ``BatchWindow`` allows, each posting its batch with a shared ``httpx.AsyncClient`` and
executing the core's delivery policy (``BatchDelivery``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import threading
import time
from collections import deque

import httpx

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import (
    Answer,
    BatchDelivery,
    BatchWindow,
    DispatchStats,
    QueueBudget,
    Sleep,
    StatsRecorder,
    TransportError,
    cut_batch,
)
from matomo_tracking.hits import Hit
from matomo_tracking.wire import BULK_HEADERS, EncodedHit, encode_hit

__all__ = ["AsyncioDispatcher"]

logger = logging.getLogger(__name__)

_WARN_EVERY = 60.0  # seconds between two "queue full" warnings
_MAX_ANSWER_BYTES = 64 * 1024  # Matomo's bulk answer is a few bytes; never read more than this
_POLL = 0.01  # flush polling interval when called from another event loop
_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


class AsyncioDispatcher:
    """Delivers hits to Matomo from a worker task on the event loop.

    ``submit(hit)`` encodes the hit and queues it within ``queue_max_hits`` and
    ``queue_max_bytes``; it never blocks or raises, and returns False when the hit is dropped
    (counted in ``stats().dropped``: ``queue_full``, ``closed``). The worker gathers batches of
    up to ``batch_max_hits`` hits and ``batch_max_bytes`` bytes, waiting at most
    ``batch_max_age`` seconds for a batch to fill, and posts them with retries and backoff:
    one batch at a time while the queue is shallow; while a backlog of full batches waits (or
    a flush wants everything out), one more in flight with each answer from Matomo, up to
    ``max_concurrent_batches``, and back to one when an answer calls for a retry (the core's
    ``BatchWindow``). Hits being delivered count against the queue's caps until their batch
    is done.

    The worker starts with ``start()`` (``MatomoMiddleware`` calls it on lifespan startup) or
    on the first ``submit`` in a running event loop. ``aflush(timeout)`` waits for what was
    submitted; ``aclose(timeout)`` flushes with a deadline, drops what is left (``shutdown``)
    and closes the HTTP client it made. Submits from another thread are handed to the loop
    the worker runs on; when that loop ends (a test client's loop, a fork), the next loop to
    submit takes over the queue.

    ``http_client``: your own ``httpx.AsyncClient`` (proxies, TLS, headers); its timeout and
    connection limits apply (allow ``max_concurrent_batches`` connections), redirects are
    never followed, and you close it. Without one, clients with ``timeout=config.timeout``
    are made per event loop, one connection each and one per batch in flight at most (reused
    from batch to batch), and closed with the worker.
    """

    def __init__(
        self, config: TrackingConfig, *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self._endpoint = config.endpoint
        self._user_client = http_client
        # Clients made here, idle: one connection each (httpcore's pool slows down with the
        # number of connections it holds), one per batch in flight at most, sharing one TLS
        # setup. Made per event loop and closed with the worker.
        self._clients: list[httpx.AsyncClient] = []
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()  # queue, budget, counters and stats
        self._stats = StatsRecorder(secret=config.token_auth)
        self._budget = QueueBudget(config.queue_max_hits, config.queue_max_bytes)
        self._queue: deque[EncodedHit] = deque()
        self._queue_bytes = 0
        self._since = 0.0  # when the queue last went from empty to not (time.time())
        self._admitted = 0  # hits ever queued
        self._finished = 0  # of those, hits delivered, refused or dropped
        self._flush_target = 0  # batches go out at once until _finished reaches it
        self._rng = random.Random()
        self._pid = os.getpid()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        # The batches being delivered: their tasks (referenced here until they end) and the
        # window that decides when the next one may start.
        self._senders: set[asyncio.Task[None]] = set()
        self._window = BatchWindow(config)
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._closed = False
        self._abandoning = False

    def __repr__(self) -> str:
        return f"AsyncioDispatcher(endpoint={self._endpoint!r}, queued={len(self._queue)})"

    # -- submitting ------------------------------------------------------------------------
    def submit(self, hit: Hit) -> bool:
        """Queue ``hit`` for delivery; False if it was dropped. Never blocks, never raises."""
        try:
            return self._submit(hit)
        except Exception:
            with self._lock:
                self._stats.drop("error")
            logger.warning("matomo: could not queue a hit", exc_info=True)
            return False

    def _submit(self, hit: Hit) -> bool:
        encoded = encode_hit(hit)
        with self._lock:
            if os.getpid() != self._pid:
                self._after_fork()
            if self._closed:
                self._stats.drop("closed")
                return False
            if not self._budget.admit(encoded.size):
                self._stats.drop("queue_full")
                self._warn_full()
                return False
            self._queue.append(encoded)
            before = self._queue_bytes
            self._queue_bytes += encoded.size
            self._admitted += 1
            self._stats.queued += 1
            count = len(self._queue)
            if count == 1:
                self._since = time.time()
            # Wake the worker when this hit changes what it waits for: a first hit (its age
            # starts the clock), a batch that just became full, a flush or a shutdown.
            wake = (
                count == 1
                or count == self.config.batch_max_hits
                or before < self.config.batch_max_bytes <= self._queue_bytes
                or self._urgent()
            )
        self._ensure_worker(wake)
        return True

    def _warn_full(self) -> None:
        if self._budget.warning_due(time.monotonic(), _WARN_EVERY):
            logger.warning(
                "matomo: the queue is full (%d hits, %d bytes); dropping new hits until Matomo "
                "catches up (see stats().dropped['queue_full'])",
                self._budget.hits,
                self._budget.bytes,
            )

    def _after_fork(self) -> None:
        # The parent's queue belongs to the parent (it delivers it); the child starts empty.
        self._pid = os.getpid()
        self._queue.clear()
        self._queue_bytes = 0
        self._budget = QueueBudget(self.config.queue_max_hits, self.config.queue_max_bytes)
        self._stats = StatsRecorder(secret=self.config.token_auth)
        self._admitted = self._finished = self._flush_target = 0
        self._loop = self._worker = self._wakeup = self._progress = None
        self._senders = set()
        self._window = BatchWindow(self.config)
        self._clients = []

    def _urgent(self) -> bool:
        return self._flush_target > self._finished or self._closed or self.config.sync_mode

    # -- the worker's event loop -----------------------------------------------------------
    def start(self) -> None:
        """Start (or restart after ``aclose``) the worker on the running event loop."""
        with self._lock:
            if os.getpid() != self._pid:
                self._after_fork()
            self._closed = False
        self._ensure_worker(True)

    def _ensure_worker(self, wake: bool) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if running is not None and running is loop:
            worker = self._worker
            if worker is None or worker.done():
                self._start_worker(running)
            elif wake and self._wakeup is not None:
                self._wakeup.set()
            return
        if loop is not None and not loop.is_closed() and loop.is_running():
            # The worker lives on a loop in another thread: wake it there. The hit is queued
            # already; if that loop has just stopped, the next loop to submit takes over.
            if wake:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._wake_on_loop)
            return
        if running is not None:
            self._start_worker(running)
        # No loop anywhere (a plain thread before any request): the hit waits in the queue
        # for the first loop that starts the worker.

    def _wake_on_loop(self) -> None:
        worker = self._worker
        if worker is None or worker.done():
            self._start_worker(asyncio.get_running_loop())
        elif self._wakeup is not None:
            self._wakeup.set()

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            # A client made on another loop holds that loop's connections: make a new one.
            # Batches still running there (a loop stopped without cancelling its tasks) are
            # that loop's: they finish there or never, in their own window.
            self._clients = []
            self._senders = set()
            self._window = BatchWindow(self.config)
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._abandoning = False
        # The task is referenced from self._worker for as long as it runs.
        self._worker = loop.create_task(self._run(), name="matomo-dispatcher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        senders, window = self._senders, self._window
        try:
            while True:
                # Taking a batch and starting its task happen in one step: a cancellation
                # never finds a batch in between.
                batch, size = await self._next_batch()
                task = loop.create_task(self._send(batch, size, window), name="matomo-batch")
                senders.add(task)
                task.add_done_callback(senders.discard)
        finally:
            await self._stop_senders(senders)
            await self._close_own_clients()

    async def _stop_senders(self, senders: set[asyncio.Task[None]]) -> None:
        # Each batch task hands back (or, past the close deadline, gives up) what it holds.
        running = [task for task in senders if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _send(self, batch: list[EncodedHit], size: int, window: BatchWindow) -> None:
        """One batch's task: deliver it, then free its room in the queue and the window."""
        delivery = BatchDelivery(batch, self.config, self._stats)
        try:
            back: list[EncodedHit] = []
            try:
                back = await self._deliver(delivery, window)
            except Exception:
                with self._lock:
                    left = delivery.abandon("error")
                    self._stats.error(f"internal error while delivering; {left} hit(s) dropped")
                logger.debug("matomo: delivery error", exc_info=True)
            self._requeue(batch, size, back)
        except asyncio.CancelledError:
            self._cancelled(batch, delivery)
            raise
        finally:
            with self._lock:
                window.ended(delivery)
                window.finished()
            self._wake_worker(window)

    def _requeue(self, batch: list[EncodedHit], size: int, left: list[EncodedHit]) -> None:
        """A batch is over: its hits ``left`` go back to the front of the queue, the others
        are finished."""
        left_size = sum(h.size for h in left)
        if left:
            with self._lock:
                self._queue.extendleft(reversed(left))
                self._queue_bytes += left_size
        self._finish(len(batch) - len(left), size - left_size)

    def _age(self) -> float:
        # How long the oldest queued hit has waited: since it was made, or since it was
        # queued when it was made long before (a tracker's backdated hit).
        return time.time() - max(self._queue[0].created, self._since)

    def _wake_worker(self, window: BatchWindow) -> None:
        wakeup = self._wakeup
        if wakeup is not None and window is self._window:
            wakeup.set()

    def _cancelled(self, batch: list[EncodedHit], delivery: BatchDelivery | None) -> None:
        if not batch:
            return
        size = sum(h.size for h in batch)
        if self._abandoning:  # the close deadline passed
            with self._lock:
                if delivery is None:
                    self._stats.drop("shutdown", len(batch))
                else:
                    delivery.abandon("shutdown")
            self._finish(len(batch), size)
            return
        # The loop is being torn down (a test client's loop, a server's shutdown without
        # lifespan): keep what is not delivered for the next worker.
        with self._lock:
            left = delivery.take_remaining() if delivery is not None else batch
        self._requeue(batch, size, left)

    def _finish(self, count: int, size: int) -> None:
        with self._lock:
            self._budget.release(count, size)
            self._finished += count
        if self._progress is not None:
            self._progress.set()

    async def _next_batch(self) -> tuple[list[EncodedHit], int]:
        """Wait until the window lets the next batch go; take it off the queue."""
        config = self.config
        wakeup = self._wakeup
        if wakeup is None:  # pragma: no cover - set by _start_worker before the task runs
            raise RuntimeError("worker started without a wakeup event")
        window = self._window
        while True:
            wakeup.clear()
            with self._lock:
                count = len(self._queue)
                delay = window.wait(
                    hits=count,
                    size=self._queue_bytes,
                    age=self._age() if count else 0.0,
                    urgent=self._urgent(),
                )
                if delay is not None and delay <= 0:
                    batch, size = cut_batch(
                        self._queue,
                        max_hits=config.batch_max_hits,
                        max_bytes=config.batch_max_bytes,
                    )
                    self._queue_bytes -= size
                    window.started()
                    return batch, size
            if delay is None:
                await wakeup.wait()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), delay)

    async def _deliver(self, delivery: BatchDelivery, window: BatchWindow) -> list[EncodedHit]:
        """Run the policy until the batch is done; returns the hits handed back to the queue
        (when another batch is already being resent to a failing Matomo)."""
        while True:
            with self._lock:
                step = delivery.next_step(time.time(), self._rng.random())
            if step is None:
                return []
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            outcome = await self._post(step.body)
            with self._lock:
                if isinstance(outcome, Answer):
                    delivery.answered(outcome, time.time())
                else:
                    delivery.failed(outcome[0], outcome[1], time.time())
                if not window.answered(delivery):
                    return delivery.take_remaining()
            self._wake_worker(window)  # Matomo may be back: more batches may go

    # -- HTTP ------------------------------------------------------------------------------
    def _take_client(self) -> httpx.AsyncClient:
        if self._user_client is not None:
            return self._user_client
        if self._clients:
            return self._clients.pop()  # the one used last: its connection is the warmest
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=self.config.timeout,
            limits=_ONE_CONNECTION,
            verify=self._tls,
        )

    def _give_client(self, client: httpx.AsyncClient) -> None:
        if client is not self._user_client:
            self._clients.append(client)

    async def _close_own_clients(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                await client.aclose()
            except Exception:
                logger.debug("matomo: closing an HTTP client failed", exc_info=True)

    async def _post(self, body: bytes) -> Answer | tuple[TransportError, str]:
        client = self._take_client()
        try:
            async with client.stream(
                "POST", self._endpoint, content=body, headers=BULK_HEADERS, follow_redirects=False
            ) as response:
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) >= _MAX_ANSWER_BYTES:
                        break
                return Answer(
                    status=response.status_code,
                    body=bytes(data[:_MAX_ANSWER_BYTES]),
                    retry_after=response.headers.get("retry-after"),
                    location=response.headers.get("location"),
                )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return TransportError.CONNECT, _describe(exc)
        except httpx.TimeoutException as exc:  # read/write timeout: Matomo may have the hits
            return TransportError.TIMEOUT, _describe(exc)
        except Exception as exc:  # other transport errors, a closed or misconfigured client
            return TransportError.OTHER, _describe(exc)
        finally:
            self._give_client(client)

    # -- flushing and closing --------------------------------------------------------------
    async def aflush(self, timeout: float | None = None) -> bool:
        """Wait until every hit submitted before this call is delivered or given up on, at
        most ``timeout`` seconds (default ``config.shutdown_timeout``). Partial batches go out
        at once. Returns whether everything was finished in time."""
        if timeout is None:
            timeout = self.config.shutdown_timeout
        with self._lock:
            target = self._admitted
            if self._finished >= target:
                return True
            self._flush_target = max(self._flush_target, target)
        self._ensure_worker(True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            progress = self._progress if self._loop is loop else None
            if progress is not None:
                progress.clear()
            with self._lock:
                if self._finished >= target:
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if progress is None:
                await asyncio.sleep(min(_POLL, remaining))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)

    async def aclose(self, timeout: float | None = None) -> bool:
        """Refuse new hits, deliver what is queued within ``timeout`` seconds (default
        ``config.shutdown_timeout``), drop what is left (counted as ``shutdown`` and logged)
        and close the HTTP client made here. Returns whether everything was delivered.
        ``start()`` opens the dispatcher again."""
        if timeout is None:
            timeout = self.config.shutdown_timeout
        with self._lock:
            self._closed = True
            before = self._stats.dropped["shutdown"]
        done = await self.aflush(timeout)
        worker = self._worker
        if worker is not None and not worker.done():
            if worker.get_loop() is asyncio.get_running_loop():
                self._abandoning = True
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            else:  # a worker on a loop in another thread: ask it to stop there
                with contextlib.suppress(RuntimeError):
                    worker.get_loop().call_soon_threadsafe(self._abandon_on_loop)
        self._worker = None
        with self._lock:
            left = len(self._queue)
            if left:
                self._stats.drop("shutdown", left)
                self._budget.release(left, self._queue_bytes)
                self._finished += left
                self._queue.clear()
                self._queue_bytes = 0
            lost = self._stats.dropped["shutdown"] - before
        if lost:
            logger.warning(
                "matomo: shutdown deadline of %.1f s reached; %d hit(s) were not delivered",
                timeout,
                lost,
            )
        await self._close_own_clients()
        return done

    def _abandon_on_loop(self) -> None:
        worker = self._worker
        self._abandoning = True
        if worker is not None:
            worker.cancel()

    # -- state -----------------------------------------------------------------------------
    def stats(self) -> DispatchStats:
        """What was queued, sent, retried and dropped so far."""
        with self._lock:
            return self._stats.snapshot()

    @property
    def pending(self) -> int:
        """Hits submitted and not yet delivered or given up on."""
        with self._lock:
            return self._admitted - self._finished


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
