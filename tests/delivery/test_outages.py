"""An unhealthy Matomo, served on 127.0.0.1, against both dispatchers: an outage loses no hit
and keeps each hit's time, a timeout after the body was read is counted as a possible
duplicate, a slow Matomo gets everything with flat memory, and a Matomo that holds every
request costs no more memory than the queue caps."""

from __future__ import annotations

import gc
import logging
import statistics
import time
import tracemalloc

import pytest

from matomo_tracking.testing import CollectorServer
from tests.delivery.conftest import Make, hit, wait_until

#: Where the dispatchers' memory is allocated (the collector's own storage is not theirs).
_DISPATCHER_FILES = (
    "*/matomo_tracking/wire.py",
    "*/matomo_tracking/delivery.py",
    "*/matomo_tracking/delivery_queue.py",
    "*/matomo_tracking/answers.py",
    "*/matomo_wsgi/*",
    "*/matomo_asgi/*",
    "*/httpx/*",
    "*/httpcore/*",
    "*/h11/*",
    "*/anyio/*",
    "*/asyncio/*",
    "*/queue.py",
    "*/threading.py",
)


def dispatcher_memory() -> int:
    """Bytes currently allocated by the dispatchers' code and still in use (tracemalloc is
    running; garbage waiting for the cycle collector is collected first: it is no leak)."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in _DISPATCHER_FILES]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


@pytest.mark.celery
def test_an_outage_loses_no_hit_and_keeps_each_hits_time(
    make: Make, matomo: CollectorServer
) -> None:
    dispatcher = make(url=matomo.base_url)
    created: dict[str, float] = {}
    started = time.monotonic()
    n = 0
    outage = False
    while (elapsed := time.monotonic() - started) < 4.0:
        if 1.0 <= elapsed < 3.0 and not outage:
            matomo.refuse()  # 2 s of connections refused, traffic going on
            outage = True
        elif elapsed >= 3.0 and outage:
            matomo.accept()
            outage = False
        sent = hit(n)
        created[sent.params["url"]] = sent.created
        assert dispatcher.submit(sent)
        n += 1
        time.sleep(0.01)
    matomo.accept()
    assert dispatcher.flush(10.0)
    if dispatcher.kind == "celery":  # handed over: the worker delivers them
        matomo.collector.wait_for(n, timeout=15.0)
        time.sleep(0.3)  # nothing more comes

    received = matomo.collector.hits
    urls = [h["url"] for h in received]
    assert len(urls) == len(set(urls)) == len(created)  # every hit, exactly once
    assert set(urls) == set(created)
    for received_hit in received:  # recorded when it happened, thanks to cdo
        assert abs(received_hit.recorded_at - created[received_hit["url"]]) < 1.0
    assert max(int(h.get("cdo") or 0) for h in received) >= 1  # some waited out the outage
    stats = dispatcher.stats()
    assert (stats.queued, stats.sent, stats.failed, stats.dropped) == (n, n, 0, {})
    if dispatcher.kind == "celery":  # the outage was met by the worker's Celery retries
        assert "could not reach Matomo" in dispatcher.log()
        return
    assert stats.retried >= 1
    # Refused connections never reach Matomo; a request sent on a connection that the outage
    # reset may have (counted, never more than the batch in flight then).
    assert stats.possible_duplicates <= dispatcher.config.batch_max_hits
    assert "connect" in (stats.last_error or "")


def test_a_resend_after_a_read_timeout_counts_as_a_possible_duplicate(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.collector.hang_after_read(1.5)  # reads the batch, answers after the client gave up
    dispatcher = make(url=matomo.base_url, timeout=0.3, backoff_base=0.2)
    for n in range(5):
        assert dispatcher.submit(hit(n))
    wait_until(lambda: dispatcher.stats().possible_duplicates >= 5)
    matomo.collector.heal()
    assert dispatcher.flush(10.0)

    assert sorted(h["url"] for h in matomo.collector.hits) == sorted(
        f"http://shop.test/{n}" for n in range(5)
    )
    stats = dispatcher.stats()
    # Matomo may have recorded the batch it read: each resend of it is a possible duplicate.
    assert stats.possible_duplicates >= 5
    assert stats.possible_duplicates % 5 == 0
    assert stats.retried == stats.possible_duplicates // 5
    assert stats.sent == 5
    assert "timeout" in (stats.last_error or "").lower()


def test_a_slow_matomo_gets_every_hit_and_memory_stays_flat(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.collector.slow(0.5)  # 500 ms per request
    dispatcher = make(url=matomo.base_url, batch_max_hits=100, timeout=5.0)
    received: list[str] = []

    def collect() -> None:  # keep what the collector stores out of the picture
        while matomo.collector.hits:
            received.append(matomo.collector.hits.pop(0)["url"])

    for n in range(150):  # warm up: the client, its connections, the worker
        dispatcher.submit(hit(-n))
    assert dispatcher.flush(5.0)
    matomo.collector.hits.clear()
    tracemalloc.start()
    try:
        samples: list[int] = []
        pending: list[int] = []
        n = 0
        for tick in range(32):  # 3.2 s of 120 hits/s, each with 1 KB of data
            for _ in range(12):
                assert dispatcher.submit(hit(n, pad=1000))
                n += 1
            time.sleep(0.1)
            if tick % 4 == 3:
                collect()
                samples.append(dispatcher_memory())
                pending.append(dispatcher.pending)
        assert dispatcher.flush(15.0)
        settled = dispatcher_memory()  # everything delivered: nothing in flight
    finally:
        tracemalloc.stop()
    collect()

    assert len(received) == len(set(received)) == n
    assert dispatcher.stats().sent == 150 + n
    # Below capacity (100 hits per 0.5 s): the queue never builds up...
    assert max(pending) <= 200, pending
    # ...and memory does not grow with the hits delivered: a leak of 1 KB per hit would keep
    # even the late half's lowest sample ~170 KB above the early half's median, and leave
    # ~3.8 MB once all is delivered. Batches in flight at the moment of a sample are spikes
    # that go (two of four late samples at +265 KB in a loaded CI run): neither the lowest
    # late sample nor the settled one sees them.
    early, late = samples[1:4], samples[4:]
    assert min(late) <= statistics.median(early) + 128 * 1024, samples
    assert settled <= statistics.median(early) + 128 * 1024, (settled, samples)
    assert max(samples) <= 1024 * 1024, samples  # the 3,840 hits sent take 4 MB


def test_a_held_matomo_costs_no_more_than_the_queue_caps(
    make: Make, matomo: CollectorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    matomo.collector.hold()  # every request waits, unanswered
    max_hits, max_bytes = 2_000, 256 * 1024
    dispatcher = make(
        url=matomo.base_url,
        queue_max_hits=max_hits,
        queue_max_bytes=max_bytes,
        batch_max_hits=100,
        timeout=60.0,
    )
    hits = [hit(n, pad=50) for n in range(50_000)]
    assert dispatcher.submit(hits[0])
    time.sleep(0.3)  # the first batch is posted and held
    accepted = 1
    # Memory is traced over the first 10,000 (the queue fills, then thousands of hits are
    # dropped); tracing all 50,000 would only make the test slower.
    tracemalloc.start()
    try:
        before = dispatcher_memory()
        for n in range(1, 10_000):
            accepted += dispatcher.submit(hits[n])
        grown = dispatcher_memory() - before
    finally:
        tracemalloc.stop()
    for n in range(10_000, 50_000):
        accepted += dispatcher.submit(hits[n])
        if n % 1000 == 0:
            held, held_bytes = dispatcher.held
            assert held <= max_hits
            assert held_bytes <= max_bytes

    held, held_bytes = dispatcher.held
    assert held <= max_hits
    assert held_bytes <= max_bytes
    # What the queue holds is what the budget counts, plus the objects around it.
    assert grown <= max_bytes + max_hits * 400, grown
    stats = dispatcher.stats()
    assert stats.dropped == {"queue_full": 50_000 - accepted}
    assert accepted < 2_000  # here the byte cap is the one reached first
    full = [r for r in caplog.records if "full" in r.getMessage() and "queue" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in full]  # one warning per interval
    assert full[0].levelno == logging.WARNING

    matomo.collector.release()
    assert dispatcher.flush(20.0)
    urls = [h["url"] for h in matomo.collector.hits]
    assert len(urls) == len(set(urls)) == accepted
    assert dispatcher.stats().sent == accepted


def test_an_outage_of_any_length_stays_within_the_caps(make: Make, matomo: CollectorServer) -> None:
    matomo.refuse()
    dispatcher = make(url=matomo.base_url, queue_max_hits=500, batch_max_hits=100)
    for n in range(2_000):  # over a second of retries: the batch retried holds its room
        dispatcher.submit(hit(n))
        if n % 50 == 0:
            assert dispatcher.held[0] <= 500
            time.sleep(0.03)
    stats = dispatcher.stats()
    assert stats.retried >= 3
    assert (stats.queued, stats.dropped) == (500, {"queue_full": 1_500})
    matomo.accept()
    assert dispatcher.flush(5.0)
    assert sorted(h["url"] for h in matomo.collector.hits) == sorted(
        f"http://shop.test/{n}" for n in range(500)
    )


def test_a_cut_answer_counts_its_batch_as_possible_duplicates(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.collector.cut_answers(1)  # records the batch, then the connection closes mid-answer
    dispatcher = make(batch_max_hits=10)
    for n in range(5):
        assert dispatcher.submit(hit(n))
    assert dispatcher.flush(10.0)

    # The cut batch is whatever the executor had taken when it posted: all five at once,
    # or (the sender reads the journal as the app commits) the first few. Its hits were
    # recorded and then sent again; the rest once.
    urls = [h["url"] for h in matomo.collector.hits]
    assert sorted(set(urls)) == [f"http://shop.test/{n}" for n in range(5)]
    resent = len(urls) - 5
    assert resent >= 1
    assert all(urls.count(url) <= 2 for url in urls)
    stats = dispatcher.stats()
    assert stats.possible_duplicates == resent  # each resent hit counted as possible
    assert (stats.sent, stats.retried) == (5, 1)
    assert "cut" in (stats.last_error or "")


def test_the_probe_notices_matomos_return_within_seconds_of_a_long_backoff(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.refuse()
    dispatcher = make(backoff_base=4.0, backoff_max=30.0, probe_interval=0.3, batch_max_hits=50)
    for n in range(200):  # a backlog waiting on a failing Matomo
        assert dispatcher.submit(hit(n))
    time.sleep(4.0)  # several backoffs: the next resend of the backlog is far off
    matomo.accept()
    back = time.monotonic()
    matomo.collector.wait_for(200, timeout=8.0)

    assert time.monotonic() - back < 3.0  # seen by a one-hit probe, not the backoff
    assert sorted(h["url"] for h in matomo.collector.hits) == sorted(
        f"http://shop.test/{n}" for n in range(200)
    )
    assert dispatcher.stats().retried >= 3
