"""Spoofing: one test per rule, through both adapters. Forwarded headers are the client's own
words unless a trusted proxy added them; the host of a tracked URL is pinned when asked to be,
and a forged one never reaches Matomo as it was written."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.security.harness import ADAPTERS, track_request
from tests.sentinel import SENTINEL_TOKEN

pytestmark = pytest.mark.parametrize("adapter", ADAPTERS)

TOKEN = {"token_auth": SENTINEL_TOKEN}
PROXY = "10.0.0.1"
BEHIND_PROXY = {**TOKEN, "trusted_proxies": ["10.0.0.0/8", "fd00::/8"]}
VISITOR = "198.51.100.7"
FORGED = "6.6.6.6"

SPOOF_HEADERS = [
    ("x-forwarded-for", FORGED),
    ("forwarded", f'for={FORGED};proto=https;host="evil.example"'),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("x-real-ip", FORGED),
    ("client-ip", FORGED),
]


def url_parts(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


# -- no trusted proxies: forwarded headers change nothing ---------------------------------------


def test_no_trusted_proxies_x_forwarded_for_changes_nothing(adapter: str) -> None:
    hit = track_request(adapter, TOKEN, headers=[("x-forwarded-for", FORGED)], client=VISITOR).hit

    assert hit["cip"] == VISITOR


def test_no_trusted_proxies_forwarded_changes_nothing(adapter: str) -> None:
    hit = track_request(
        adapter,
        TOKEN,
        headers=[("forwarded", f"for={FORGED};proto=https;host=evil.example")],
        client=VISITOR,
    ).hit

    assert hit["cip"] == VISITOR
    assert url_parts(hit["url"]) == ("http", "shop.test")


def test_no_trusted_proxies_x_forwarded_proto_and_host_change_nothing(adapter: str) -> None:
    hit = track_request(
        adapter,
        TOKEN,
        headers=[
            ("host", "shop.test"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
        client=VISITOR,
    ).hit

    assert url_parts(hit["url"]) == ("http", "shop.test")


def test_no_trusted_proxies_every_spoof_header_at_once_changes_nothing(adapter: str) -> None:
    plain = track_request(adapter, TOKEN, headers=[("host", "shop.test")], client=VISITOR).hit
    spoofed = track_request(
        adapter, TOKEN, headers=[("host", "shop.test"), *SPOOF_HEADERS], client=VISITOR
    ).hit

    assert (
        (spoofed["cip"], spoofed["url"])
        == (plain["cip"], plain["url"])
        == (VISITOR, "http://shop.test/")
    )


def test_no_token_no_visitor_ip_leaves_the_process(adapter: str) -> None:
    tracked = track_request(adapter, {}, headers=[("x-forwarded-for", FORGED)], client=VISITOR)

    assert "cip" not in tracked.hit
    assert VISITOR not in repr(dict(tracked.hit))


# -- trusted proxies: only the hops they added are believed --------------------------------------


def test_trusted_proxy_client_supplied_leftmost_x_forwarded_for_is_ignored(adapter: str) -> None:
    # The client sent "X-Forwarded-For: 6.6.6.6"; the proxy appended the address it saw.
    hit = track_request(
        adapter, BEHIND_PROXY, headers=[("x-forwarded-for", f"{FORGED}, {VISITOR}")], client=PROXY
    ).hit

    assert hit["cip"] == VISITOR


def test_trusted_proxy_chain_is_read_from_the_right_skipping_trusted_hops(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[("x-forwarded-for", f"{FORGED}, {VISITOR}, 10.9.9.9, fd00::7")],
        client=PROXY,
    ).hit

    assert hit["cip"] == VISITOR


def test_trusted_proxy_repeated_x_forwarded_for_headers_keep_their_order(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[("x-forwarded-for", FORGED), ("x-forwarded-for", VISITOR)],
        client=PROXY,
    ).hit

    assert hit["cip"] == VISITOR


def test_untrusted_peer_forwarded_headers_are_ignored(adapter: str) -> None:
    # trusted_proxies is set, but this request did not come through one.
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[("host", "shop.test"), *SPOOF_HEADERS],
        client=VISITOR,
    ).hit

    assert hit["cip"] == VISITOR
    assert url_parts(hit["url"]) == ("http", "shop.test")


def test_trusted_proxy_forwarded_is_read_from_the_right(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[
            ("host", "shop.test"),
            ("forwarded", f"for={FORGED};host=evil.example, for={VISITOR};proto=https"),
        ],
        client=PROXY,
    ).hit

    assert hit["cip"] == VISITOR
    assert url_parts(hit["url"]) == ("https", "shop.test")


def test_trusted_proxy_scheme_and_host_come_from_the_nearest_hop(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[
            ("x-forwarded-for", VISITOR),
            ("x-forwarded-proto", "http, https"),
            ("x-forwarded-host", "evil.example, www.shop.test"),
        ],
        client=PROXY,
    ).hit

    assert url_parts(hit["url"]) == ("https", "www.shop.test")


def test_client_forwarded_header_through_an_x_forwarded_for_proxy_is_not_believed(
    adapter: str,
) -> None:
    # nginx appends X-Forwarded-For and passes any Forwarded header on as the client sent it.
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[("forwarded", f"for={FORGED}"), ("x-forwarded-for", VISITOR)],
        client=PROXY,
    ).hit

    assert hit["cip"] != FORGED
    assert hit["cip"] == PROXY  # the two disagree: neither is believed


def test_client_x_forwarded_for_through_a_forwarded_proxy_is_not_believed(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[("x-forwarded-for", FORGED), ("forwarded", f"for={VISITOR}")],
        client=PROXY,
    ).hit

    assert hit["cip"] == PROXY


def test_trusted_proxy_setting_both_headers_alike_is_believed(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[
            ("forwarded", 'for="[2001:db8::7]:4711";proto=https;host=www.shop.test'),
            ("x-forwarded-for", "2001:db8::7"),
            ("x-forwarded-proto", "https"),
        ],
        client=PROXY,
    ).hit

    assert hit["cip"] == "2001:db8::7"
    assert url_parts(hit["url"]) == ("https", "www.shop.test")


@pytest.mark.parametrize(
    "xff",
    ["garbage", "unknown", "_hidden", "999.1.1.1", "1.2.3.4.5", "", ",,,", "[::1"],
)
def test_trusted_proxy_garbage_in_x_forwarded_for_falls_back_to_the_peer(
    adapter: str, xff: str
) -> None:
    hit = track_request(adapter, BEHIND_PROXY, headers=[("x-forwarded-for", xff)], client=PROXY).hit

    assert hit["cip"] == PROXY


@pytest.mark.parametrize(
    "forwarded", ["for=garbage", "for", "=;=;", 'for="[::1', "for=unknown;proto=https", "\x00\xff"]
)
def test_trusted_proxy_garbage_in_forwarded_falls_back_to_the_peer(
    adapter: str, forwarded: str
) -> None:
    hit = track_request(adapter, BEHIND_PROXY, headers=[("forwarded", forwarded)], client=PROXY).hit

    assert hit["cip"] == PROXY
    assert url_parts(hit["url"])[0] == "http"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]:443", "fe80::1"),
        ('"[2001:db8::9]:1234"', "2001:db8::9"),
        ("::ffff:198.51.100.7", VISITOR),
    ],
)
def test_ipv6_zone_ids_ports_and_mapped_addresses_are_read(
    adapter: str, value: str, address: str
) -> None:
    hit = track_request(
        adapter, BEHIND_PROXY, headers=[("x-forwarded-for", value)], client=PROXY
    ).hit

    assert hit["cip"] == address


def test_peer_with_an_ipv6_zone_id(adapter: str) -> None:
    hit = track_request(adapter, TOKEN, client="fe80::1%eth0").hit

    assert hit["cip"] == "fe80::1"


# -- the host of a tracked URL -----------------------------------------------------------------


def test_allowed_hosts_pin_a_forged_host_header(adapter: str) -> None:
    options = {"allowed_hosts": ["shop.test", "*.shop.test"]}
    allowed = track_request(adapter, options, headers=[("host", "www.shop.test")]).hit
    forged = track_request(adapter, options, headers=[("host", "evil.example")]).hit

    assert url_parts(allowed["url"]) == ("http", "www.shop.test")
    assert url_parts(forged["url"]) == ("http", "shop.test")


def test_allowed_hosts_pin_a_forwarded_host_from_a_trusted_proxy(adapter: str) -> None:
    options = {**BEHIND_PROXY, "allowed_hosts": ["shop.test"]}
    hit = track_request(
        adapter,
        options,
        headers=[("x-forwarded-for", VISITOR), ("x-forwarded-host", "evil.example")],
        client=PROXY,
    ).hit

    assert url_parts(hit["url"]) == ("http", "shop.test")


def test_allowed_hosts_do_not_match_a_suffix_without_a_dot(adapter: str) -> None:
    hit = track_request(
        adapter, {"allowed_hosts": ["*.shop.test"]}, headers=[("host", "evilshop.test")]
    ).hit

    assert url_parts(hit["url"]) == ("http", "shop.test")


def test_base_url_ignores_host_and_forwarded_headers(adapter: str) -> None:
    options = {**BEHIND_PROXY, "base_url": "https://www.shop.test/app"}
    hit = track_request(
        adapter,
        options,
        path="/items/1",
        headers=[
            ("host", "evil.example"),
            ("x-forwarded-host", "evil2.example"),
            ("x-forwarded-proto", "http"),
        ],
        client=PROXY,
    ).hit

    assert hit["url"] == "https://www.shop.test/app/items/1"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example/x?y#",
        "a@evil.example",
        "a b",
        "shop.test:99999",
        "[",
        "[::1",
        "[zz::1]",
        "shop.test:",
        "\u00e9vil.example",
        "evil.example\\x",
        "",
    ],
)
def test_forged_host_with_garbage_falls_back_to_the_server_address(adapter: str, host: str) -> None:
    hit = track_request(adapter, {}, headers=[("host", host)], server=("shop.test", 8080)).hit

    assert url_parts(hit["url"]) == ("http", "shop.test:8080")


def test_forged_host_copied_into_the_server_name_falls_back_to_localhost(adapter: str) -> None:
    # gunicorn on a unix socket (the usual setup behind nginx) makes SERVER_NAME from Host.
    host = "a@evil.example/x?"
    hit = track_request(adapter, {}, headers=[("host", host)], server=(host, 80)).hit

    assert url_parts(hit["url"]) == ("http", "localhost")


def test_garbage_x_forwarded_host_from_a_trusted_proxy_is_ignored(adapter: str) -> None:
    hit = track_request(
        adapter,
        BEHIND_PROXY,
        headers=[
            ("host", "shop.test"),
            ("x-forwarded-for", VISITOR),
            ("x-forwarded-host", "a@evil.example"),
        ],
        client=PROXY,
    ).hit

    assert url_parts(hit["url"]) == ("http", "shop.test")
