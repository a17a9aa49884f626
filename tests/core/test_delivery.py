"""The delivery policy: what each answer from Matomo means, retries and their delays, splitting,
expiry, giving up; the queue budget and the batch builder."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from matomo_tracking import (
    Answer,
    BatchDelivery,
    DispatchStats,
    Hit,
    Send,
    Sleep,
    StatsRecorder,
    TrackingConfig,
    TransportError,
    encode_hit,
)
from matomo_tracking.delivery import backoff_delay, parse_retry_after
from matomo_tracking.testing import Collector
from matomo_tracking.wire import EncodedHit
from tests.core.builders import MATOMO, NOW, TOKEN

HOUR = 3600.0


def encoded(count: int, *, created: float = NOW, start: int = 0) -> list[EncodedHit]:
    return [
        encode_hit(Hit({"idsite": "1", "rec": "1", "url": f"http://example.org/{i}"}, created))
        for i in range(start, start + count)
    ]


def delivery(
    hits: list[EncodedHit], *, token: str | None = None, **kwargs: object
) -> tuple[BatchDelivery, StatsRecorder]:
    config = TrackingConfig(url=MATOMO, token_auth=token, **kwargs)  # type: ignore[arg-type]
    stats = StatsRecorder(secret=token)
    return BatchDelivery(hits, config, stats), stats


def send(d: BatchDelivery, now: float = NOW, draw: float = 0.5) -> Send:
    step = d.next_step(now, draw)
    assert isinstance(step, Send), step
    return step


def urls(step: Send) -> list[str]:
    return [entry["url"] for entry in json.loads(step.body)["requests"]]


def counts(tracked: int, invalid: int = 0) -> bytes:
    return json.dumps({"status": "success", "tracked": tracked, "invalid": invalid}).encode()


# -- 2xx -----------------------------------------------------------------------------------


def test_success_with_counts() -> None:
    d, stats = delivery(encoded(3))

    step = send(d)
    assert step.count == 3
    assert urls(step) == [f"http://example.org/{i}" for i in range(3)]
    d.answered(Answer(200, counts(3)), NOW)

    assert d.next_step(NOW, 0.5) is None
    assert d.remaining == 0
    assert stats.snapshot() == DispatchStats(sent=3, batches=1)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"status": "success"}',
        b'{"tracked": "3"}',
        b'{"tracked": true}',
        b"\xff",
    ],
    ids=[
        "empty-204",
        "not-json",
        "json-list",
        "no-counts",
        "string-count",
        "bool-count",
        "not-utf8",
    ],
)
def test_success_without_counts_is_unconfirmed(body: bytes) -> None:
    d, stats = delivery(encoded(3))
    send(d)

    d.answered(Answer(204 if not body else 200, body), NOW)

    snapshot = stats.snapshot()
    assert (snapshot.sent, snapshot.unconfirmed, snapshot.invalid) == (3, 3, 0)
    assert snapshot.last_error is None


def test_success_with_invalid_hits() -> None:
    d, stats = delivery(encoded(3))
    send(d)

    d.answered(Answer(200, counts(2, 1)), NOW)

    snapshot = stats.snapshot()
    assert (snapshot.sent, snapshot.invalid, snapshot.unconfirmed) == (3, 1, 0)
    assert snapshot.last_error is not None
    assert "1 of 3 hit(s) invalid" in snapshot.last_error
    assert "Tracking failures" in snapshot.last_error


def test_success_counting_fewer_hits_than_sent() -> None:
    d, stats = delivery(encoded(3))
    send(d)

    d.answered(Answer(200, counts(1)), NOW)

    assert stats.snapshot().unconfirmed == 2


def test_negative_invalid_count_is_ignored() -> None:
    d, stats = delivery(encoded(2))
    send(d)

    d.answered(Answer(200, b'{"tracked": 2, "invalid": -5}'), NOW)

    assert (stats.invalid, stats.unconfirmed) == (0, 0)


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_retryable_status(status: int) -> None:
    d, stats = delivery(encoded(3))
    send(d)

    d.answered(Answer(status), NOW)

    assert d.next_step(NOW, 0.5) == Sleep(0.25)  # base 0.5 x 2**0 x draw 0.5
    again = send(d, NOW + 1)
    assert urls(again) == [f"http://example.org/{i}" for i in range(3)]
    assert [json.loads(again.body)["requests"][0]["cdo"]] == ["1"]  # resent with its age
    d.answered(Answer(200, counts(3)), NOW + 1)
    assert d.next_step(NOW + 1, 0.5) is None
    snapshot = stats.snapshot()
    assert (snapshot.retried, snapshot.sent, snapshot.batches) == (1, 3, 1)
    assert snapshot.last_error == f"Matomo answered HTTP {status}; retrying 3 hit(s) (attempt 2)"


def test_backoff_grows_until_the_cap_and_resets_after_success() -> None:
    d, _ = delivery(encoded(1), backoff_base=1.0, backoff_max=10.0)
    delays = []
    for _ in range(6):
        send(d)
        d.answered(Answer(503), NOW)
        step = d.next_step(NOW, 0.999)
        assert isinstance(step, Sleep)
        delays.append(round(step.seconds, 3))

    assert delays == [0.999, 1.998, 3.996, 7.992, 9.99, 9.99]


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("0", 0.25),
        ("3600", 60.0),  # capped at backoff_max
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.25),
        ("soon", 0.25),
        ("²", 0.25),
    ],
    ids=[
        "seconds",
        "padded",
        "zero",
        "capped",
        "http-date",
        "past-date",
        "garbage",
        "unicode-digit",
    ],
)
def test_retry_after_is_a_floor(retry_after: str, seconds: float) -> None:
    d, _ = delivery(encoded(1))
    send(d)

    d.answered(Answer(429, retry_after=retry_after), NOW)

    step = d.next_step(NOW, 0.5)
    assert isinstance(step, Sleep)
    assert step.seconds == pytest.approx(seconds, abs=0.01)


@pytest.mark.parametrize(
    ("error", "duplicates"),
    [(TransportError.TIMEOUT, 3), (TransportError.CONNECT, 0), (TransportError.OTHER, 0)],
    ids=["timeout", "connect", "other"],
)
def test_transport_errors_are_retried(error: TransportError, duplicates: int) -> None:
    d, stats = delivery(encoded(3))
    send(d)

    d.failed(error, "boom", NOW)

    assert isinstance(d.next_step(NOW, 0.5), Sleep)
    assert send(d).count == 3
    snapshot = stats.snapshot()
    assert (snapshot.possible_duplicates, snapshot.retried) == (duplicates, 1)
    assert snapshot.last_error == (
        f"could not reach Matomo ({error.value}: boom); retrying 3 hit(s) (attempt 2)"
    )


# -- 413 and refusals -------------------------------------------------------------------------


def test_too_large_batch_is_split_in_halves() -> None:
    d, stats = delivery(encoded(5))
    send(d)

    d.answered(Answer(413), NOW)
    first = send(d)
    d.answered(Answer(413), NOW)
    first_half = send(d)
    d.answered(Answer(200, counts(1)), NOW)
    second_half = send(d)
    d.answered(Answer(200, counts(1)), NOW)
    rest = send(d)
    d.answered(Answer(200, counts(3)), NOW)

    assert d.next_step(NOW, 0.5) is None
    assert [first.count, first_half.count, second_half.count, rest.count] == [2, 1, 1, 3]
    assert urls(first_half) + urls(second_half) + urls(rest) == [
        f"http://example.org/{i}" for i in range(5)
    ]
    assert (stats.sent, stats.retried, stats.batches) == (5, 2, 3)


def test_too_large_single_hit_is_dropped() -> None:
    d, stats = delivery(encoded(1))
    send(d)

    d.answered(Answer(413), NOW)

    assert d.next_step(NOW, 0.5) is None
    snapshot = stats.snapshot()
    assert snapshot.dropped == {"too_large": 1}
    assert snapshot.last_error == "Matomo refused a single hit as too large (HTTP 413); dropped"


REFUSALS = [
    (
        400,
        None,
        "Matomo answered HTTP 400: the request was refused as malformed; 2 hit(s) dropped, "
        "not retried",
    ),
    (
        401,
        None,
        "Matomo answered HTTP 401: token_auth was refused: check the token and its write access "
        "to the site; 2 hit(s) dropped, not retried",
    ),
    (
        403,
        None,
        "Matomo answered HTTP 403: access was refused: check token_auth and its write access to "
        "the site; 2 hit(s) dropped, not retried",
    ),
    (
        404,
        None,
        "Matomo answered HTTP 404: no Matomo at this URL: check url (the base URL or its "
        "matomo.php); 2 hit(s) dropped, not retried",
    ),
    (
        405,
        None,
        "Matomo answered HTTP 405: this URL does not accept POST: check url; 2 hit(s) dropped, "
        "not retried",
    ),
    (418, None, "Matomo answered HTTP 418: the request was refused; 2 hit(s) dropped, not retried"),
    (
        301,
        "https://matomo.example.org/matomo.php",
        "Matomo answered with a redirect (HTTP 301 to https://matomo.example.org/matomo.php); "
        "redirects are not followed so the token never leaves for another address: configure the "
        "final URL. 2 hit(s) dropped",
    ),
    (
        302,
        None,
        "Matomo answered with a redirect (HTTP 302); redirects are not followed so the token never "
        "leaves for another address: configure the final URL. 2 hit(s) dropped",
    ),
]


@pytest.mark.parametrize(
    ("status", "location", "error"), REFUSALS, ids=[str(r[0]) for r in REFUSALS]
)
def test_refusals_are_dropped_with_a_clear_error(
    status: int, location: str | None, error: str
) -> None:
    d, stats = delivery(encoded(2), token=TOKEN)
    send(d)

    d.answered(Answer(status, b"nope", location=location), NOW)

    assert d.next_step(NOW, 0.5) is None
    snapshot = stats.snapshot()
    assert snapshot.failed == 2
    assert snapshot.retried == 0
    assert snapshot.last_error == error


# -- age limits and giving up -------------------------------------------------------------------


def test_hits_older_than_max_hit_age_are_dropped_without_a_token() -> None:
    old = encoded(2, created=NOW - 23 * HOUR - 1)
    fresh = encoded(1, created=NOW - 60, start=2)
    d, stats = delivery([old[0], fresh[0], old[1]])

    step = send(d)

    assert urls(step) == ["http://example.org/2"]
    assert json.loads(step.body)["requests"][0]["cdo"] == "60"
    snapshot = stats.snapshot()
    assert snapshot.dropped == {"too_old": 2}
    assert snapshot.last_error == (
        "dropped 2 hit(s) older than 82800 s: Matomo refuses hits older than 24 h without "
        "token_auth"
    )


def test_a_batch_of_only_old_hits_is_finished() -> None:
    d, stats = delivery(encoded(3, created=NOW - 2 * 86400))

    assert d.next_step(NOW, 0.5) is None
    assert stats.dropped == {"too_old": 3}


def test_old_hits_expire_while_retrying() -> None:
    d, stats = delivery(encoded(2, created=NOW - 23 * HOUR + 10))
    send(d)
    d.answered(Answer(503), NOW)
    assert isinstance(d.next_step(NOW, 0.5), Sleep)

    assert d.next_step(NOW + 20, 0.5) is None
    assert stats.dropped == {"too_old": 2}


def test_old_hits_are_kept_with_a_token() -> None:
    d, stats = delivery(encoded(2, created=NOW - 3 * 86400), token=TOKEN)

    step = send(d)

    body = json.loads(step.body)
    assert [entry["cdo"] for entry in body["requests"]] == ["259200", "259200"]
    assert body["token_auth"] == TOKEN
    assert stats.dropped == {}


def test_abandon_gives_up_what_is_left() -> None:
    d, stats = delivery(encoded(3))
    send(d)
    d.answered(Answer(503), NOW)

    assert d.remaining == 3
    assert d.abandon("shutdown") == 3
    assert d.remaining == 0
    assert d.next_step(NOW, 0.5) is None
    assert stats.snapshot().dropped == {"shutdown": 3}
    assert stats.snapshot().dropped_total == 3


def test_abandon_in_flight_and_when_empty() -> None:
    d, stats = delivery(encoded(2))
    send(d)

    assert d.abandon("deadline") == 2
    assert d.abandon("deadline") == 0
    assert stats.dropped == {"deadline": 2}
    empty, _ = delivery([])
    assert empty.next_step(NOW, 0.5) is None
    assert empty.abandon("x") == 0


def test_misuse_raises() -> None:
    d, _ = delivery(encoded(1))
    with pytest.raises(RuntimeError, match="no Send in flight"):
        d.answered(Answer(200), NOW)
    with pytest.raises(RuntimeError, match="no Send in flight"):
        d.answered(Answer(503), NOW)
    with pytest.raises(RuntimeError, match="no Send in flight"):
        d.failed(TransportError.CONNECT, "x", NOW)
    send(d)
    with pytest.raises(RuntimeError, match="answer the previous Send first"):
        d.next_step(NOW, 0.5)


# -- the token never shows ---------------------------------------------------------------------


def test_last_error_never_contains_the_token(caplog: pytest.LogCaptureFixture) -> None:
    d, stats = delivery(encoded(1), token=TOKEN)
    send(d)
    d.failed(TransportError.OTHER, f"POST body was {{'token_auth': '{TOKEN}'}}", NOW)
    d.next_step(NOW, 0.5)
    send(d)
    d.answered(Answer(302, location=f"https://elsewhere.example/?token_auth={TOKEN}"), NOW)

    assert stats.last_error is not None
    assert TOKEN not in stats.last_error
    assert "token_auth=***" in stats.last_error
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


# -- backoff and Retry-After --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "draw", "retry_after", "delay"),
    [
        (0, 0.0, None, 0.0),
        (0, 0.5, None, 0.25),
        (3, 0.5, None, 2.0),
        (10, 0.999, None, 59.94),
        (1000, 0.5, None, 30.0),
        (0, 0.1, 5.0, 5.0),
        (0, 0.1, 500.0, 60.0),
        (6, 0.9, 1.0, 28.8),
    ],
)
def test_backoff_delay(attempt: int, draw: float, retry_after: float | None, delay: float) -> None:
    result = backoff_delay(attempt, base=0.5, cap=60.0, draw=draw, retry_after=retry_after)

    assert result == pytest.approx(delay)
    assert 0.0 <= result <= 60.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("1.5", None),
        ("-3", None),
        ("²", None),
        ("١٢", None),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
        ("Tue, 14 Nov 2023 22:14:20 -0000", 60.0),
        ("Tue, 14 Nov 2023 23:14:20 +0100", 60.0),
        ("Tue, 99 Nov 2023 22:14:20 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


# -- queue budget, batch builder, stats ----------------------------------------------------------


def test_stats_snapshot_is_a_copy() -> None:
    stats = StatsRecorder()
    stats.queued = 4
    stats.drop("queue_full")
    stats.drop("queue_full", 2)
    snapshot = stats.snapshot()
    stats.drop("queue_full")

    assert snapshot.dropped == {"queue_full": 3}
    assert snapshot.dropped_total == 3
    assert snapshot.queued == 4
    assert DispatchStats().dropped_total == 0


# -- Matomo's side of it ---------------------------------------------------------------------


def test_the_collector_records_resent_hits_when_they_happened() -> None:
    fresh, old = encoded(1, created=NOW - 60), encoded(1, created=NOW - 86400, start=1)
    d, _ = delivery(fresh + old, max_hit_age=2 * 86400.0)

    step = send(d)

    collector = Collector(clock=lambda: NOW)
    status, _, payload = collector.handle("POST", "/matomo.php", "", step.body)
    assert (status, json.loads(payload)) == (200, {"status": "success", "tracked": 1, "invalid": 1})
    assert collector.hits[0].recorded_at == NOW - 60
    assert collector.invalid[0][1] == "custom timestamp older than 24 h requires token_auth"


# -- logging an outage once, suspending and handing back ---------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "matomo_tracking.delivery" and r.levelname == "WARNING"
    ]


def test_an_outage_is_warned_about_once_until_recovery(caplog: pytest.LogCaptureFixture) -> None:
    d, stats = delivery(encoded(1))
    for _ in range(3):
        send(d)
        d.answered(Answer(503), NOW)
        d.next_step(NOW, 0.5)
    send(d)
    d.failed(TransportError.CONNECT, "refused", NOW)
    d.next_step(NOW, 0.5)
    send(d)
    d.answered(Answer(200, counts(1)), NOW)
    again = BatchDelivery(encoded(1), TrackingConfig(url=MATOMO), stats)  # the next batch
    send(again)
    again.answered(Answer(503), NOW)

    assert warnings_of(caplog) == [
        "matomo: Matomo answered HTTP 503; retrying 1 hit(s) (attempt 2)",
        "matomo: could not reach Matomo (connect: refused); retrying 1 hit(s) (attempt 5)",
        "matomo: Matomo answered HTTP 503; retrying 1 hit(s) (attempt 2)",
    ]
    assert "matomo: Matomo accepts hits again" in [r.getMessage() for r in caplog.records]
    assert stats.retried == 5


def test_unconfirmed_hits_are_explained_once(caplog: pytest.LogCaptureFixture) -> None:
    stats = StatsRecorder()

    stats.unconfirmed_hits(3, 3)
    stats.unconfirmed_hits(1, 2)

    infos = [r for r in caplog.records if r.levelname == "INFO" and "confirmed" in r.getMessage()]
    assert [r.getMessage() for r in infos] == [
        "matomo: Matomo's answer confirmed 0 of 3 hit(s) (not resent; a Matomo with "
        "QueuedTracking, or a proxy answering for it, gives no counts; see stats().unconfirmed)"
    ]
    assert stats.unconfirmed == 4


def test_suspend_and_resume_keep_the_split_and_the_backoff() -> None:
    config = TrackingConfig(url=MATOMO)
    stats = StatsRecorder()
    d = BatchDelivery(encoded(4), config, stats)
    send(d)
    d.answered(Answer(413), NOW)
    send(d)
    d.answered(Answer(503), NOW)
    assert isinstance(d.next_step(NOW, 0.5), Sleep)

    batches, attempt = d.suspend()

    assert [len(b) for b in batches] == [2, 2]
    assert attempt == 1
    assert d.remaining == 0
    assert d.next_step(NOW, 0.5) is None
    resumed = BatchDelivery.resume([*batches, []], attempt, config, stats)
    assert resumed.remaining == 4
    assert send(resumed).count == 2
    resumed.answered(Answer(503), NOW)
    assert resumed.next_step(NOW, 0.5) == Sleep(0.5)  # attempt 1 -> 0.5 x 2**1 x 0.5
    assert BatchDelivery.resume([], -3, config, stats).next_step(NOW, 0.5) is None


def test_suspend_while_in_flight_is_refused() -> None:
    d, _ = delivery(encoded(1))
    send(d)

    with pytest.raises(RuntimeError, match="answer the previous Send first"):
        d.suspend()


def test_take_remaining_hands_back_uncounted() -> None:
    hits = encoded(3)
    d, stats = delivery(hits)
    send(d)
    d.answered(Answer(413), NOW)

    assert d.take_remaining() == hits
    assert d.remaining == 0
    assert d.next_step(NOW, 0.5) is None
    assert stats.snapshot().dropped == {}


def test_send_repr_hides_the_body_with_the_token() -> None:
    d, _ = delivery(encoded(1), token=TOKEN)

    step = send(d)

    assert TOKEN.encode() in step.body
    assert TOKEN not in repr(step)


# -- cutting batches off the queue, and how many go at once -------------------------------
