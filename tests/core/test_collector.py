"""The Matomo-compatible collector: single and bulk hits answered like Matomo, validation like
Matomo's (a little stricter), failure modes, the live page, and its servers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from matomo_tracking.testing import Collector, CollectorServer
from matomo_tracking.testing.collector import _GIF
from tests.core.builders import NOW, TOKEN

GIF_BYTES = 43
PAGE_VIEW = {"idsite": "1", "rec": "1", "url": "http://example.org/", "action_name": "Home"}


def collector(**kwargs: Any) -> Collector:
    return Collector(clock=lambda: NOW, **{"token_auth": TOKEN, **kwargs})


def bulk(*entries: object, **top: object) -> bytes:
    return json.dumps({"requests": list(entries), **top}).encode()


def answer_of(response: tuple[int, list[tuple[str, str]], bytes]) -> tuple[int, dict[str, Any]]:
    status, _, payload = response
    return status, json.loads(payload)


# -- single hits -------------------------------------------------------------------------------


def test_get_hit_with_send_image_0_is_204() -> None:
    c = collector()

    status, headers, payload = c.handle(
        "GET", "/matomo.php", urlencode({**PAGE_VIEW, "send_image": "0"}), b""
    )

    assert (status, headers, payload) == (204, [("cache-control", "no-store")], b"")
    assert len(c.hits) == 1
    hit = c.hits[0]
    assert dict(hit.params) == PAGE_VIEW
    assert (hit["url"], hit.get("missing"), hit.get("missing", "x")) == (
        "http://example.org/",
        None,
        "x",
    )
    assert (hit.received_at, hit.recorded_at, hit.bulk, hit.authenticated) == (
        NOW,
        NOW,
        False,
        False,
    )
    assert c.requests == [{"bulk": False, "count": 1, "token": False}]


def test_get_hit_answers_a_gif() -> None:
    status, headers, payload = collector().handle("GET", "/piwik.php", urlencode(PAGE_VIEW), b"")

    assert status == 200
    assert headers == [("content-type", "image/gif"), ("cache-control", "no-store")]
    assert payload.startswith(b"GIF89a")
    assert len(payload) == GIF_BYTES


def test_invalid_single_hit_is_400() -> None:
    c = collector()

    status, _, payload = c.handle(
        "GET", "/matomo.php", urlencode({**PAGE_VIEW, "idsite": "9"}), b""
    )

    assert status == 400
    assert payload == _GIF + b"This resource is part of Matomo."
    assert c.hits == []
    assert c.invalid == [({**PAGE_VIEW, "idsite": "9"}, "idsite: unknown or invalid site")]


def test_post_form_query_string_wins() -> None:
    c = collector()
    body = urlencode({**PAGE_VIEW, "idsite": "9", "action_name": "From body"}).encode()

    status, _, _ = c.handle("POST", "/sub/matomo.php", "idsite=1&send_image=0", body)

    assert status == 204
    assert c.hits[0]["idsite"] == "1"
    assert c.hits[0]["action_name"] == "From body"


def test_single_hit_token_in_post_body() -> None:
    c = collector()
    body = urlencode({**PAGE_VIEW, "cip": "203.0.113.7", "token_auth": TOKEN}).encode()

    status, _, _ = c.handle("POST", "/matomo.php", "send_image=0", body)

    assert status == 204
    assert "token_auth" not in c.hits[0].params
    assert c.hits[0].authenticated is True
    assert c.requests == [{"bulk": False, "count": 1, "token": True}]


def test_unknown_path_is_404() -> None:
    assert collector().handle("POST", "/track", "", b"")[0] == 404


# -- every answer of matomo-tracking-api.md §1.4 and §4 a sender can trigger ---------------------

NO_STORE = [("cache-control", "no-store")]
CORS = [("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true")]
WRITER = "write-token-for-site-2"
NOTICE = b"This resource is part of Matomo."
GIF_TYPE = [("content-type", "image/gif")]
JSON_TYPE = [("content-type", "application/json")]
CIP = {**PAGE_VIEW, "cip": "203.0.113.7"}
SITE_2 = {**PAGE_VIEW, "idsite": "2"}
BAD_SITE = {**PAGE_VIEW, "idsite": "9"}
CA_PING = {**PAGE_VIEW, "ca": "1", "ping": "1"}


def form(params: dict[str, str]) -> str:
    return urlencode(params)


def json_answer(**fields: object) -> tuple[int, list[tuple[str, str]], bytes]:
    return 200, JSON_TYPE, json.dumps({"status": "success", **fields}).encode()


#: (documented situation, method, query, body, the answer, hits stored, hits counted invalid)
ANSWERS: list[tuple[str, str, str, bytes, tuple[int, list[tuple[str, str]], bytes], int, int]] = [
    # single hits (§1.4)
    ("single-recorded-gif", "GET", form(PAGE_VIEW), b"", (200, GIF_TYPE, _GIF), 1, 0),
    (
        "single-recorded-send-image-0",
        "GET",
        form({**PAGE_VIEW, "send_image": "0"}),
        b"",
        (204, [], b""),
        1,
        0,
    ),
    (
        "single-post-form-recorded",
        "POST",
        "",
        form({**PAGE_VIEW, "send_image": "0"}).encode(),
        (204, [], b""),
        1,
        0,
    ),
    (
        "single-excluded-rec-missing-answers-as-recorded",
        "GET",
        form({k: v for k, v in PAGE_VIEW.items() if k != "rec"}),
        b"",
        (200, GIF_TYPE, _GIF),
        0,
        0,
    ),
    (
        "single-rejected-400-gif-then-notice",
        "GET",
        form(BAD_SITE),
        b"",
        (400, GIF_TYPE, _GIF + NOTICE),
        0,
        1,
    ),
    (
        "single-rejected-send-image-0-400-notice",
        "GET",
        form({**BAD_SITE, "send_image": "0"}),
        b"",
        (400, [("content-type", "text/html")], NOTICE),
        0,
        1,
    ),
    (
        "single-cip-without-token-400",
        "GET",
        form(CIP),
        b"",
        (400, GIF_TYPE, _GIF + NOTICE),
        0,
        1,
    ),
    (
        "single-exception-ca-with-ping-400",
        "GET",
        form(CA_PING),
        b"",
        (400, GIF_TYPE, _GIF + NOTICE),
        0,
        1,
    ),
    (
        "single-get-no-parameters-200",
        "GET",
        "",
        b"",
        (200, [("content-type", "text/html")], NOTICE),
        0,
        0,
    ),
    (
        "single-post-no-parameters-400",
        "POST",
        "",
        b"",
        (400, [("content-type", "text/html")], NOTICE),
        0,
        0,
    ),
    (
        "json-without-requests-is-no-hit-400",
        "POST",
        "",
        json.dumps(PAGE_VIEW).encode(),
        (400, [("content-type", "text/html")], NOTICE),
        0,
        0,
    ),
    (
        "cors-preflight-204",
        "OPTIONS",
        "",
        b"",
        (
            204,
            [
                ("access-control-allow-origin", "*"),
                ("access-control-allow-methods", "GET, POST"),
                ("access-control-allow-headers", "*"),
            ],
            b"",
        ),
        0,
        0,
    ),
    # bulk (§4)
    (
        "bulk-success-counts",
        "POST",
        "",
        bulk(PAGE_VIEW, PAGE_VIEW),
        json_answer(tracked=2, invalid=0),
        2,
        0,
    ),
    (
        "bulk-invalid-indices-with-a-super-user-token",
        "POST",
        "",
        bulk(BAD_SITE, PAGE_VIEW, CIP, token_auth=TOKEN),
        json_answer(tracked=2, invalid=1, invalid_indices=[0]),
        2,
        1,
    ),
    (
        "bulk-counts-only-with-a-write-token",
        "POST",
        "",
        bulk(BAD_SITE, SITE_2, {**SITE_2, "cip": "203.0.113.7"}, token_auth=WRITER),
        json_answer(tracked=2, invalid=1),
        2,
        1,
    ),
    (
        "bulk-write-token-without-access-to-the-site",
        "POST",
        "",
        bulk(CIP, token_auth=WRITER),
        json_answer(tracked=0, invalid=1),
        0,
        1,
    ),
    (
        "bulk-counts-only-without-a-token",
        "POST",
        "",
        bulk(CIP, PAGE_VIEW),
        json_answer(tracked=1, invalid=1),
        1,
        1,
    ),
    (
        "bulk-string-without-question-mark-silently-dropped",
        "POST",
        "",
        bulk("idsite=9&rec=1", BAD_SITE, "?" + form(PAGE_VIEW), token_auth=TOKEN),
        json_answer(tracked=1, invalid=1, invalid_indices=[0]),
        1,
        1,
    ),
    (
        "bulk-send-image-0-is-204-and-still-tracks",
        "POST",
        "",
        bulk(PAGE_VIEW, BAD_SITE, send_image=0),
        (204, [], b""),
        1,
        1,
    ),
    (
        "bulk-per-hit-send-image-ignored",
        "POST",
        "",
        bulk({**PAGE_VIEW, "send_image": "0"}),
        json_answer(tracked=1, invalid=0),
        1,
        0,
    ),
    (
        "bulk-hit-token-used-without-a-top-level-token",
        "POST",
        "",
        bulk("?" + form({**CIP, "token_auth": TOKEN})),
        json_answer(tracked=1, invalid=0),
        1,
        0,
    ),
    (
        "bulk-top-level-token-wins-over-a-hit-token",
        "POST",
        "",
        bulk("?" + form({**CIP, "token_auth": TOKEN}), token_auth="wrong"),
        json_answer(tracked=0, invalid=1),
        0,
        1,
    ),
    (
        "bulk-token-on-the-url-is-not-applied",
        "POST",
        form({"token_auth": TOKEN}),
        bulk(CIP),
        json_answer(tracked=0, invalid=1),
        0,
        1,
    ),
    (
        "bulk-malformed-body-tracks-nothing",
        "POST",
        "",
        b'{"requests": [',
        json_answer(tracked=0, invalid=0),
        0,
        0,
    ),
    (
        "bulk-exception-500-and-the-batch-rolled-back",
        "POST",
        "",
        bulk(PAGE_VIEW, BAD_SITE, CA_PING, PAGE_VIEW, token_auth=TOKEN),
        (
            500,
            JSON_TYPE,
            json.dumps(
                {"status": "error", "tracked": 1, "invalid": 1, "invalid_indices": [1]}
            ).encode(),
        ),
        0,
        2,
    ),
    (
        "bulk-unknown-goal-invalid",
        "POST",
        "",
        bulk({**PAGE_VIEW, "idgoal": "7"}, {**PAGE_VIEW, "idgoal": "1"}),
        json_answer(tracked=1, invalid=1),
        1,
        1,
    ),
]


@pytest.mark.parametrize(
    ("method", "query", "body", "answer", "stored", "invalid"),
    [row[1:] for row in ANSWERS],
    ids=[row[0] for row in ANSWERS],
)
def test_answers_like_matomo(
    method: str,
    query: str,
    body: bytes,
    answer: tuple[int, list[tuple[str, str]], bytes],
    stored: int,
    invalid: int,
) -> None:
    c = Collector(
        site_ids=(1, 2),
        token_auth=TOKEN,
        write_tokens={WRITER: [2]},
        goal_ids=[1],
        clock=lambda: NOW,
    )

    status, headers, payload = answer
    if method != "OPTIONS":  # and Matomo's own headers on every tracking answer
        headers = [*headers, *(NO_STORE if method == "GET" else CORS)]

    assert c.handle(method, "/matomo.php", query, body) == (status, headers, payload)
    assert (len(c.hits), len(c.invalid)) == (stored, invalid)
    assert c.answered == [answer[0]]
    for hit in c.hits:
        assert "token_auth" not in hit.params
        assert "send_image" not in hit.params


def test_authenticated_hits_are_marked_per_site() -> None:
    c = Collector(site_ids=(1, 2), token_auth=TOKEN, write_tokens={WRITER: [2]}, clock=lambda: NOW)

    c.handle("POST", "/matomo.php", "", bulk(PAGE_VIEW, SITE_2, token_auth=WRITER))

    assert [(h["idsite"], h.authenticated) for h in c.hits] == [("1", False), ("2", True)]


# -- bulk ----------------------------------------------------------------------------------------


def test_bulk_counts_and_invalid_indices_with_the_configured_token() -> None:
    c = collector()
    entries = [
        PAGE_VIEW,
        {**PAGE_VIEW, "idsite": "5"},
        "?idsite=1&rec=1&url=x",
        {**PAGE_VIEW, "cid": "123"},
    ]

    result = answer_of(c.handle("POST", "/matomo.php", "", bulk(*entries, token_auth=TOKEN)))

    assert result == (
        200,
        {"status": "success", "tracked": 2, "invalid": 2, "invalid_indices": [1, 3]},
    )
    assert [h.bulk for h in c.hits] == [True, True]
    assert all(h.authenticated for h in c.hits)
    assert c.requests == [{"bulk": True, "count": 4, "token": True}]


@pytest.mark.parametrize("value", [0, "0"], ids=["number", "string"])
def test_bulk_with_send_image_0_is_204_without_counts(value: object) -> None:
    # Matomo 5.0.2: the same body answers 204 '' with send_image and 200 with counts without.
    c = collector()
    body = bulk(PAGE_VIEW, {**PAGE_VIEW, "idsite": "5"}, send_image=value, token_auth=TOKEN)

    status, _, payload = c.handle("POST", "/matomo.php", "", body)

    assert (status, payload) == (204, b"")
    assert len(c.hits) == 1  # still tracked, and the invalid one still rejected
    assert len(c.invalid) == 1


@pytest.mark.parametrize("value", [1, "1", None], ids=["one", "string-one", "null"])
def test_bulk_with_another_send_image_answers_counts(value: object) -> None:
    body = bulk(PAGE_VIEW, send_image=value)

    result = answer_of(collector().handle("POST", "/matomo.php", "", body))

    assert result == (200, {"status": "success", "tracked": 1, "invalid": 0})


@pytest.mark.parametrize("token", [None, "another-token"], ids=["no-token", "wrong-token"])
def test_bulk_without_the_configured_token_gives_counts_only(token: str | None) -> None:
    body = bulk(PAGE_VIEW, {**PAGE_VIEW, "idsite": "5"}, **({"token_auth": token} if token else {}))

    result = answer_of(collector().handle("POST", "/matomo.php", "", body))

    assert result == (200, {"status": "success", "tracked": 1, "invalid": 1})


def test_bulk_strings_without_a_query_are_skipped() -> None:
    c = collector()
    entries = [
        "idsite=1&rec=1",
        "http://m.example.org/matomo.php?idsite=1&rec=1",
        42,
        None,
        "?idsite=7",
    ]

    result = answer_of(c.handle("POST", "/matomo.php", "", bulk(*entries, token_auth=TOKEN)))

    assert result == (
        200,
        {"status": "success", "tracked": 1, "invalid": 1, "invalid_indices": [1]},
    )
    assert c.requests[0]["count"] == 2


@pytest.mark.parametrize(
    "body",
    [b'{"requests": ', b'["requests"]', b'{"requests": "all"}', b'x"requests"\xff'],
    ids=["truncated", "a-list", "not-a-list", "not-utf8"],
)
def test_malformed_bulk_body_tracks_nothing(body: bytes) -> None:
    result = answer_of(collector().handle("POST", "/matomo.php", "", body))

    assert result == (200, {"status": "success", "tracked": 0, "invalid": 0})


def test_bulk_ca_with_ping_fails_the_batch() -> None:
    c = collector()
    body = bulk(PAGE_VIEW, {**PAGE_VIEW, "ca": "1", "ping": "1"}, PAGE_VIEW)

    result = answer_of(c.handle("POST", "/matomo.php", "", body))

    assert result == (500, {"status": "error", "tracked": 1, "invalid": 0})


def test_bulk_cdo_and_cdt_set_the_recorded_time() -> None:
    c = collector()
    entries = [
        {**PAGE_VIEW, "cdo": "60"},
        {**PAGE_VIEW, "cdt": str(int(NOW) - 100), "cdo": "-20"},
        {**PAGE_VIEW, "cdt": "yesterday"},
    ]

    c.handle("POST", "/matomo.php", "", bulk(*entries))

    assert [h.recorded_at for h in c.hits] == [NOW - 60, NOW - 120, NOW]


# -- validation ------------------------------------------------------------------------------------

VALIDATION: list[tuple[str, dict[str, str], str | None, str | None]] = [
    ("valid", {}, None, None),
    ("idsite-missing", {"idsite": ""}, None, "idsite: unknown or invalid site"),
    ("idsite-not-an-int", {"idsite": "1x"}, None, "idsite: unknown or invalid site"),
    ("idsite-unicode-digit", {"idsite": "\u00b9"}, None, "idsite: unknown or invalid site"),
    ("idsite-unknown", {"idsite": "2"}, None, "idsite: unknown or invalid site"),
    ("cip-without-token", {"cip": "203.0.113.7"}, None, "cip requires a valid token_auth"),
    ("cip-with-wrong-token", {"cip": "203.0.113.7"}, "nope", "cip requires a valid token_auth"),
    ("cip-with-token", {"cip": "203.0.113.7"}, TOKEN, None),
    ("country-without-token", {"country": "fr"}, None, "country requires a valid token_auth"),
    ("long-with-token", {"long": "2.35"}, TOKEN, None),
    ("cid-15-chars", {"cid": "0123456789abcde"}, None, "cid must be 16 hexadecimal characters"),
    ("cid-not-hex", {"cid": "0123456789abcdeg"}, None, "cid must be 16 hexadecimal characters"),
    ("cid-uppercase-hex", {"cid": "0123456789ABCDEF"}, None, None),
    ("id-not-hex", {"_id": "zzzzzzzzzzzzzzzz"}, None, "_id must be hexadecimal"),
    ("id-short-ignored", {"_id": "zz"}, None, None),
    ("cdt-3h-old", {"cdt": str(int(NOW) - 3 * 3600)}, None, None),
    (
        "cdt-3d-old",
        {"cdt": str(int(NOW) - 3 * 86400)},
        None,
        "custom timestamp older than 24 h requires token_auth",
    ),
    ("cdt-3d-old-with-token", {"cdt": str(int(NOW) - 3 * 86400)}, TOKEN, None),
    ("cdo-a-day", {"cdo": "86400"}, None, "custom timestamp older than 24 h requires token_auth"),
    ("cdo-not-an-int", {"cdo": "1.5"}, None, "cdo must be an integer"),
    ("cdo-unicode-digit", {"cdo": "\u00b2"}, None, "cdo must be an integer"),
    (
        "event-blank-category",
        {"e_c": " ", "e_a": "Play"},
        None,
        "e_c must not be empty or whitespace",
    ),
    (
        "event-blank-action",
        {"e_c": "Video", "e_a": "\t"},
        None,
        "e_a must not be empty or whitespace",
    ),
    ("event-action-alone", {"e_a": " "}, None, None),
    ("content-blank-name", {"c_n": "  "}, None, "c_n must not be empty"),
    ("pf-negative", {"pf_srv": "-1"}, None, "pf_srv must be a non-negative integer"),
    ("pf-not-an-int", {"pf_net": "fast"}, None, "pf_net must be a non-negative integer"),
    ("pf-empty", {"pf_srv": ""}, None, None),
    ("cvar-not-json", {"cvar": "{1:"}, None, "cvar must be JSON"),
    ("uadata-not-json", {"uadata": "{"}, None, "uadata must be JSON"),
    ("ec-items-json", {"ec_items": '[["sku","n","c",1,1]]'}, None, None),
]


@pytest.mark.parametrize(
    ("extra", "token", "reason"), [v[1:] for v in VALIDATION], ids=[v[0] for v in VALIDATION]
)
def test_validation(extra: dict[str, str], token: str | None, reason: str | None) -> None:
    c = collector()
    body = bulk({**PAGE_VIEW, **extra}, **({"token_auth": token} if token else {}))

    _, result = answer_of(c.handle("POST", "/matomo.php", "", body))

    assert (result["tracked"], result["invalid"]) == ((1, 0) if reason is None else (0, 1))
    assert [r for _, r in c.invalid] == ([] if reason is None else [reason])


def test_values_must_be_strings_in_bulk_objects() -> None:
    c = collector()

    c.handle("POST", "/matomo.php", "", bulk({**PAGE_VIEW, "idsite": 1}))

    assert c.invalid[0][1] == "idsite: values must be strings"


def test_duplicate_order_is_invalid() -> None:
    c = collector(site_ids=(1, 2))
    order = {**PAGE_VIEW, "idgoal": "0", "ec_id": "A-1", "revenue": "10"}

    _, result = answer_of(
        c.handle("POST", "/matomo.php", "", bulk(order, order, {**order, "idsite": "2"}))
    )

    assert (result["tracked"], result["invalid"]) == (2, 1)
    assert c.invalid[0][1] == "duplicate order id"


@pytest.mark.parametrize(
    "rec", [None, "0", "true", ""], ids=["missing", "zero", "not-an-int", "empty"]
)
def test_hits_without_rec_are_answered_but_not_stored(rec: str | None) -> None:
    c = collector()
    hit = {k: v for k, v in PAGE_VIEW.items() if k != "rec"}
    if rec is not None:
        hit["rec"] = rec

    _, result = answer_of(c.handle("POST", "/matomo.php", "", bulk(hit)))

    assert (result["tracked"], result["invalid"]) == (1, 0)
    assert c.hits == []


# -- failure modes, state, the page ------------------------------------------------------------


def test_fail_with_a_count_then_healthy() -> None:
    c = collector()
    c.fail_with(503, count=2, retry_after="5")
    body = bulk(PAGE_VIEW)

    first = c.handle("POST", "/matomo.php", "", body)
    second = c.handle("POST", "/matomo.php", "", body)
    third = c.handle("POST", "/matomo.php", "", body)

    expected = (
        503,
        [("content-type", "text/plain"), ("retry-after", "5")],
        b"collector failure mode",
    )
    assert first == second == expected
    assert third[0] == 200
    assert len(c.hits) == 1
    assert c.handle("GET", "/", "", b"")[0] == 200  # the page never fails


def test_fail_with_until_healed() -> None:
    c = collector()
    c.fail_with(500)

    statuses = [c.handle("POST", "/matomo.php", "", bulk(PAGE_VIEW))[0] for _ in range(3)]
    c.heal()

    assert statuses == [500, 500, 500]
    assert c.handle("POST", "/matomo.php", "", bulk(PAGE_VIEW))[0] == 200


def test_page_escapes_values_and_hits_json() -> None:
    c = collector()
    hostile = {**PAGE_VIEW, "action_name": "<script>alert(1)</script>", "url": 'http://e/"><img>'}
    c.handle(
        "POST",
        "/matomo.php",
        "",
        bulk(hostile, {**PAGE_VIEW, "e_c": "C", "e_a": "A&B", "uid": "u"}),
    )

    status, headers, payload = c.handle("GET", "/", "", b"")
    page = payload.decode()

    assert status == 200
    assert headers == [("content-type", "text/html; charset=utf-8")]
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://e/&quot;&gt;&lt;img&gt;" in page
    assert "<td>u</td>" in page  # the visitor column: uid first
    assert "<p id='count'>2 hit(s) received</p>" in page
    assert page == c.page()
    status, _, data = c.handle("GET", "/hits.json", "", b"")
    assert (status, json.loads(data)) == (
        200,
        [hostile, {**PAGE_VIEW, "e_c": "C", "e_a": "A&B", "uid": "u"}],
    )


def test_clear_and_repr() -> None:
    c = collector(site_ids=[2, 1])
    c.handle("POST", "/matomo.php", "", bulk(PAGE_VIEW, {**PAGE_VIEW, "idsite": "9"}))

    assert repr(c) == "Collector(site_ids=[1, 2], hits=1)"
    c.clear()
    assert (c.hits, c.requests, c.invalid) == ([], [], [])


def test_wait_for() -> None:
    c = collector()
    timer = threading.Timer(0.05, lambda: c.handle("POST", "/matomo.php", "", bulk(PAGE_VIEW)))
    timer.start()

    hits = c.wait_for(1, timeout=5)

    assert len(hits) == 1
    with pytest.raises(TimeoutError, match=r"expected 2 hit\(s\), received 1"):
        c.wait_for(2, timeout=0.05)


# -- served over HTTP ----------------------------------------------------------------------------


def test_collector_server_roundtrip() -> None:
    with CollectorServer(collector()) as server:
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.url == server.base_url + "/matomo.php"
        response = httpx.post(server.url, content=bulk(PAGE_VIEW, token_auth=TOKEN))
        page = httpx.get(server.base_url + "/")
        bad_length = httpx.post(server.url, content=b"", headers={"content-length": "0"})

    assert response.status_code == 200
    assert response.json() == {
        "status": "success",
        "tracked": 1,
        "invalid": 0,
        "invalid_indices": [],
    }
    assert "1 hit(s) received" in page.text
    assert bad_length.status_code == 400
    assert server.collector.hits[0]["url"] == "http://example.org/"


def test_server_fail_with_unknown_status_and_retry_after() -> None:
    with CollectorServer(collector()) as server:
        server.collector.fail_with(599, count=1, retry_after="2")
        failed = httpx.post(server.url, content=bulk(PAGE_VIEW))
        healthy = httpx.post(server.url, content=bulk(PAGE_VIEW))

    assert (failed.status_code, failed.headers["retry-after"]) == (599, "2")
    assert failed.reason_phrase == "Unknown"
    assert healthy.status_code == 200


def test_server_slow_and_hold() -> None:
    with CollectorServer(collector()) as server:
        server.collector.slow(0.2)
        started = time.monotonic()
        httpx.post(server.url, content=bulk(PAGE_VIEW))
        assert time.monotonic() - started >= 0.2

        server.collector.heal()
        server.collector.hold()
        results: list[int] = []
        thread = threading.Thread(
            target=lambda: results.append(
                httpx.post(server.url, content=bulk(PAGE_VIEW)).status_code
            )
        )
        thread.start()
        time.sleep(0.2)
        assert results == []
        assert httpx.get(server.base_url + "/hits.json").status_code == 200  # the page is not held
        server.collector.release()
        thread.join(5)

    assert results == [200]
    assert len(server.collector.hits) == 2


def test_server_hang_after_read_times_the_client_out() -> None:
    with CollectorServer(collector()) as server:
        server.collector.hang_after_read(0.4)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url, content=bulk(PAGE_VIEW), timeout=0.1)
        deadline = time.monotonic() + 5
        while not server.collector.requests and time.monotonic() < deadline:
            time.sleep(0.02)

    assert server.collector.requests == [{"bulk": True, "count": 0, "hung": True}]
    assert server.collector.hits == []


def test_server_refuse_and_accept_on_the_same_port() -> None:
    server = CollectorServer(collector()).start()
    try:
        port = server.port
        server.refuse()
        with pytest.raises(httpx.ConnectError):
            httpx.post(server.url, content=bulk(PAGE_VIEW))
        server.accept()
        server.accept()  # already listening: nothing changes
        response = httpx.post(server.url, content=bulk(PAGE_VIEW))
    finally:
        server.stop()
    server.stop()  # stopping twice is harmless

    assert server.port == port
    assert response.status_code == 200


def test_default_server_collector() -> None:
    server = CollectorServer()

    assert server.collector.site_ids == frozenset({1})
    assert server.collector.token_auth is None


def test_plugin_fixtures(matomo_server: CollectorServer, matomo_collector: Collector) -> None:
    response = httpx.post(matomo_server.url, content=bulk(PAGE_VIEW))

    assert response.status_code == 200
    assert matomo_server.collector is matomo_collector
    assert len(matomo_collector.hits) == 1


# -- the ASGI app ----------------------------------------------------------------------------------


async def _asgi_request(
    c: Collector, method: str, path: str, body: bytes = b"", query: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes]:
    messages = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}
    await c.asgi(scope, receive, send)
    start, body_message = sent
    return start["status"], dict(start["headers"]), body_message["body"]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_asgi_bulk_and_single() -> None:
    c = collector()

    status, headers, payload = run(_asgi_request(c, "POST", "/matomo.php", bulk(PAGE_VIEW)))
    single = run(_asgi_request(c, "GET", "/matomo.php", query=urlencode(PAGE_VIEW).encode()))

    assert status == 200
    assert headers[b"content-length"] == str(len(payload)).encode()
    assert json.loads(payload)["tracked"] == 1
    assert single[0] == 200
    assert single[2].startswith(b"GIF89a")
    assert len(c.hits) == 2


def test_asgi_lifespan_and_other_scopes() -> None:
    c = collector()
    incoming = [
        {"type": "lifespan.startup"},
        {"type": "lifespan.other"},
        {"type": "lifespan.shutdown"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    run(c.asgi({"type": "lifespan"}, receive, send))
    run(c.asgi({"type": "websocket"}, receive, send))

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_asgi_failure_modes() -> None:
    c = collector()

    async def scenario() -> list[Any]:
        c.slow(0.05)
        slow = await _asgi_request(c, "POST", "/matomo.php", bulk(PAGE_VIEW))
        c.heal()
        c.hold()
        held = asyncio.ensure_future(_asgi_request(c, "POST", "/matomo.php", bulk(PAGE_VIEW)))
        await asyncio.sleep(0.05)
        was_done = held.done()
        c.release()
        released = await held
        c.hang_after_read(0.05)
        hung = await _asgi_request(c, "POST", "/matomo.php", bulk(PAGE_VIEW))
        page = await _asgi_request(c, "GET", "/")
        return [slow[0], was_done, released[0], hung[0], page[0]]

    assert run(scenario()) == [200, False, 200, 503, 200]
    assert len(c.hits) == 2
    assert c.requests[-1] == {"bulk": True, "count": 0, "hung": True}


# -- the WSGI app ---------------------------------------------------------------------------------


def test_wsgi_bad_content_length() -> None:
    c = collector()
    started: list[str] = []
    start_response: Callable[..., None] = lambda status, headers: started.append(status)  # noqa: E731

    payload = c.wsgi(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/matomo.php",
            "CONTENT_LENGTH": "abc",
            "wsgi.input": None,
        },
        start_response,
    )

    assert started == ["400 Bad Request"]
    assert payload == [b"This resource is part of Matomo."]


def test_body_limit_answers_413() -> None:
    c = collector()
    c.limit_body(100)
    small, big = bulk(PAGE_VIEW), bulk(*[PAGE_VIEW] * 5)

    statuses = [c.handle("POST", "/matomo.php", "", body)[0] for body in (small, big)]
    c.limit_body(None)
    statuses.append(c.handle("POST", "/matomo.php", "", big)[0])

    assert statuses == [200, 413, 200]
    assert c.answered == [200, 413, 200]
    assert len(c.hits) == 6
