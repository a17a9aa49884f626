"""The sender outside the app (``matomo-middleware send``): delivers the hits an app wrote to a
journal (``spool=`` with ``sender="external"``) with the thread executor, the same core loop
the apps run. Several senders (and apps) may share one journal: rows are claimed with leases.

It logs counts, never hits or the token; it stops on SIGTERM or SIGINT within
``shutdown_timeout``, what is left staying in the journal for its next start.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.journal import Journal
from matomo_tracking.metrics import OpenTelemetryMetrics, PrometheusMetrics
from matomo_wsgi.dispatcher import ThreadDispatcher

__all__ = ["SendResult", "send"]

logger = logging.getLogger("matomo_wsgi.sender")

#: Seconds between two looks at the journal while draining, and between two count lines.
_POLL = 0.1
_REPORT_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class SendResult:
    """How a sender run ended: its process's ``stats``, the hits ``left`` in the journal, and
    the exit status (0: all delivered, or stopped by a signal; 1: Matomo refused hits, or did
    not answer, with ``once``; 2: it could not start)."""

    status: int
    stats: DispatchStats | None = None
    left: int = 0


def send(
    spool: str,
    *,
    url: str,
    token_auth: str | None,
    once: bool = False,
    timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.time,
    metrics: PrometheusMetrics | OpenTelemetryMetrics | None = None,
) -> SendResult:
    """Deliver the journal at ``spool`` to the Matomo at ``url``: until ``stop`` is set (or a
    SIGTERM/SIGINT when called from the main thread), or with ``once`` until the journal
    is drained, or Matomo has failed for ``timeout`` seconds. ``metrics``: delivery metrics
    to feed (``matomo_tracking.metrics``), the journal's bytes included."""
    try:
        config = TrackingConfig(
            url=url,
            token_auth=token_auth,
            spool=spool,
            timeout=timeout,
            shutdown_timeout=shutdown_timeout,
        )
        journal = Journal(spool, max_bytes=config.spool_max_bytes)
    except ValueError as exc:  # JournalError included: it says what to do
        logger.error("matomo: %s", exc)
        return SendResult(2)
    try:
        if token_auth is None:
            needing = journal.needing_token(clock(), max_age=config.max_hit_age)
            if needing:
                logger.error(
                    "matomo: the journal %s holds %d hit(s) that Matomo accepts only with a "
                    "token (visitor IPs or locations, or older than %.0f h): set "
                    "MATOMO_TOKEN_AUTH or pass --token-file",
                    journal.path,
                    needing,
                    config.max_hit_age / 3600,
                )
                return SendResult(2)
        stop = stop if stop is not None else _stop_on_signals()
        dispatcher = ThreadDispatcher(config)
        if metrics is not None:
            metrics.attach(dispatcher)
        status = _run(dispatcher, journal, once=once, stop=stop, clock=clock, metrics=metrics)
        dispatcher.close()
        stats = dispatcher.stats()
        counts = journal.counts(clock())
        left = counts.rows if counts is not None else -1
    finally:
        journal.close()
    logger.info(
        "matomo: sender stopped: %d sent, %d invalid, %d failed, %d possible duplicate(s), "
        "dropped %s; %d hit(s) left in the journal",
        stats.sent,
        stats.invalid,
        stats.failed,
        stats.possible_duplicates,
        dict(stats.dropped) or "none",
        left,
    )
    if once and (stats.failed or stats.invalid):
        status = 1
    return SendResult(status, stats, left)


def _run(
    dispatcher: ThreadDispatcher,
    journal: Journal,
    *,
    once: bool,
    stop: threading.Event,
    clock: Callable[[], float],
    metrics: PrometheusMetrics | OpenTelemetryMetrics | None = None,
) -> int:
    """Keep the executor going until told to stop; 1 when ``once`` gave up on a failing
    Matomo."""
    dispatcher.start()
    failing_since: float | None = None
    report_at = clock() + _REPORT_EVERY
    while not stop.wait(_POLL):
        now = clock()
        if metrics is not None:
            measured = journal.counts(now)
            if measured is not None:
                metrics.journal_bytes(journal.path, measured.bytes)
        if now >= report_at:
            report_at = now + _REPORT_EVERY
            stats = dispatcher.stats()
            logger.info(
                "matomo: sender: %d sent, %d retried, %d waiting in this process",
                stats.sent,
                stats.retried,
                dispatcher.pending,
            )
        if not once:
            continue
        with dispatcher.lock:
            failing = dispatcher.queue.failing
        if failing:
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= dispatcher.config.timeout:
                logger.warning(
                    "matomo: Matomo has failed for %.0f s: stopping, the rest stays in the journal",
                    now - failing_since,
                )
                return 1
            continue
        failing_since = None
        counts = journal.counts(now)
        if counts is not None and counts.rows == 0 and dispatcher.pending == 0:
            return 0
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    return stop
