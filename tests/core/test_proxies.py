"""Origin resolution, IP parsing and anonymisation, visitor ids and field limits."""

from __future__ import annotations

import ipaddress

import pytest

from matomo_tracking import Origin, RequestView, TrustedProxies
from matomo_tracking.fields import clean_text, truncate_bytes, truncate_chars, truncate_url
from matomo_tracking.proxies import anonymize_ip, parse_ip
from matomo_tracking.visitor import pk_visitor_id, salted_visitor_id, valid_visitor_id


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (None, None),
        ("", None),
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.7 ", "203.0.113.7"),
        ('"203.0.113.7"', "203.0.113.7"),
        ("203.0.113.7:8080", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1", None),
        ("fe80::1%eth0", "fe80::1"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", None),
        ("_hidden", None),
        ("999.1.1.1", None),
    ],
)
def test_parse_ip(text: str | None, address: str | None) -> None:
    parsed = parse_ip(text)

    assert (str(parsed) if parsed is not None else None) == address


@pytest.mark.parametrize(
    ("address", "masked", "result"),
    [
        ("203.0.113.7", 0, "203.0.113.7"),
        ("203.0.113.7", 1, "203.0.113.0"),
        ("203.0.113.7", 2, "203.0.0.0"),
        ("203.0.113.7", 3, "203.0.0.0"),
        ("255.255.255.255", 3, "255.0.0.0"),
        # Matomo's own IPv6 test vectors (matomo-org/component-network tests/IPv6Test.php)
        ("2001:db8:0:8d3:0:8a2e:70:7344", 1, "2001:db8:0:8d3::"),
        ("2001:db8:0:8d3:0:8a2e:70:7344", 2, "2001:db8::"),
        ("2001:db8:0:8d3:0:8a2e:70:7344", 3, "2001:d00::"),
        ("2001:6f8:900:724::2", 1, "2001:6f8:900:724::"),
        ("2001:6f8:900:724::2", 2, "2001:6f8:900::"),
        ("2001:6f8:900:724::2", 3, "2001:600::"),
    ],
)
def test_anonymize_ip(address: str, masked: int, result: str) -> None:
    assert anonymize_ip(address, masked) == result


def view(
    client: str | None = "10.0.0.2",
    scheme: str = "http",
    server: tuple[str, int | None] | None = ("example.org", 80),
    **headers: str,
) -> RequestView:
    return RequestView(
        method="GET",
        scheme=scheme,
        path="/",
        url_path="/",
        query_string="",
        headers={"host": "example.org", **{k.replace("_", "-"): v for k, v in headers.items()}},
        client=client,
        server=server,
    )


TRUSTED = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])

ORIGINS: list[tuple[str, RequestView, Origin]] = [
    ("no-forwarded-headers", view(), Origin("10.0.0.2", "http", "example.org")),
    ("empty-xff", view(x_forwarded_for=""), Origin("10.0.0.2", "http", "example.org")),
    (
        "every-hop-trusted-takes-the-leftmost",
        view(x_forwarded_for="10.1.1.1, 10.2.2.2"),
        Origin("10.1.1.1", "http", "example.org"),
    ),
    (
        "garbage-hop-stops-the-walk",
        view(x_forwarded_for="198.51.100.1, garbage, 10.2.2.2"),
        Origin("10.2.2.2", "http", "example.org"),
    ),
    (
        "spoofed-left-entries-ignored",
        view(x_forwarded_for="1.1.1.1, 203.0.113.9"),
        Origin("203.0.113.9", "http", "example.org"),
    ),
    (
        "xff-with-ports",
        view(x_forwarded_for='"[2001:db8::9]:1234", 10.0.0.3:80'),
        Origin("2001:db8::9", "http", "example.org"),
    ),
    (
        "forwarded-proto-not-http-ignored",
        view(x_forwarded_for="203.0.113.9", x_forwarded_proto="ftp"),
        Origin("203.0.113.9", "http", "example.org"),
    ),
    (
        "invalid-forwarded-host-ignored",
        view(x_forwarded_for="203.0.113.9", x_forwarded_host="evil.example/<script>"),
        Origin("203.0.113.9", "http", "example.org"),
    ),
    (
        "forwarded-unknown-for",
        view(forwarded="for=unknown;proto=https;host=shop.example"),
        Origin("10.0.0.2", "http", "example.org"),
    ),
    (
        "forwarded-rfc2231-style-pair",
        view(forwarded="for*=utf-8''203.0.113.9;proto=https"),
        Origin("10.0.0.2", "http", "example.org"),
    ),
    (
        "forwarded-quoted-comma-and-escapes",
        view(forwarded='for=203.0.113.9;host="a\\"b,c";proto=HTTPS'),
        Origin("203.0.113.9", "https", "example.org"),
    ),
    (
        "forwarded-junk-pairs-ignored",
        view(forwarded="junk; =; for=203.0.113.9 ; proto = https ;;"),
        Origin("203.0.113.9", "https", "example.org"),
    ),
    (
        # A proxy adds one of the two and passes the other on from the client: believe neither.
        "forwarded-and-xff-disagree",
        view(forwarded="for=203.0.113.9", x_forwarded_for="198.51.100.1"),
        Origin("10.0.0.2", "http", "example.org"),
    ),
    (
        "forwarded-and-xff-agree",
        view(forwarded="for=203.0.113.9;proto=https", x_forwarded_for="203.0.113.9"),
        Origin("203.0.113.9", "https", "example.org"),
    ),
    (
        "trusted-ipv6-peer",
        view(client="[2001:db8:ffff::1]:443", x_forwarded_for="203.0.113.9"),
        Origin("203.0.113.9", "http", "example.org"),
    ),
    (
        "ipv4-address-is-not-in-a-v6-network",
        view(client="::ffff:11.0.0.1", x_forwarded_for="203.0.113.9"),
        Origin("11.0.0.1", "http", "example.org"),
    ),
    (
        "no-peer",
        view(client=None, x_forwarded_for="203.0.113.9"),
        Origin(None, "http", "example.org"),
    ),
]


@pytest.mark.parametrize(
    ("request_", "origin"), [o[1:] for o in ORIGINS], ids=[o[0] for o in ORIGINS]
)
def test_resolve(request_: RequestView, origin: Origin) -> None:
    assert TRUSTED.resolve(request_) == origin


def test_no_trusted_proxies() -> None:
    proxies = TrustedProxies([])

    assert not proxies
    assert bool(TRUSTED)
    assert proxies.trusts(ipaddress.ip_address("10.0.0.1")) is False
    assert TRUSTED.trusts(None) is False
    assert proxies.resolve(view(x_forwarded_for="203.0.113.9")) == Origin(
        "10.0.0.2", "http", "example.org"
    )


@pytest.mark.parametrize(
    ("server", "scheme", "host"),
    [
        (None, "http", "localhost"),
        (("example.org", None), "http", "example.org"),
        (("example.org", 80), "https", "example.org:80"),
        (("example.org", 443), "https", "example.org"),
        (("2001:db8::1", 8080), "http", "[2001:db8::1]:8080"),
        (("[2001:db8::1]", 80), "http", "[2001:db8::1]"),
    ],
)
def test_host_from_the_server_address(
    server: tuple[str, int | None] | None, scheme: str, host: str
) -> None:
    request = RequestView("GET", scheme, "/", "/", "", {}, client=None, server=server)

    assert TrustedProxies([]).resolve(request).host == host


# -- visitor ids ------------------------------------------------------------------------------


def test_valid_visitor_id() -> None:
    assert valid_visitor_id("0123456789abcdef")
    assert valid_visitor_id("0123456789ABCDEF")
    assert not valid_visitor_id("0123456789abcde")
    assert not valid_visitor_id("0123456789abcdefa")
    assert not valid_visitor_id("0123456789abcdeg")
    assert not valid_visitor_id("0123456789abcde\n")


@pytest.mark.parametrize(
    ("header", "site", "visitor"),
    [
        ("_pk_id.1.ab12=0123456789abcdef.1.", 1, "0123456789abcdef"),
        ("_pk_id.12.ab12=0123456789abcdef.1.", 12, "0123456789abcdef"),
        ("_pk_id.12.ab12=0123456789abcdef.1.", 1, None),
        ("_pk_id.1.a=0123456789abcdef.1.; $Foo=bar", 1, "0123456789abcdef"),
        ("_pk_ses.1.ab12=1", 1, None),
        ("", 1, None),
        ('_pk_id.1.a=0123456789abcdef.1.; x="y"; $Foo=bar', 1, "0123456789abcdef"),
        ("other=x_pk_id.1.a=0123456789abcdef.1.", 1, None),
        ("x_pk_id.1.a=0123456789abcdef.1.", 1, None),
        ('_pk_id.1.a=nothex; _pk_id.1.b="0123"', 1, None),
        ('_pk_id.1.a=nothex; $Foo=1; x="y"', 1, None),
    ],
    ids=[
        "site-1",
        "site-12",
        "site-prefix-is-not-a-match",
        "cookie-error",
        "other-cookie",
        "empty",
        "cookie-error-not-plain",
        "prefix-inside-a-value",
        "prefix-inside-a-name",
        "two-candidates-none-valid",
        "cookie-error-none-valid",
    ],
)
def test_pk_visitor_id(header: str, site: int, visitor: str | None) -> None:
    assert pk_visitor_id(header, site) == visitor


def test_salted_visitor_id_is_keyed_and_stable() -> None:
    first = salted_visitor_id(b"k", "203.0.113.7", "UA", 1, "2024-01-01")

    assert first == salted_visitor_id(b"k", "203.0.113.7", "UA", 1, "2024-01-01")
    assert valid_visitor_id(first)
    assert first != salted_visitor_id(b"other", "203.0.113.7", "UA", 1, "2024-01-01")
    assert first != salted_visitor_id(b"k", "203.0.113.7", "UA", 2, "2024-01-01")
    assert first != salted_visitor_id(b"k", "203.0.113.7", "UA", 1, "2024-01-02")
    assert valid_visitor_id(salted_visitor_id(b"k", "ip", "lone \udc80", 1, "d"))


# -- field limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limit", "result"),
    [
        ("short", 10, "short"),
        ("aaaa", 4, "aaaa"),
        ("ééé", 6, "ééé"),  # more than limit/4 characters, but fits
        ("ééé", 5, "éé"),
        ("a€", 3, "a"),
        ("😀😀", 7, "😀"),
        ("", 0, ""),
    ],
)
def test_truncate_bytes(value: str, limit: int, result: str) -> None:
    assert truncate_bytes(value, limit) == result


@pytest.mark.parametrize(
    ("value", "limit", "result"),
    [
        ("http://e/abc", 100, "http://e/abc"),
        ("http://e/%41%42%43", 15, "http://e/%41%42"),  # complete escapes of ASCII stay
        ("http://e/%41%42%43", 16, "http://e/%41%42"),  # no half escape
        ("http://e/%41%42%43", 17, "http://e/%41%42"),
        ("http://e/a%C3%A9", 15, "http://e/a"),  # no half character written as escapes
        ("http://e/%E2%82%AC%E2%82%AC", 24, "http://e/%E2%82%AC"),
        ("http://e/?q=é", 13, "http://e/?q="),
        ("http://e/%41%%C3%A9", 15, "http://e/%41"),  # a literal "%" before the cut goes too
    ],
)
def test_truncate_url(value: str, limit: int, result: str) -> None:
    assert truncate_url(value, limit) == result


def test_truncate_chars_and_clean_text() -> None:
    assert truncate_chars("abcdef", 3) == "abc"
    assert truncate_chars("abc", 3) == "abc"
    assert clean_text("  a\x00b\tc\x7f\n ", 10) == "abc"
    assert clean_text("  x  ", 10) == "x"
    assert clean_text("\u2028a\u2028b\u00a0c\u00a0", 100) == "a\u2028b\u00a0c"  # only C0 and DEL go
    assert clean_text("abcdef", 3) == "abc"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.org:8080", "example.org:8080"),
        ("example.org:65536", "example.org"),
        ("[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("[not:an:address::x]", "example.org"),
        ("[1.2.3.4]", "example.org"),
        ("exa mple.org", "example.org"),
        ("x" * 256, "example.org"),
    ],
)
def test_host_header_validation(host: str, expected: str) -> None:
    request = RequestView("GET", "http", "/", "/", "", {"host": host}, server=("example.org", 80))

    assert TrustedProxies([]).resolve(request).host == expected


def test_peers_are_remembered_within_bounds() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])

    clients = [f"192.0.{i // 256}.{i % 256}" for i in range(4100)] + ["[2001:db8::1]:1" + "0" * 70]
    origins = [proxies.resolve(view(client=c)) for c in clients]

    assert [o.client_ip for o in origins[:2]] == ["192.0.0.0", "192.0.0.1"]
    assert origins[-1].client_ip == "2001:db8::1"  # too long to be remembered, still parsed
    assert proxies.resolve(view(client="192.0.0.1")).client_ip == "192.0.0.1"
