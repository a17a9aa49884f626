"""Delivery health as metrics: Prometheus (extra ``prometheus``) or OpenTelemetry (extra
``otel``), fed by the delivery outcome events of the core's ``DeliveryQueue``.

Off by default. Each class is a queue listener: ``metrics.attach(dispatcher)`` subscribes it
to a dispatcher's queue (any executor exposing ``queue`` and ``lock``), or call
``metrics.record(event)`` from your own listener. The counters count what ``stats()`` counts,
event for event: hits queued, sent, invalid, unconfirmed, possible duplicates, failed,
dropped (by ``reason``), and batches sent and retried; a histogram takes each batch's round
trip (by the answer's ``status``, ``0`` when none came); gauges say how many hits the queue
holds and how many bytes each journal holds (``journal_bytes(path, size)``).

The metric library is imported when a class is made, never before: without the extra, the
constructor raises ``ImportError`` naming the extra to install. Listeners run under the
executor's lock, so recording is a few counter increments.

Prometheus under gunicorn (several worker processes): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory before the workers start and expose the registry with
``prometheus_client.multiprocess.MultiProcessCollector``. Counters and the histogram then add
up over the workers; the queue gauge is the sum over live workers (``livesum``: each worker has
its own memory queue); a journal's gauge is its most recent figure (``livemostrecent``: the
workers share one file, so summing it would count it once per worker).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from matomo_tracking.delivery_queue import DeliveryEvent, EventKind

__all__ = ["OpenTelemetryMetrics", "PrometheusMetrics"]

logger = logging.getLogger(__name__)

#: Round-trip buckets, seconds: a healthy Matomo answers a batch in tens of milliseconds, a
#: struggling one in seconds, and ``timeout`` (30 s) ends the wait.
ROUND_TRIP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# What each counted event kind is called: hits, except ``retried`` (one per batch resent).
_HIT_COUNTERS = {
    EventKind.QUEUED: "queued",
    EventKind.SENT: "sent",
    EventKind.INVALID: "invalid",
    EventKind.UNCONFIRMED: "unconfirmed",
    EventKind.POSSIBLE_DUPLICATE: "possible_duplicates",
    EventKind.FAILED: "failed",
}
_DESCRIPTIONS = {
    "queued": "Hits admitted to the delivery queue",
    "sent": "Hits in batches Matomo answered with a 2xx",
    "invalid": "Hits Matomo counted as invalid",
    "unconfirmed": "Hits a 2xx answer did not count (not resent)",
    "possible_duplicates": "Hits resent after Matomo may have recorded them",
    "failed": "Hits Matomo refused for good",
    "dropped": "Hits never delivered, by reason",
    "batches": "Bulk requests Matomo answered with a 2xx",
    "retried": "Batches put back for a resend",
    "round_trip": "Seconds from posting a batch to Matomo's answer, by status (0: no answer)",
    "queue": "Hits the delivery queue holds (waiting, in flight, overflowing to a journal)",
    "journal": "Bytes of encoded hits a journal holds",
}


class _Attachable(Protocol):
    @property
    def queue(self) -> Any: ...
    @property
    def lock(self) -> Any: ...


def _missing(module: str, extra: str, package: str) -> ImportError:
    return ImportError(
        f"{module} is not installed: pip install 'matomo-middleware[{extra}]' (or {package})"
    )


class _Metrics:
    """What both backends share: turning events into increments, attaching to a queue."""

    def __init__(self) -> None:
        self._dispatcher: Any = None

    def attach(self, dispatcher: _Attachable) -> None:
        """Subscribe to ``dispatcher``'s queue (its ``queue.listeners``, under its ``lock``)
        and report its depth. Raises ``TypeError`` for an object without them."""
        queue: Any = getattr(dispatcher, "queue", None)
        lock: Any = getattr(dispatcher, "lock", None)
        listeners = getattr(queue, "listeners", None)
        if not isinstance(listeners, list) or lock is None:
            raise TypeError(
                f"{type(dispatcher).__name__} has no delivery queue to attach metrics to: "
                "expected a dispatcher with .queue (a DeliveryQueue) and .lock"
            )
        with lock:
            # The dispatcher, not its queue: a forked child's dispatcher has a queue of its own
            # (which keeps this listener), and the depth is read from that one.
            self._dispatcher = dispatcher
            listeners.append(self.record)
            self._depth(queue.pending)

    def record(self, event: DeliveryEvent) -> None:
        """Count one delivery event (a ``DeliveryQueue`` listener). Never raises."""
        try:
            kind = event.kind
            name = _HIT_COUNTERS.get(kind)
            if name is not None:
                self._add(name, event.count)
                if kind == EventKind.SENT:
                    self._add("batches", 1)
            elif kind == EventKind.DROPPED:
                self._add("dropped", event.count, reason=event.reason or "unknown")
            elif kind == EventKind.RETRIED:
                self._add("retried", 1)
            elif kind == EventKind.ROUND_TRIP:
                self._round_trip(event.seconds, event.status)
            queue = getattr(self._dispatcher, "queue", None)
            if queue is not None:
                self._depth(queue.pending)
        except Exception:  # metrics never break delivery
            logger.debug("matomo: recording a delivery metric failed", exc_info=True)

    def journal_bytes(self, path: str, size: int) -> None:
        """Report the bytes of encoded hits the journal at ``path`` holds."""
        self._journal(path, size)

    def _add(self, name: str, count: int, reason: str | None = None) -> None:
        raise NotImplementedError

    def _round_trip(self, seconds: float, status: int) -> None:
        raise NotImplementedError

    def _depth(self, pending: int) -> None:
        raise NotImplementedError

    def _journal(self, path: str, size: int) -> None:
        raise NotImplementedError


class PrometheusMetrics(_Metrics):
    """Delivery metrics for Prometheus (extra ``prometheus``).

    ``registry``: where the metrics are registered (default: ``prometheus_client``'s global
    ``REGISTRY``, what ``start_http_server`` and ``make_wsgi_app`` expose); ``namespace``:
    their prefix. Names: ``<namespace>_hits_<what>_total`` (queued, sent, invalid,
    unconfirmed, possible_duplicates, failed, dropped with a ``reason`` label),
    ``<namespace>_batches_total``, ``<namespace>_batches_retried_total``,
    ``<namespace>_batch_round_trip_seconds`` (``status`` label), ``<namespace>_queue_hits``
    and ``<namespace>_journal_bytes`` (``journal`` label). Make one per process and registry.
    """

    def __init__(self, *, registry: Any = None, namespace: str = "matomo") -> None:
        try:
            import prometheus_client as client
        except ImportError as exc:
            raise _missing("prometheus_client", "prometheus", "prometheus-client") from exc
        super().__init__()
        options: dict[str, Any] = {"namespace": namespace}
        if registry is not None:
            options["registry"] = registry
        counter, gauge = client.Counter, client.Gauge
        self._counters: dict[str, Any] = {
            name: counter(f"hits_{name}", _DESCRIPTIONS[name], **options)
            for name in _HIT_COUNTERS.values()
        }
        self._dropped = counter("hits_dropped", _DESCRIPTIONS["dropped"], ["reason"], **options)
        self._counters["batches"] = counter("batches", _DESCRIPTIONS["batches"], **options)
        self._counters["retried"] = counter("batches_retried", _DESCRIPTIONS["retried"], **options)
        self._histogram = client.Histogram(
            "batch_round_trip_seconds",
            _DESCRIPTIONS["round_trip"],
            ["status"],
            buckets=ROUND_TRIP_BUCKETS,
            **options,
        )
        self._queue_gauge = gauge(
            "queue_hits", _DESCRIPTIONS["queue"], multiprocess_mode="livesum", **options
        )
        self._journal_gauge = gauge(
            "journal_bytes",
            _DESCRIPTIONS["journal"],
            ["journal"],
            multiprocess_mode="livemostrecent",
            **options,
        )

    def _add(self, name: str, count: int, reason: str | None = None) -> None:
        if reason is not None:
            self._dropped.labels(reason=reason).inc(count)
        else:
            self._counters[name].inc(count)

    def _round_trip(self, seconds: float, status: int) -> None:
        self._histogram.labels(status=str(status)).observe(seconds)

    def _depth(self, pending: int) -> None:
        self._queue_gauge.set(pending)

    def _journal(self, path: str, size: int) -> None:
        self._journal_gauge.labels(journal=path).set(size)


class OpenTelemetryMetrics(_Metrics):
    """Delivery metrics through OpenTelemetry (extra ``otel``): the same instruments, made
    with ``meter_provider`` (default: the global one, ``opentelemetry.metrics``).

    Counters ``matomo.hits.<what>`` (``{hit}``; dropped with a ``reason`` attribute),
    ``matomo.batches`` and ``matomo.batches.retried``, the histogram
    ``matomo.batch.round_trip`` (seconds, ``status`` attribute), and the up-down counters
    ``matomo.queue.hits`` and ``matomo.journal.bytes`` (``journal`` attribute).
    """

    def __init__(self, *, meter_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics as api
        except ImportError as exc:
            raise _missing("opentelemetry", "otel", "opentelemetry-api") from exc
        super().__init__()
        from matomo_tracking._version import __version__

        provider = meter_provider if meter_provider is not None else api.get_meter_provider()
        meter = provider.get_meter("matomo_middleware", __version__)
        self._counters: dict[str, Any] = {
            name: meter.create_counter(f"matomo.hits.{name}", "{hit}", _DESCRIPTIONS[name])
            for name in (*_HIT_COUNTERS.values(), "dropped")
        }
        self._counters["batches"] = meter.create_counter(
            "matomo.batches", "{batch}", _DESCRIPTIONS["batches"]
        )
        self._counters["retried"] = meter.create_counter(
            "matomo.batches.retried", "{batch}", _DESCRIPTIONS["retried"]
        )
        self._histogram = meter.create_histogram(
            "matomo.batch.round_trip", "s", _DESCRIPTIONS["round_trip"]
        )
        self._queue_counter = meter.create_up_down_counter(
            "matomo.queue.hits", "{hit}", _DESCRIPTIONS["queue"]
        )
        self._journal_counter = meter.create_up_down_counter(
            "matomo.journal.bytes", "By", _DESCRIPTIONS["journal"]
        )
        self._last_depth = 0
        self._last_journal: dict[str, int] = {}

    def _add(self, name: str, count: int, reason: str | None = None) -> None:
        attributes = None if reason is None else {"reason": reason}
        self._counters[name].add(count, attributes)

    def _round_trip(self, seconds: float, status: int) -> None:
        self._histogram.record(seconds, {"status": status})

    def _depth(self, pending: int) -> None:
        change, self._last_depth = pending - self._last_depth, pending
        if change:
            self._queue_counter.add(change)

    def _journal(self, path: str, size: int) -> None:
        change = size - self._last_journal.get(path, 0)
        self._last_journal[path] = size
        if change:
            self._journal_counter.add(change, {"journal": path})
