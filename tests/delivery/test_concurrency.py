"""Lanes and batches side by side, against every executor: a backlog goes out in several
batches at once (never more than ``max_concurrent_batches``, lanes added only with answers), a
visitor's hits arrive in order while several lanes are busy, a shallow queue goes one batch at
a time, a failing or hanging Matomo gets one request at a time, the hits of batches in flight
count against the queue caps, and the shutdown deadline covers the batch in flight."""

from __future__ import annotations

import threading
import time

from matomo_tracking.testing import CollectorServer
from tests.delivery.conftest import Driver, Make, hit, wait_until


def urls(matomo: CollectorServer) -> list[str]:
    return [h["url"] for h in matomo.collector.hits]


def expected(count: int, start: int = 0) -> list[str]:
    return [f"http://shop.test/{n}" for n in range(start, start + count)]


def open_window(dispatcher: Driver, matomo: CollectorServer) -> None:
    """Have Matomo answer one batch (and forget it)."""
    assert dispatcher.submit(hit(-1))
    assert dispatcher.flush(5.0)
    matomo.collector.clear()


def test_a_backlog_goes_out_in_batches_side_by_side_up_to_the_cap(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.collector.slow(0.2)
    dispatcher = make(batch_max_hits=10, batch_max_age=5.0, max_concurrent_batches=4)
    started = time.monotonic()
    for n in range(200):
        assert dispatcher.submit(hit(n))
    senders = 0
    while dispatcher.pending and time.monotonic() - started < 10:
        alive = [t for t in threading.enumerate() if t.name == "matomo-sender"]
        senders = max(senders, len(alive))
        time.sleep(0.01)
    assert dispatcher.flush(10.0)
    elapsed = time.monotonic() - started

    assert sorted(urls(matomo)) == sorted(expected(200))  # every hit, once
    assert matomo.collector.max_in_progress == 4  # side by side, never more than the cap
    assert elapsed < 20 * 0.2 * 0.75  # one batch at a time would take 4 s
    stats = dispatcher.stats()
    assert (stats.sent, stats.batches, stats.retried, stats.dropped) == (200, 20, 0, {})
    assert dispatcher.pending == 0
    if dispatcher.kind == "thread":
        assert 1 < senders <= 4  # sender threads, started as needed


def test_a_visitors_hits_arrive_in_order_while_several_lanes_are_busy(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.collector.slow(0.05)
    dispatcher = make(batch_max_hits=10, max_concurrent_batches=4)
    visitors = [f"{v + 1:016x}" for v in range(12)]
    sent: dict[str, list[str]] = {v: [] for v in visitors}
    for n in range(600):  # a backlog: lanes open as answers come
        visitor = visitors[n % len(visitors)]
        assert dispatcher.submit(hit(n, visitor=visitor))
        sent[visitor].append(f"http://shop.test/{n}")
    assert dispatcher.flush(15.0)

    arrived: dict[str, list[str]] = {v: [] for v in visitors}
    for received in matomo.collector.hits:
        arrived[received["_id"]].append(received["url"])
    assert arrived == sent  # every visitor's hits, once each, in the order they came
    assert matomo.collector.max_in_progress > 1  # while several lanes were busy


def test_a_shallow_queue_sends_one_batch_at_a_time(make: Make, matomo: CollectorServer) -> None:
    matomo.collector.slow(0.2)
    dispatcher = make(batch_max_hits=100, batch_max_age=0.05)
    open_window(dispatcher, matomo)
    for n in range(60):  # 50 hits/s: never a full batch waiting
        assert dispatcher.submit(hit(n))
        time.sleep(0.02)
    wait_until(lambda: dispatcher.pending == 0, 5.0)  # no flush: it would send at once

    assert urls(matomo) == expected(60)  # one batch after the other: in order
    assert matomo.collector.max_in_progress == 1
    assert dispatcher.stats().batches >= 1 + 3


def test_a_failing_matomo_gets_one_request_at_a_time_with_backoff(
    make: Make, matomo: CollectorServer
) -> None:
    dispatcher = make(batch_max_hits=10, max_concurrent_batches=8)
    matomo.collector.slow(0.05)
    for n in range(200):  # lanes open while the backlog goes out
        assert dispatcher.submit(hit(n))
    wait_until(lambda: matomo.collector.max_in_progress > 1)
    matomo.collector.fail_with(503)  # several batches in flight when Matomo fails
    time.sleep(0.5)
    matomo.collector.clear()  # after the first failures: what a failing Matomo gets
    time.sleep(1.5)

    resent = len(matomo.collector.answered)
    assert matomo.collector.max_in_progress == 1  # one request at a time, the others wait
    assert 2 <= resent <= 15  # backing off (0.05 s doubling to 0.4 s), not spinning
    assert matomo.collector.hits == []

    matomo.collector.heal()
    matomo.collector.slow(0.1)
    assert dispatcher.flush(10.0)
    assert len(set(urls(matomo))) == len(urls(matomo))
    assert matomo.collector.max_in_progress > 1  # Matomo answers again: lanes again
    stats = dispatcher.stats()
    assert (stats.sent, stats.dropped, stats.failed) == (200, {}, 0)
    assert stats.retried >= resent


def test_a_hanging_matomo_never_gets_more_than_one_batch_at_once(
    make: Make, matomo: CollectorServer
) -> None:
    dispatcher = make(batch_max_hits=10, max_concurrent_batches=8, timeout=10.0)
    open_window(dispatcher, matomo)
    matomo.collector.hold()  # Matomo takes every request and answers none
    for n in range(500):  # a backlog of 50 batches
        assert dispatcher.submit(hit(n))
    time.sleep(1.5)

    assert matomo.collector.max_in_progress == 1  # no lane opens without an answer
    assert dispatcher.stats().possible_duplicates == 0
    matomo.collector.release()
    assert dispatcher.flush(10.0)
    assert sorted(urls(matomo)) == sorted(expected(500))


def test_hits_in_flight_count_against_the_queue_caps(make: Make, matomo: CollectorServer) -> None:
    dispatcher = make(queue_max_hits=100, batch_max_hits=10, max_concurrent_batches=4, timeout=10.0)
    open_window(dispatcher, matomo)
    matomo.collector.hold()
    for n in range(150):
        dispatcher.submit(hit(n))
    wait_until(lambda: matomo.collector.in_progress == 1)  # 1 batch held, 9 queued

    assert dispatcher.pending == 100
    assert dispatcher.held[0] == 100
    assert dispatcher.stats().dropped == {"queue_full": 50}
    assert not dispatcher.submit(hit(150))  # no room while the batch is in flight

    matomo.collector.release()
    assert dispatcher.flush(10.0)
    assert sorted(urls(matomo)) == sorted(expected(100))
    assert dispatcher.held == (0, 0)
    assert dispatcher.submit(hit(151))  # room again


def test_the_shutdown_deadline_covers_the_batch_in_flight(
    make: Make, matomo: CollectorServer
) -> None:
    dispatcher = make(batch_max_hits=10, max_concurrent_batches=4, timeout=1.5)
    open_window(dispatcher, matomo)
    matomo.collector.hold()
    for n in range(60):
        assert dispatcher.submit(hit(n))
    wait_until(lambda: matomo.collector.in_progress == 1)

    started = time.monotonic()
    assert dispatcher.close(0.5) is False
    assert time.monotonic() - started < 0.5 + 1.0
    assert dispatcher.stats().dropped == {"shutdown": 60}
    time.sleep(1.5)  # the held request times out after close() gave up on it
    stats = dispatcher.stats()
    assert stats.dropped == {"shutdown": 60}  # counted once
    assert stats.sent == 1
    assert dispatcher.pending == 0
    assert not dispatcher.submit(hit(60))
