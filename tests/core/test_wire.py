"""The bulk wire format: JSON objects of string values, ``cdo`` from each hit's age,
``token_auth`` (and never ``send_image``) at the top level, valid JSON whatever the values."""

from __future__ import annotations

import json

import pytest

from matomo_tracking import EncodedHit, Hit, bulk_body, encode_hit
from matomo_tracking.wire import BULK_HEADERS
from tests.core.builders import NOW, TOKEN, collector_answer


def hit(params: dict[str, str], created: float = NOW) -> EncodedHit:
    return encode_hit(Hit(params, created))


def test_encode_hit() -> None:
    encoded = hit({"idsite": "1", "action_name": 'Café "quoted" </script>'})

    assert encoded.data == b'{"idsite":"1","action_name":"Caf\xc3\xa9 \\"quoted\\" </script>"}'
    assert encoded.created == NOW
    assert encoded.size == len(encoded.data) + 1


def test_bulk_body_exact_bytes() -> None:
    hits = [hit({"idsite": "1", "rec": "1"}), hit({"idsite": "2"}, created=NOW - 5.7)]

    body = bulk_body(hits, token_auth=None, now=NOW)

    assert body == b'{"requests":[{"idsite":"1","rec":"1"},{"cdo":"6","idsite":"2"}]}'
    assert BULK_HEADERS == {"Content-Type": "application/json"}


def test_bulk_body_with_token() -> None:
    body = bulk_body([hit({"idsite": "1"})], token_auth=TOKEN, now=NOW)

    assert body == (b'{"requests":[{"idsite":"1"}],"token_auth":"' + TOKEN.encode() + b'"}')
    assert b"?" not in body  # the token travels in the body, never in a query string


@pytest.mark.parametrize(
    ("age", "cdo"),
    [
        (0.0, None),
        (0.49, None),
        (0.99, "1"),
        (1.0, "1"),
        (59.4, "59"),
        (59.9, "60"),
        (86400.0, "86400"),
        (-30.0, None),
    ],
    ids=[
        "now",
        "under-half-a-second",
        "rounded-up-to-one",
        "one-second",
        "rounded-down",
        "rounded-up",
        "a-day",
        "clock-went-back",
    ],
)
def test_cdo_only_when_at_least_one_second_old(age: float, cdo: str | None) -> None:
    body = bulk_body([hit({"idsite": "1"}, created=NOW - age)], token_auth=None, now=NOW)

    entry = json.loads(body)["requests"][0]
    assert entry.get("cdo") == cdo


def test_empty_hit_with_age() -> None:
    body = bulk_body([hit({}, created=NOW - 3)], token_auth=None, now=NOW)

    assert json.loads(body) == {"requests": [{"cdo": "3"}]}


def test_empty_batch() -> None:
    assert json.loads(bulk_body([], token_auth=None, now=NOW)) == {"requests": []}


@pytest.mark.parametrize(
    "value",
    ["lone \udc80 surrogate", "\ud800", "pair \ud83d\ude00 split", "nul\x00 and \u2028", "€" * 100],
    ids=["low-surrogate", "high-surrogate", "surrogate-pair-as-two", "controls", "non-ascii"],
)
def test_body_is_valid_utf8_json_whatever_the_values(value: str) -> None:
    body = bulk_body(
        [hit({"idsite": "1", "rec": "1", "action_name": value, value: "as a key"}, NOW - 2)],
        token_auth=TOKEN,
        now=NOW,
    )

    data = json.loads(body.decode("utf-8"))
    assert "send_image" not in data
    assert data["token_auth"] == TOKEN
    assert data["requests"][0]["cdo"] == "2"
    assert len(data["requests"][0]) == 5


def test_token_is_json_escaped() -> None:
    body = bulk_body([], token_auth='to"ken\\é', now=NOW)

    assert json.loads(body)["token_auth"] == 'to"ken\\é'


def test_the_collector_reads_the_bulk_body() -> None:
    hits = [
        Hit(
            {"idsite": "1", "rec": "1", "url": "http://example.org/", "cip": "203.0.113.7"},
            NOW - 10,
        ),
        Hit({"idsite": "1", "rec": "1", "url": "http://example.org/b"}, NOW - 2 * 86400),
    ]

    collector, answer = collector_answer(hits, token_auth=TOKEN)

    assert answer == {"status": "success", "tracked": 2, "invalid": 0, "invalid_indices": []}
    assert [h.recorded_at for h in collector.hits] == [NOW - 10, NOW - 2 * 86400]
    assert all(h.authenticated and h.bulk for h in collector.hits)
