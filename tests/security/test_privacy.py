"""Privacy options, through both adapters (and the standalone tracker where it builds URLs
from a request): privacy signals, IP anonymisation before the address leaves the process, no
cookies ever set, and secrets in query strings redacted from tracked URLs and referrers while
every other byte stays as the client sent it."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from matomo_tracking.config import DEFAULT_REDACTED_QUERY_PARAMS
from matomo_tracking.hits import redact_query, redact_url
from matomo_tracking.wire import encode_hit
from matomo_wsgi import Tracker
from tests.security.harness import (
    ADAPTERS,
    AsgiApp,
    AsgiPlan,
    RecordingDispatcher,
    WsgiPlan,
    asgi_middleware,
    asgi_scope,
    run_asgi,
    track_request,
)
from tests.sentinel import SENTINEL_TOKEN

TOKEN: dict[str, Any] = {"token_auth": SENTINEL_TOKEN}

# -- privacy signals ---------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_respect_dnt_skips_requests_that_send_dnt(adapter: str) -> None:
    tracked = track_request(adapter, {"respect_dnt": True}, headers=[("dnt", "1")])

    assert tracked.hits == []
    assert tracked.outcome.error is None  # the app still ran and answered


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    "headers",
    [[("dnt", "1"), ("dnt", "1")], [("dnt", " 1 ")], [("x-do-not-track", "1")]],
    ids=["repeated", "spaces", "x-do-not-track"],
)
def test_respect_dnt_reads_every_form_of_the_signal(
    adapter: str, headers: list[tuple[str, str]]
) -> None:
    assert track_request(adapter, {"respect_dnt": True}, headers=headers).hits == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_dnt_is_not_respected_unless_asked(adapter: str) -> None:
    tracked = track_request(adapter, {}, headers=[("dnt", "1"), ("x-do-not-track", "1")])

    assert len(tracked.hits) == 1
    assert len(track_request(adapter, {"respect_dnt": True}, headers=[("dnt", "0")]).hits) == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_respect_gpc_skips_requests_that_send_sec_gpc(adapter: str) -> None:
    assert track_request(adapter, {"respect_gpc": True}, headers=[("sec-gpc", "1")]).hits == []
    assert len(track_request(adapter, {"respect_gpc": True}, headers=[("sec-gpc", "0")]).hits) == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_gpc_is_not_respected_unless_asked(adapter: str) -> None:
    assert len(track_request(adapter, {"respect_dnt": True}, headers=[("sec-gpc", "1")]).hits) == 1


# -- IP anonymisation ----------------------------------------------------------------------------

ANONYMIZED = [
    ("203.0.113.77", 1, "203.0.113.0"),
    ("203.0.113.77", 2, "203.0.0.0"),
    ("203.0.113.77", 3, "203.0.0.0"),
    ("2001:db8:abcd:1234:5678:9abc:def0:1234", 1, "2001:db8:abcd:1234::"),
    ("2001:db8:abcd:1234:5678:9abc:def0:1234", 2, "2001:db8:abcd::"),
    ("2001:db8:abcd:1234:5678:9abc:def0:1234", 3, "2001:d00::"),
]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(("address", "masked", "expected"), ANONYMIZED)
def test_anonymize_ip_masks_cip_before_it_leaves_the_process(
    adapter: str, address: str, masked: int, expected: str
) -> None:
    tracked = track_request(adapter, {**TOKEN, "anonymize_ip": masked}, client=address)

    assert tracked.hit["cip"] == expected
    data = encode_hit(tracked.hits[0]).data.decode()
    assert address not in data
    assert str(ipaddress.ip_address(address).exploded) not in data


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_anonymize_ip_applies_to_the_address_a_trusted_proxy_forwarded(adapter: str) -> None:
    options = {**TOKEN, "anonymize_ip": 1, "trusted_proxies": ["10.0.0.0/8"]}
    hit = track_request(
        adapter, options, headers=[("x-forwarded-for", "198.51.100.77")], client="10.0.0.1"
    ).hit

    assert hit["cip"] == "198.51.100.0"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_anonymize_ip_keys_the_visitor_id_with_the_masked_address(adapter: str) -> None:
    # Without a token no IP is sent; the keyed visitor id is computed from the anonymised
    # address, so it cannot single out one address of the masked network either.
    def visitor(address: str, masked: int) -> str:
        return track_request(adapter, {"anonymize_ip": masked}, client=address).hit["cid"]

    assert visitor("198.51.100.1", 1) == visitor("198.51.100.200", 1)
    assert visitor("198.51.100.1", 0) != visitor("198.51.100.200", 0)
    assert visitor("198.51.100.1", 1) != visitor("198.51.101.1", 1)


def test_tracker_anonymizes_the_ip_it_is_given() -> None:
    dispatcher = RecordingDispatcher()
    tracker = Tracker(url="http://matomo.test", dispatcher=dispatcher, anonymize_ip=2, **TOKEN)

    tracker.track_page_view("Home", url="https://shop.test/", ip="203.0.113.77")
    tracker.track_page_view("Home", request=asgi_scope(client="2001:db8:abcd:1234::1"))

    assert [h.params["cip"] for h in dispatcher.take()] == ["203.0.0.0", "2001:db8:abcd::"]


# -- cookies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_middleware_never_sets_cookies(adapter: str) -> None:
    cookie = [("cookie", "_pk_id.1.abcd=0123456789abcdef.1700000000.; session=s")]
    tracked = track_request(adapter, {}, headers=cookie)

    assert tracked.hit["_id"] == "0123456789abcdef"  # the cookie was read, not written
    assert "set-cookie" not in repr(tracked.outcome.response).lower()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_apps_own_cookies_pass_through_unchanged(adapter: str) -> None:
    tracked = track_request(
        adapter,
        {},
        asgi_plan=AsgiPlan(headers=[(b"set-cookie", b"app=1; HttpOnly")]),
        wsgi_plan=WsgiPlan(headers=[("Set-Cookie", "app=1; HttpOnly")]),
    )

    assert repr(tracked.outcome.response).lower().count("set-cookie") == 1


# -- query-string redaction --------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_secret_query_parameters_are_redacted_case_insensitively(adapter: str) -> None:
    query = "q=shoes&PassWord=hunter2&access_TOKEN=abc&api%5Fkey=k1&+token+=t&code=c0de&page=2"
    hit = track_request(adapter, {}, path="/search", query=query).hit

    assert hit["url"] == (
        "http://shop.test/search?q=shoes&PassWord=REDACTED&access_TOKEN=REDACTED"
        "&api%5Fkey=REDACTED&+token+=REDACTED&code=REDACTED&page=2"
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_redact_query_hook_redacts_more_names(adapter: str) -> None:
    options: dict[str, Any] = {"redact_query": lambda name: name.lower().startswith("x-")}
    hit = track_request(adapter, options, query="X-Signed=s&x-amz-date=d&password=p&q=1").hit

    assert (
        urlsplit(hit["url"]).query == "X-Signed=REDACTED&x-amz-date=REDACTED&password=REDACTED&q=1"
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_redact_query_hook_that_raises_redacts_and_never_breaks_a_request(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str) -> bool:
        raise RuntimeError("hook bug")

    with caplog.at_level(logging.WARNING):
        tracked = track_request(adapter, {"redact_query": broken}, query="q=1&page=2")

    assert urlsplit(tracked.hit["url"]).query == "q=REDACTED&page=REDACTED"  # fails closed
    assert tracked.outcome.error is None
    assert "redact_query" in caplog.text


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_redact_query_params_replaces_the_default_list(adapter: str) -> None:
    hit = track_request(adapter, {"redact_query_params": ["SID"]}, query="sid=1&password=p").hit

    assert urlsplit(hit["url"]).query == "sid=REDACTED&password=p"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_referrer_query_and_fragment_are_redacted(adapter: str) -> None:
    referrer = "https://shop.test/reset?user=bob&token=abc123&next=%2F#access_token=xyz&state=s"
    hit = track_request(adapter, {}, headers=[("referer", referrer)]).hit

    assert hit["urlref"] == (
        "https://shop.test/reset?user=bob&token=REDACTED&next=%2F#access_token=REDACTED&state=s"
    )


def test_urls_and_referrers_set_by_a_handler_are_redacted() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        context = scope["state"]["matomo"]
        context.url = "https://shop.test/page?password=p&q=1"
        context.referrer = "https://other.test/?api_key=k"
        await AsgiApp()(scope, receive, send)

    middleware, dispatcher = asgi_middleware(app)
    run_asgi(middleware, asgi_scope())
    [hit] = dispatcher.take()

    assert hit.params["url"] == "https://shop.test/page?password=REDACTED&q=1"
    assert hit.params["urlref"] == "https://other.test/?api_key=REDACTED"


def test_tracker_redacts_urls_it_builds_or_is_given() -> None:
    dispatcher = RecordingDispatcher()
    tracker = Tracker(url="http://matomo.test", dispatcher=dispatcher, allowed_hosts=["shop.test"])
    request = asgi_scope(
        query="password=p&q=1",
        headers=[("host", "evil.example"), ("referer", "https://shop.test/?token=t")],
    )

    tracker.track_page_view("From a request", request=request)
    tracker.track_event(
        "c", "a", url="https://shop.test/x?secret=s", referrer="https://shop.test/?code=c"
    )

    first, second = (h.params for h in dispatcher.take())
    assert first["url"] == "http://shop.test/?password=REDACTED&q=1"
    assert first["urlref"] == "https://shop.test/?token=REDACTED"
    assert second["url"] == "https://shop.test/x?secret=REDACTED"
    assert second["urlref"] == "https://shop.test/?code=REDACTED"


# -- the property: everything else stays byte for byte -----------------------------------------

SECRET = sorted(DEFAULT_REDACTED_QUERY_PARAMS)
NAMES = st.one_of(
    st.sampled_from(
        [*SECRET, "PassWord", "api%5Fkey", "%70assword", "+token", "q", "page", "", "a=b", "x%zz"]
    ),
    st.text(max_size=8),
)
VALUES = st.one_of(st.text(max_size=8), st.sampled_from(["%", "%zz", "a=b", "?", "#", "%26"]))
PARTS = st.lists(
    st.one_of(st.tuples(NAMES, VALUES).map("=".join), NAMES),  # a bare name has nothing to redact
    max_size=8,
)


def _is_secret(raw_name: str) -> bool:
    from urllib.parse import unquote_plus

    return unquote_plus(raw_name).strip().lower() in DEFAULT_REDACTED_QUERY_PARAMS


@given(parts=PARTS)
def test_redaction_keeps_every_other_byte_of_the_query(parts: list[str]) -> None:
    query = "&".join(parts)

    redacted = redact_query(query, DEFAULT_REDACTED_QUERY_PARAMS)

    before, after = query.split("&"), redacted.split("&")
    assert len(before) == len(after)
    for original, result in zip(before, after, strict=True):
        name, sep, _ = original.partition("=")
        if sep and _is_secret(name):
            assert result == name + "=REDACTED"  # the name exactly as sent
        else:
            assert result == original


@given(parts=PARTS, fragment=PARTS, prefix=st.sampled_from(["https://shop.test/p", "/p", ""]))
def test_url_redaction_keeps_every_other_byte(
    parts: list[str], fragment: list[str], prefix: str
) -> None:
    assume("#" not in "".join(parts))
    url = prefix + "?" + "&".join(parts) + "#" + "&".join(fragment)

    redacted = redact_url(url, DEFAULT_REDACTED_QUERY_PARAMS)

    query = redact_query("&".join(parts), DEFAULT_REDACTED_QUERY_PARAMS)
    head = "&".join(fragment)
    if "?" in head:
        start, _, rest = head.partition("?")
        tail = start + "?" + redact_query(rest, DEFAULT_REDACTED_QUERY_PARAMS)
    else:
        tail = redact_query(head, DEFAULT_REDACTED_QUERY_PARAMS)
    assert redacted == prefix + "?" + query + "#" + tail
    assert redact_url(prefix, DEFAULT_REDACTED_QUERY_PARAMS) == prefix
