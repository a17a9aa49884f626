"""What each answer of Matomo (a collector served on 127.0.0.1) leads to, for both
dispatchers: invalid hits are counted, a 413 splits the batch, a refusal is one clear error
and no retry storm, old hits are dropped without a token and sent with their age with one."""

from __future__ import annotations

import logging
import time

import pytest

from matomo_tracking.testing import Collector, CollectorServer
from tests.delivery.conftest import Make, hit
from tests.sentinel import SENTINEL_TOKEN

DAY = 86400.0


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


def test_invalid_hits_are_counted_and_logged_without_the_token(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as matomo:
        dispatcher = make(url=matomo.base_url, token_auth=SENTINEL_TOKEN, batch_max_hits=10)
        for n in range(10):
            assert dispatcher.submit(hit(n, site=1 if n % 3 else 99))  # 4 for a missing site
        assert dispatcher.flush(5.0)

        assert len(matomo.collector.hits) == 6
    stats = dispatcher.stats()
    assert (stats.sent, stats.invalid, stats.retried, stats.unconfirmed) == (10, 4, 0, 0)
    # invalid hits are not retried: one request per batch (the sender's batches follow the
    # journal's rounds, so their number is not fixed)
    assert matomo.collector.answered == [200] * stats.batches
    assert "4 of 10 hit(s) invalid" in (stats.last_error or "")
    assert len(warnings_about(caplog, "invalid")) == 1
    assert all(SENTINEL_TOKEN not in r.getMessage() for r in caplog.records)


def test_a_413_splits_the_batch_and_drops_a_single_hit_too_large(
    make: Make, matomo: CollectorServer
) -> None:
    matomo.collector.limit_body(6000)  # ~40 of these hits per request
    dispatcher = make(url=matomo.base_url, batch_max_hits=200, batch_max_age=0.5)
    for n in range(100):
        assert dispatcher.submit(hit(n, pad=50))
    assert dispatcher.submit(hit(100, pad=8000))  # alone larger than the limit
    assert dispatcher.flush(10.0)

    urls = [h["url"] for h in matomo.collector.hits]
    assert sorted(urls) == sorted(f"http://shop.test/{n}" for n in range(100))
    # A 413 halves the batch size (growing back with each answer) until the big hit goes
    # alone and is dropped; each request accepted fits the limit.
    refused = matomo.collector.answered.count(413)
    assert 3 <= refused <= 12, matomo.collector.answered
    assert sum(r["count"] for r in matomo.collector.requests) == 100
    stats = dispatcher.stats()
    assert (stats.sent, stats.batches) == (100, len(matomo.collector.requests))
    assert stats.retried == refused - 1  # every 413 but the last one, the single big hit
    assert stats.dropped == {"too_large": 1}
    assert "too large" in (stats.last_error or "")


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "token_auth was refused"), (403, "access was refused"), (404, "no Matomo at this URL")],
    ids=["wrong-token", "forbidden", "wrong-url"],
)
def test_a_refusal_is_one_clear_error_and_no_retry_storm(
    make: Make,
    matomo: CollectorServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    hint: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    matomo.collector.fail_with(status)
    dispatcher = make(url=matomo.base_url, batch_max_hits=100, batch_max_age=0.5)
    for n in range(250):
        assert dispatcher.submit(hit(n))
    assert dispatcher.flush(5.0)
    time.sleep(0.5)  # long enough for retries (backoff <= 0.4 s), if there were any

    stats = dispatcher.stats()
    assert (stats.failed, stats.retried, stats.sent) == (250, 0, 0)  # none resent
    answered = matomo.collector.answered
    assert answered == [status] * len(answered)
    assert len(answered) >= 3  # one request per batch of at most 100
    assert matomo.collector.hits == []
    assert f"HTTP {status}: {hint}" in (stats.last_error or "")
    assert "not retried" in (stats.last_error or "")
    refusals = warnings_about(caplog, f"HTTP {status}")
    assert len(refusals) == 1, refusals  # the next batches' refusals are logged at DEBUG


def test_hits_older_than_a_day_are_dropped_without_a_token(
    make: Make, matomo: CollectorServer, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = make(url=matomo.base_url)
    yesterday = time.time() - 25 * 3600
    for n in range(5):
        assert dispatcher.submit(hit(n, created=yesterday))
    assert dispatcher.submit(hit(5))
    assert dispatcher.flush(5.0)

    assert [h["url"] for h in matomo.collector.hits] == ["http://shop.test/5"]
    assert matomo.collector.invalid == []  # never sent: Matomo would refuse them (HTTP 400)
    stats = dispatcher.stats()
    assert stats.dropped == {"too_old": 5}
    assert stats.sent == 1
    assert "older than 82800 s" in (stats.last_error or "")
    assert warnings_about(caplog, "older than")


def test_hits_older_than_a_day_are_sent_with_their_age_with_a_token(make: Make) -> None:
    with CollectorServer(Collector(token_auth=SENTINEL_TOKEN)) as matomo:
        dispatcher = make(url=matomo.base_url, token_auth=SENTINEL_TOKEN)
        created = time.time() - 3 * DAY
        for n in range(5):
            assert dispatcher.submit(hit(n, created=created))
        assert dispatcher.flush(5.0)

        received = matomo.collector.hits
    assert len(received) == 5
    for received_hit in received:
        assert received_hit.authenticated
        assert int(received_hit["cdo"]) == pytest.approx(3 * DAY, abs=2)
        assert received_hit.recorded_at == pytest.approx(created, abs=1.0)
    assert dispatcher.stats().dropped == {}


def test_answers_without_counts_are_unconfirmed_and_never_resent(
    make: Make, matomo: CollectorServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    matomo.collector.fail_with(204)  # a QueuedTracking Matomo: 204, no counts
    dispatcher = make(url=matomo.base_url, batch_max_hits=10)
    for n in range(30):
        assert dispatcher.submit(hit(n))
    assert dispatcher.flush(5.0)
    time.sleep(0.3)

    # Batch shapes are the executor's (the sender takes what the journal's rounds hold: 3 or 4
    # requests, more under load), so the test counts requests against batches: each went once.
    stats = dispatcher.stats()
    assert (stats.sent, stats.unconfirmed, stats.retried, stats.failed) == (30, 30, 0, 0)
    assert stats.batches >= 3  # at most 10 hits a batch
    assert matomo.collector.answered == [204] * stats.batches
    explained = [r for r in caplog.records if "confirmed 0 of" in r.getMessage()]
    assert [r.levelno for r in explained] == [logging.INFO] + [logging.DEBUG] * (stats.batches - 1)
