"""The delivery engine (``DeliveryQueue``) driven as an executor drives it, with plain asserts:
admission within the caps, lanes by visitor, the batch window, retries with backoff and the
probe, possible duplicates, the stall rule, flush targets, the shutdown deadline, events."""

from __future__ import annotations

import json
import logging

import pytest

from matomo_tracking import Hit, TrackingConfig, encode_hit
from matomo_tracking.answers import Answer, TransportError, transport_error
from matomo_tracking.delivery_queue import (
    Admission,
    Batch,
    DeliveryEvent,
    DeliveryQueue,
    EventKind,
    Wait,
)
from matomo_tracking.wire import EncodedHit
from tests.core.builders import MATOMO, NOW


def good(batch: Batch) -> Answer:
    return Answer(200, json.dumps({"tracked": batch.count, "invalid": 0}).encode())


def hit(n: int, visitor: str | None = None, *, created: float | None = None) -> EncodedHit:
    params = {"idsite": "1", "rec": "1", "url": f"http://example.org/{n}"}
    params["_id"] = visitor if visitor is not None else f"{n:016x}"
    return encode_hit(Hit(params, NOW + n / 1000 if created is None else created))


def queue(**options: object) -> DeliveryQueue:
    settings: dict[str, object] = {"url": MATOMO, "backoff_base": 1.0, "backoff_max": 8.0}
    settings.update(options)
    return DeliveryQueue(TrackingConfig(**settings))  # type: ignore[arg-type]


def urls(batch: Batch) -> list[str]:
    return [entry["url"].rsplit("/", 1)[1] for entry in json.loads(batch.body)["requests"]]


def batch_now(q: DeliveryQueue, now: float = NOW, draw: float = 0.5) -> Batch:
    step = q.next_step(now, draw)
    assert isinstance(step, Batch), step
    return step


def test_admission_within_the_caps_counts_every_drop() -> None:
    q = queue(queue_max_hits=3, batch_max_hits=2)
    assert [q.admit(hit(n), NOW) for n in range(4)] == [
        Admission.WAKE,  # the first hit starts the age clock
        Admission.WAKE,  # a full batch waits
        Admission.QUEUED,
        Admission.DROPPED,
    ]
    q.close(NOW + 5)
    assert q.admit(hit(5), NOW) is Admission.DROPPED
    stats = q.stats()
    assert (stats.queued, stats.dropped) == (3, {"queue_full": 1, "closed": 1})
    assert q.pending == 3


def test_hits_in_flight_hold_their_room_until_settled() -> None:
    q = queue(queue_max_hits=2, batch_max_hits=2)
    q.admit(hit(0), NOW)
    q.admit(hit(1), NOW)
    batch = batch_now(q)
    assert not q.admit(hit(2), NOW)  # still held while in flight
    q.answered(batch, good(batch), NOW + 0.1)
    assert q.pending == 0
    assert q.held_bytes == 0
    assert q.admit(hit(3), NOW)


def test_a_partial_batch_waits_for_its_age_a_full_one_goes_at_once() -> None:
    q = queue(batch_max_hits=3, batch_max_age=1.0)
    q.admit(hit(0), NOW)
    assert q.next_step(NOW + 0.25, 0.5) == Wait(0.75)
    assert urls(batch_now(q, NOW + 1.0)) == ["0"]
    q2 = queue(batch_max_hits=3)
    for n in range(3):
        q2.admit(hit(n), NOW)
    assert urls(batch_now(q2)) == ["0", "1", "2"]


def test_a_flush_sends_partial_batches_at_once_and_says_when_it_is_done() -> None:
    q = queue(batch_max_hits=10)
    q.admit(hit(0), NOW)
    target = q.flush_target()
    batch = batch_now(q)
    assert not q.flushed(target)
    q.answered(batch, good(batch), NOW)
    assert q.flushed(target)
    assert q.next_step(NOW, 0.5) == Wait(None)


def test_a_visitors_hits_stay_in_one_lane_in_order_while_lanes_are_busy() -> None:
    q = queue(batch_max_hits=2, max_concurrent_batches=4)
    visitors = ["a" * 16, "b" * 16, "c" * 16]
    for i in range(12):
        q.admit(hit(i, visitors[i % 3]), NOW)
    first = batch_now(q)
    assert q.next_step(NOW, 0.5) == Wait(None)  # one at a time until Matomo answers
    q.answered(first, good(first), NOW + 0.1)
    seen: list[list[str]] = [urls(first)]
    flying = [batch_now(q, NOW + 0.1), batch_now(q, NOW + 0.1)]  # a backlog: one more lane
    assert q.next_step(NOW + 0.1, 0.5) == Wait(None)
    while flying:
        done = flying.pop(0)
        seen.append(urls(done))
        q.answered(done, good(done), NOW + 0.2)
        while isinstance(step := q.next_step(NOW + 0.2, 0.5), Batch):
            flying.append(step)
        assert len(flying) <= 3
        lanes = [lane for b in flying for lane in b.lanes]
        assert len(lanes) == len(set(lanes))  # one batch in flight per lane
    by_visitor: dict[int, list[int]] = {}
    for numbers in seen:
        for number in numbers:
            by_visitor.setdefault(int(number) % 3, []).append(int(number))
    assert by_visitor == {v: list(range(v, 12, 3)) for v in range(3)}  # each in order
    assert q.stats().sent == 12


def test_lanes_grow_only_with_answers_and_never_past_the_limit() -> None:
    q = queue(batch_max_hits=1, max_concurrent_batches=3)
    for n in range(20):
        q.admit(hit(n), NOW)
    in_flight = [batch_now(q)]
    assert q.next_step(NOW, 0.5) == Wait(None)
    widths = []
    for _ in range(8):
        done = in_flight.pop(0)
        q.answered(done, good(done), NOW + 0.1)
        while isinstance(step := q.next_step(NOW + 0.1, 0.5), Batch):
            in_flight.append(step)
        widths.append(len(in_flight))
    assert widths[:3] == [2, 3, 3]
    assert max(widths) == 3


def test_a_batch_unanswered_for_long_stops_further_lanes() -> None:
    q = queue(batch_max_hits=1, max_concurrent_batches=4)
    for n in range(10):
        q.admit(hit(n), NOW)
    first = batch_now(q)
    q.answered(first, good(first), NOW + 0.1)  # backlog: two lanes allowed
    batch_now(q, NOW + 0.1)
    assert isinstance(q.next_step(NOW + 0.2, 0.5), Batch)  # the second lane opens...
    q2 = queue(batch_max_hits=1, max_concurrent_batches=4)
    for n in range(10):
        q2.admit(hit(n), NOW)
    first = batch_now(q2)
    q2.answered(first, good(first), NOW + 0.1)
    hanging = batch_now(q2, NOW + 0.1)
    # ...unless the batch in flight has gone unanswered for long: Matomo hangs
    assert q2.next_step(NOW + 3.0, 0.5) == Wait(None)
    q2.answered(hanging, good(hanging), NOW + 3.5)
    assert q2.in_flight == 0


def test_a_failure_requeues_in_order_backs_off_and_probes_with_one_hit() -> None:
    q = queue(batch_max_hits=5, probe_interval=2.0, backoff_base=8.0, backoff_max=60.0)
    for n in range(10):
        q.admit(hit(n, "v" * 16), NOW)
    batch = batch_now(q)
    q.failed(batch, TransportError.CONNECT, "refused", NOW)
    assert q.failing
    assert q.pending == 10
    assert q.next_step(NOW + 0.1, 0.5) == Wait(pytest.approx(1.9))  # type: ignore[arg-type]  # the probe is due first
    probe = batch_now(q, NOW + 2.0)
    assert (probe.probe, urls(probe)) == (True, ["0"])
    assert q.next_step(NOW + 2.0, 0.5) == Wait(None)  # one request at a time
    q.answered(probe, Answer(503), NOW + 2.1)
    assert q.next_step(NOW + 2.1, 0.5) == Wait(pytest.approx(1.9))  # type: ignore[arg-type]  # the backlog: at NOW+4
    backlog = batch_now(q, NOW + 4.0)
    assert urls(backlog) == ["0", "1", "2", "3", "4"]  # still in order
    q.answered(backlog, Answer(503), NOW + 4.0)
    probe = batch_now(q, NOW + 6.0)
    q.answered(probe, good(probe), NOW + 6.1)  # Matomo is back: seen within a probe interval
    assert not q.failing
    rest = batch_now(q, NOW + 6.1)
    assert urls(rest) == ["1", "2", "3", "4", "5"]
    stats = q.stats()
    assert (stats.sent, stats.retried, stats.possible_duplicates) == (1, 3, 0)


def test_retry_after_delays_the_probe() -> None:
    q = queue(probe_interval=2.0)
    q.admit(hit(0), NOW)
    q.flush_target()
    batch = batch_now(q)
    q.answered(batch, Answer(429, retry_after="5"), NOW)
    step = q.next_step(NOW, 0.0)
    assert isinstance(step, Wait)
    assert step.seconds == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("outcome", "duplicates"),
    [
        (TransportError.CONNECT, 0),
        (TransportError.OTHER, 0),
        (TransportError.TIMEOUT, 3),
        (TransportError.CUT, 3),
        (Answer(504), 3),
        (Answer(502), 3),
        (Answer(503), 0),
    ],
)
def test_batches_that_may_have_been_processed_count_as_possible_duplicates(
    outcome: TransportError | Answer, duplicates: int
) -> None:
    q = queue()
    for n in range(3):
        q.admit(hit(n), NOW)
    q.flush_target()
    batch = batch_now(q)
    if isinstance(outcome, Answer):
        q.answered(batch, outcome, NOW)
    else:
        q.failed(batch, outcome, "detail", NOW)
    assert q.stats().possible_duplicates == duplicates
    assert q.pending == 3


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ConnectError", TransportError.CONNECT),
        ("PoolTimeout", TransportError.CONNECT),
        ("ReadTimeout", TransportError.TIMEOUT),
        ("RemoteProtocolError", TransportError.CUT),
        ("ReadError", TransportError.CUT),
        ("WriteError", TransportError.OTHER),
        ("RuntimeError", TransportError.OTHER),
    ],
)
def test_transport_errors_are_classified_by_class_name(name: str, kind: TransportError) -> None:
    exc = type(name, (Exception,), {})("boom")
    assert transport_error(exc) == (kind, f"{name}: boom")


def test_413_halves_the_batch_and_a_single_hit_is_dropped() -> None:
    q = queue(batch_max_hits=4)
    for n in range(4):
        q.admit(hit(n, "v" * 16), NOW)
    batch = batch_now(q)
    q.answered(batch, Answer(413), NOW)
    half = batch_now(q)
    assert urls(half) == ["0", "1"]
    q.answered(half, Answer(413), NOW)
    one = batch_now(q)
    q.answered(one, Answer(413), NOW)
    assert q.stats().dropped == {"too_large": 1}


def test_a_refusal_fails_the_batch_for_good() -> None:
    q = queue()
    q.admit(hit(0), NOW)
    q.flush_target()
    batch = batch_now(q)
    q.answered(batch, Answer(403), NOW)
    stats = q.stats()
    assert (stats.failed, q.pending, q.failing) == (1, 0, False)
    assert "403" in (stats.last_error or "")


def test_the_shutdown_deadline_gives_up_on_everything_once() -> None:
    q = queue(batch_max_hits=2)
    for n in range(5):
        q.admit(hit(n), NOW)
    flying = batch_now(q)
    target = q.close(NOW + 1.0)
    assert flying.timeout <= 30.0
    assert q.next_step(NOW + 1.0, 0.5) == Wait(None)
    assert q.flushed(target)
    q.answered(flying, good(flying), NOW + 2.0)  # too late: counted as given up already
    stats = q.stats()
    assert (stats.sent, stats.dropped) == (0, {"shutdown": 5})
    assert q.pending == 0


def test_closing_gives_up_at_once_when_no_retry_is_due_before_the_deadline() -> None:
    q = queue(backoff_base=10.0, backoff_max=10.0, probe_interval=5.0)
    q.admit(hit(0), NOW)
    q.flush_target()
    batch = batch_now(q)
    q.failed(batch, TransportError.CONNECT, "refused", NOW)
    q.close(NOW + 2.0)
    assert q.next_step(NOW + 0.1, 0.5) == Wait(None)
    assert q.stats().dropped == {"shutdown": 1}


def test_hits_too_old_for_matomo_are_dropped_without_a_token() -> None:
    q = queue()
    q.admit(hit(0, created=NOW - 24 * 3600), NOW)
    q.admit(hit(1), NOW)
    q.flush_target()
    batch = batch_now(q)
    assert urls(batch) == ["1"]
    assert q.stats().dropped == {"too_old": 1}


def test_listeners_see_every_outcome() -> None:
    q = queue(batch_max_hits=2)
    events: list[DeliveryEvent] = []
    q.listeners.append(events.append)
    q.admit(hit(0), NOW)
    q.admit(hit(1), NOW)
    batch = batch_now(q)
    q.answered(batch, Answer(200, b'{"tracked":1,"invalid":1}'), NOW + 0.25)
    kinds = [(e.kind, e.count) for e in events]
    assert kinds == [
        (EventKind.QUEUED, 1),
        (EventKind.QUEUED, 1),
        (EventKind.ROUND_TRIP, 2),
        (EventKind.SENT, 2),
        (EventKind.INVALID, 1),
    ]
    assert (events[2].status, events[2].seconds) == (200, 0.25)
    assert q.stats().invalid == 1


def test_a_backlog_matomo_cannot_keep_up_with_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    q = queue(batch_max_hits=10, max_concurrent_batches=1)
    now = NOW
    n = 0
    with caplog.at_level(logging.WARNING, logger="matomo_tracking.delivery"):
        for _ in range(25):
            for _ in range(30):  # 30 hits a second arrive, 10 are delivered
                q.admit(hit(n), now)
                n += 1
            batch = batch_now(q, now)
            q.answered(batch, good(batch), now + 0.5)
            now += 1.0
    warnings = [r.getMessage() for r in caplog.records if "cannot keep up" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert "arrive at 30/s" in warnings[0]
    assert "takes 10/s" in warnings[0]
    assert "QueuedTracking" in warnings[0]


def test_overflow_keeps_what_memory_cannot_and_restore_brings_it_back() -> None:
    q = queue(queue_max_hits=2, batch_max_hits=2)
    q.overflow = []
    for n in range(4):
        assert q.admit(hit(n), NOW)
    assert [urls_of(q.overflow)] == [["2", "3"]]
    assert (q.held, q.pending, q.stats().dropped) == (2, 4, {})
    batch = batch_now(q)
    q.answered(batch, good(batch), NOW)
    assert q.restore(q.overflow, NOW, new=False) == 2
    assert q.restore([hit(9)], NOW, new=True) == 0  # no room left
    rest = batch_now(q)
    assert urls(rest) == ["2", "3"]
    q.answered(rest, good(rest), NOW)
    assert (q.pending, q.stats().queued, q.stats().sent) == (0, 4, 4)


def urls_of(hits: list[EncodedHit]) -> list[str]:
    return [json.loads(h.data)["url"].rsplit("/", 1)[1] for h in hits]


CUTS = [
    # hits per request (one visitor), batch_max_hits, batches cut
    ([1, 1, 1, 1, 1], 2, [2, 2, 1]),
    ([3, 1], 3, [3, 1]),
    ([1, 1, 1], 3, [3]),
    ([2, 2, 2], 3, [2, 2, 2]),  # cut before a request's hits, not between them
    ([1, 3], 3, [1, 3]),
    ([4, 1], 3, [3, 2]),  # a request with more hits than a batch fills it on its own
    ([1, 4], 3, [1, 3, 1]),
]


@pytest.mark.parametrize(("requests", "max_hits", "cuts"), CUTS, ids=[str(c[0]) for c in CUTS])
def test_a_requests_hits_travel_in_one_batch(
    requests: list[int], max_hits: int, cuts: list[int]
) -> None:
    q = queue(batch_max_hits=max_hits)
    n = 0
    for request, size in enumerate(requests):  # a page view and its events: one time
        for _ in range(size):
            q.admit(hit(n, "v" * 16, created=NOW + request), NOW + 10)
            n += 1
    q.flush_target()
    counts = []
    while isinstance(step := q.next_step(NOW + 10, 0.5), Batch):
        counts.append(step.count)
        q.answered(step, good(step), NOW + 10)
    assert counts == cuts


def test_the_queue_full_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    q = queue(queue_max_hits=1, batch_max_hits=1)
    q.admit(hit(0), NOW)
    with caplog.at_level(logging.WARNING, logger="matomo_tracking.delivery"):
        for t in (100.0, 130.0, 159.9, 160.0, 161.0):
            q.admit(hit(1), NOW + t)
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 2
    assert q.stats().dropped == {"queue_full": 5}
