"""Page-view hits for many request shapes, parameter by parameter.

Each row is a request (an ASGI scope or a WSGI environ, turned into a view by the core), a
configuration, a response and what the handler did; the expected hit is ``BASE`` with the
row's changes (``None`` = the parameter is absent). Every hit is also posted to the collector,
which must track it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from matomo_tracking import (
    RequestView,
    ResponseView,
    TrackingContext,
    request_from_asgi,
    request_from_wsgi,
)
from tests.core.builders import (
    FIREFOX,
    NOW,
    PEER,
    TOKEN,
    FixedRandom,
    assert_accepted,
    builder,
    environ,
    keyed_visitor_id,
    scope,
    wsgi_str,
)

BASE: dict[str, str] = {
    "idsite": "1",
    "rec": "1",
    "apiv": "1",
    "rand": "12345",
    "url": "http://example.org/",
    "action_name": "/",
    "ua": FIREFOX,
    "lang": "fr-CH, fr;q=0.9",
    "pv_id": "7d3000",
    "cid": keyed_visitor_id(PEER, FIREFOX),
}
OK = ResponseView(200, "text/html; charset=utf-8", ttfb_ms=None, body_bytes=1234)
PK_COOKIE = b"_pk_id.1.2a0b=0123456789ABCDEF.1700000000.; theme=dark"


def asgi(path: str = "/", **kwargs: Any) -> RequestView:
    return request_from_asgi(scope(path, **kwargs))


def wsgi(path_info: str = "/", **kwargs: Any) -> RequestView:
    return request_from_wsgi(environ(path_info, **kwargs))


def ua_only(ua: bytes = FIREFOX.encode()) -> list[tuple[bytes, bytes]]:
    return [(b"user-agent", ua)]


def default_headers(*extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"example.org"),
        (b"user-agent", FIREFOX.encode()),
        (b"accept-language", b"fr-CH, fr;q=0.9"),
        *extra,
    ]


@dataclass
class Case:
    id: str
    request: RequestView
    expect: dict[str, str | None]
    config: dict[str, Any] = field(default_factory=dict)
    response: ResponseView = OK
    handler: Callable[[TrackingContext], None] | None = None
    route: str | None = None
    sites: tuple[int, ...] = (1,)


def _dims(ctx: TrackingContext) -> None:
    ctx.set_dimension(1, "from-handler")


def _cvars(ctx: TrackingContext) -> None:
    ctx.set_custom_variable(1, "Role", "admin")
    ctx.set_custom_variable(2, "Plan", "pro", scope="visit")


def _handler_overrides(ctx: TrackingContext) -> None:
    ctx.set_action_name("Checkout")
    ctx.url = "https://shop.example/checkout?step=2"
    ctx.referrer = "https://ads.example/campaign"
    ctx.set_user_id("  alice@example.org  ")
    ctx.set_visitor_id("ABCDEF0123456789")
    ctx.track_product_view(sku="SKU-1", name="Mug", category=["Home", "Kitchen"], price=9.5)


def _raise(request: RequestView) -> str:
    raise RuntimeError("a broken hook")


V6 = "2001:db8:85a3:8d3:1319:8a2e:370:7348"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

CASES = [
    # -- plain requests and query strings ------------------------------------------------
    Case("asgi-root", asgi(), {}),
    Case("wsgi-root", wsgi(), {}),
    Case(
        "query-percent-encoded-utf8",
        asgi("/search", query=b"q=%C3%A9t%C3%A9&lang=fr"),
        {"url": "http://example.org/search?q=%C3%A9t%C3%A9&lang=fr", "action_name": "/search"},
    ),
    Case(
        "query-plus-empty-and-bare",
        asgi("/s", query=b"q=a+b&empty=&flag&x=%2B"),
        {"url": "http://example.org/s?q=a+b&empty=&flag&x=%2B", "action_name": "/s"},
    ),
    Case(
        "query-secrets-redacted-others-byte-identical",
        asgi("/login", query=b"user=b%C3%B6b&password=hunter2&Token=abc&next=%2Fhome&api%5Fkey=k"),
        {
            "url": "http://example.org/login?user=b%C3%B6b&password=REDACTED&Token=REDACTED"
            "&next=%2Fhome&api%5Fkey=REDACTED",
            "action_name": "/login",
        },
    ),
    Case(
        "query-custom-redaction-list",
        asgi("/", query=b"sid=1&password=x"),
        {"url": "http://example.org/?sid=REDACTED&password=x"},
        config={"redact_query_params": ["SID"]},
    ),
    Case(
        "query-unencoded-utf8-bytes",
        asgi("/", query="q=été".encode()),
        {"url": "http://example.org/?q=été"},
    ),
    # -- paths -----------------------------------------------------------------------------
    Case(
        "asgi-non-ascii-path",
        asgi("/café/😀"),
        {"url": "http://example.org/caf%C3%A9/%F0%9F%98%80", "action_name": "/café/😀"},
    ),
    Case(
        "asgi-raw-path-keeps-client-encoding",
        asgi("/a b/é", raw_path=b"/a%20b/%c3%a9"),
        {"url": "http://example.org/a%20b/%c3%a9", "action_name": "/a b/é"},
    ),
    Case(
        "asgi-raw-path-with-query-ignored",
        asgi("/items", raw_path=b"/items?x=1", query=b"x=1"),
        {"url": "http://example.org/items?x=1", "action_name": "/items"},
    ),
    Case(
        "asgi-raw-path-not-matching-ignored",
        asgi("/items", raw_path=b"/other"),
        {"url": "http://example.org/items", "action_name": "/items"},
    ),
    Case(
        "asgi-raw-path-invalid-utf8-escape",
        asgi("/bad\ufffd", raw_path=b"/bad%FF"),
        {"url": "http://example.org/bad%FF", "action_name": "/bad\ufffd"},
    ),
    Case(
        "asgi-root-path-inside-path (uvicorn >= 0.26)",
        asgi("/api/items/1", root_path="/api", raw_path=b"/api/items/1", query=b"a=%C3%A9"),
        {"url": "http://example.org/api/items/1?a=%C3%A9", "action_name": "/items/1"},
    ),
    Case(
        "asgi-root-path-outside-path (older servers)",
        asgi("/items/1", root_path="/api", raw_path=b"/items/1", query=b"a=%C3%A9"),
        {"url": "http://example.org/api/items/1?a=%C3%A9", "action_name": "/items/1"},
    ),
    Case(
        "asgi-root-path-itself",
        asgi("/api", root_path="/api"),
        {"url": "http://example.org/api", "action_name": "/"},
    ),
    Case(
        "asgi-root-path-is-not-a-segment-prefix",
        asgi("/apiary", root_path="/api"),
        {"url": "http://example.org/api/apiary", "action_name": "/apiary"},
    ),
    Case(
        "wsgi-script-name-and-utf8-path-info",
        wsgi(wsgi_str("/items/é".encode()), script_name="/app"),
        {"url": "http://example.org/app/items/%C3%A9", "action_name": "/items/é"},
    ),
    Case(
        "wsgi-raw-uri-keeps-client-encoding",
        wsgi(
            wsgi_str("/items/é".encode()),
            script_name="/app",
            query="x=1",
            extra={"RAW_URI": "/app/items/%c3%a9?x=1"},
        ),
        {"url": "http://example.org/app/items/%c3%a9?x=1", "action_name": "/items/é"},
    ),
    Case(
        "wsgi-script-name-only",
        wsgi("", script_name="/app/"),
        {"url": "http://example.org/app", "action_name": "/"},
    ),
    # -- header decoding -----------------------------------------------------------------
    Case(
        "wsgi-utf8-and-latin1-headers",
        wsgi(
            headers={
                "HTTP_HOST": "example.org",
                "HTTP_USER_AGENT": wsgi_str(b"Mozilla/5.0 (caf\xc3\xa9)"),
                "HTTP_REFERER": wsgi_str(b"http://example.org/caf\xe9"),
            }
        ),
        {
            "ua": "Mozilla/5.0 (café)",
            "urlref": "http://example.org/café",
            "lang": None,
            "cid": keyed_visitor_id(PEER, "Mozilla/5.0 (café)"),
        },
    ),
    Case(
        "asgi-utf8-and-latin1-headers",
        asgi(
            headers=[
                (b"host", b"example.org"),
                (b"user-agent", b"Mozilla/5.0 (caf\xc3\xa9)"),
                (b"referer", b"http://example.org/caf\xe9"),
            ]
        ),
        {
            "ua": "Mozilla/5.0 (café)",
            "urlref": "http://example.org/café",
            "lang": None,
            "cid": keyed_visitor_id(PEER, "Mozilla/5.0 (café)"),
        },
    ),
    # -- peers, hosts and servers --------------------------------------------------------
    Case(
        "ipv6-peer",
        asgi(client=("2001:db8::1", 1)),
        {"cid": keyed_visitor_id("2001:db8::1", FIREFOX)},
    ),
    Case("ipv4-mapped-ipv6-peer", asgi(client=("::ffff:203.0.113.7", 1)), {}),
    Case(
        "wsgi-ipv6-peer",
        wsgi(remote_addr="2001:db8::1"),
        {"cid": keyed_visitor_id("2001:db8::1", FIREFOX)},
    ),
    Case(
        "no-client-no-server-no-host",
        asgi(headers=ua_only(), client=None, server=None),
        {"url": "http://localhost/", "lang": None, "cid": None},
    ),
    Case(
        "no-host-server-address-with-port",
        asgi(headers=ua_only(), server=("10.0.0.5", 8080)),
        {"url": "http://10.0.0.5:8080/", "lang": None},
    ),
    Case(
        "no-host-default-https-port-dropped",
        asgi(headers=ua_only(), server=("example.net", 443), scheme="https"),
        {"url": "https://example.net/", "lang": None},
    ),
    Case(
        "no-host-ipv6-server",
        asgi(headers=ua_only(), server=("::1", 8000)),
        {"url": "http://[::1]:8000/", "lang": None},
    ),
    Case(
        "wsgi-no-host-default-port-dropped",
        wsgi(headers={"HTTP_USER_AGENT": FIREFOX}, server=("example.net", "80")),
        {"url": "http://example.net/", "lang": None},
    ),
    Case(
        "host-header-port-kept-and-lowercased",
        asgi(headers=[(b"host", b"Example.ORG:8443"), (b"user-agent", FIREFOX.encode())]),
        {"url": "http://example.org:8443/", "lang": None},
    ),
    Case(
        "invalid-host-header-falls-back-to-server",
        asgi(headers=[(b"host", b"evil.example/x y"), (b"user-agent", FIREFOX.encode())]),
        {"url": "http://example.org/", "lang": None},
    ),
    # -- trusted proxies ------------------------------------------------------------------
    Case(
        "trusted-xff-read-from-the-right",
        asgi(
            client=("10.0.0.2", 1),
            extra_headers=[(b"x-forwarded-for", b"198.51.100.1, 203.0.113.9, 10.0.0.3")],
        ),
        {"cip": "203.0.113.9", "cid": None},
        config={"trusted_proxies": ["10.0.0.0/8"], "token_auth": TOKEN},
    ),
    Case(
        "trusted-xff-cidr-v6",
        asgi(client=("2001:db8:ffff::2", 1), extra_headers=[(b"x-forwarded-for", b"2001:db8::9")]),
        {"cip": "2001:db8::9", "cid": None},
        config={"trusted_proxies": ["2001:db8:ffff::/48"], "token_auth": TOKEN},
    ),
    Case(
        "trusted-xff-proto-and-host-nearest-hop",
        asgi(
            client=("10.0.0.2", 1),
            extra_headers=[
                (b"x-forwarded-for", b"198.51.100.1"),
                (b"x-forwarded-proto", b"http, https"),
                (b"x-forwarded-host", b"a.example, shop.example"),
            ],
        ),
        {"url": "https://shop.example/", "cid": keyed_visitor_id("198.51.100.1", FIREFOX)},
        config={"trusted_proxies": ["10.0.0.1", "10.0.0.2"]},
    ),
    Case(
        "trusted-forwarded-rfc7239-quoted-ipv6",
        asgi(
            client=("10.0.0.2", 1),
            extra_headers=[
                (
                    b"forwarded",
                    b'for=198.51.100.1, for="[2001:db8::7]:4711";proto=https;host=shop.example,'
                    b" for=10.0.0.3",
                )
            ],
        ),
        {"url": "https://shop.example/", "cip": "2001:db8::7", "cid": None},
        config={"trusted_proxies": ["10.0.0.0/8"], "token_auth": TOKEN},
    ),
    Case(
        "untrusted-peer-forwarded-headers-change-nothing",
        asgi(
            extra_headers=[
                (b"x-forwarded-for", b"198.51.100.1"),
                (b"x-forwarded-proto", b"https"),
                (b"x-forwarded-host", b"shop.example"),
                (b"forwarded", b"for=198.51.100.1;proto=https;host=shop.example"),
            ]
        ),
        {"cip": PEER, "cid": None},
        config={"trusted_proxies": ["10.0.0.0/8"], "token_auth": TOKEN},
    ),
    Case(
        "no-trusted-proxies-forwarded-headers-change-nothing",
        asgi(client=("10.0.0.2", 1), extra_headers=[(b"x-forwarded-for", b"198.51.100.1")]),
        {"cip": "10.0.0.2", "cid": None},
        config={"token_auth": TOKEN},
    ),
    # -- identity -------------------------------------------------------------------------
    Case(
        "token-sends-cip-not-a-keyed-id",
        asgi(),
        {"cip": PEER, "cid": None},
        config={"token_auth": TOKEN},
    ),
    Case(
        "token-and-pk-id-cookie",
        asgi(extra_headers=[(b"cookie", PK_COOKIE)]),
        {"cip": PEER, "_id": "0123456789abcdef", "cid": None},
        config={"token_auth": TOKEN},
    ),
    Case(
        "pk-id-cookie-without-token-is-id-and-cid",
        asgi(extra_headers=[(b"cookie", PK_COOKIE)]),
        {"_id": "0123456789abcdef", "cid": "0123456789abcdef"},
    ),
    Case(
        "wsgi-cookies-joined-by-gunicorn",
        wsgi(extra={"HTTP_COOKIE": "a=1,_pk_id.1.2a0b=0123456789abcdef.1700000000."}),
        {"_id": "0123456789abcdef", "cid": "0123456789abcdef"},
    ),
    Case(
        "client-hints-to-uadata",
        asgi(
            extra_headers=[
                (b"sec-ch-ua", b'"Chromium";v="124", "Not-A.Brand";v="99"'),
                (b"sec-ch-ua-mobile", b"?0"),
                (b"sec-ch-ua-platform", b'"Linux"'),
                (b"sec-ch-ua-arch", b'"x86"'),
            ]
        ),
        {
            "uadata": '{"sec-ch-ua":"\\"Chromium\\";v=\\"124\\", \\"Not-A.Brand\\";v=\\"99\\"",'
            '"sec-ch-ua-mobile":"?0","sec-ch-ua-platform":"\\"Linux\\"","sec-ch-ua-arch":"\\"x86\\""}'
        },
    ),
    # -- pf_srv -----------------------------------------------------------------------------
    Case("pf-srv-rounded-down", asgi(), {"pf_srv": "12"}, response=ResponseView(200, ttfb_ms=12.4)),
    Case("pf-srv-rounded-up", asgi(), {"pf_srv": "13"}, response=ResponseView(200, ttfb_ms=12.6)),
    Case(
        "pf-srv-negative-is-zero", asgi(), {"pf_srv": "0"}, response=ResponseView(200, ttfb_ms=-3.0)
    ),
    Case(
        "pf-srv-at-the-limit",
        asgi(),
        {"pf_srv": "16777215"},
        response=ResponseView(200, ttfb_ms=16777215.2),
    ),
    Case(
        "pf-srv-over-the-limit-omitted", asgi(), {}, response=ResponseView(200, ttfb_ms=16777216.0)
    ),
    Case(
        "pf-srv-not-a-number-omitted", asgi(), {}, response=ResponseView(200, ttfb_ms=float("nan"))
    ),
    # -- truncation ----------------------------------------------------------------------
    Case(
        "url-cut-to-1024-bytes-on-an-escape-boundary",
        asgi("/" + "é" * 600),
        {"url": "http://example.org/" + "%C3%A9" * 167, "action_name": "/" + "é" * 511},
    ),
    Case(
        "url-cut-to-1024-bytes-on-a-utf8-boundary",
        asgi("/q", query=("q=" + "é" * 600).encode()),
        {"url": "http://example.org/q?q=" + "é" * 500, "action_name": "/q"},
    ),
    Case("action-name-cut-to-1024-bytes", asgi(), {"action_name": "€" * 341}, route="€" * 400),
    Case(
        "urlref-cut-to-1500-chars",
        asgi(extra_headers=[(b"referer", b"http://ref.example/" + b"a" * 2000)]),
        {"urlref": ("http://ref.example/" + "a" * 2000)[:1500]},
    ),
    Case(
        "huge-user-agent-cut-to-1024-chars",
        asgi(headers=[(b"host", b"example.org"), (b"user-agent", b"Mozilla/5.0 " + b"x" * 9000)]),
        {
            "ua": ("Mozilla/5.0 " + "x" * 9000)[:1024],
            "lang": None,
            "cid": keyed_visitor_id(PEER, ("Mozilla/5.0 " + "x" * 9000)[:1024]),
        },
    ),
    # -- anonymize_ip ---------------------------------------------------------------------
    *(
        Case(
            f"anonymize-ipv4-{n}-bytes",
            asgi(),
            {"cip": masked, "cid": None},
            config={"anonymize_ip": n, "token_auth": TOKEN},
        )
        for n, masked in ((1, "203.0.113.0"), (2, "203.0.0.0"), (3, "203.0.0.0"))
    ),
    *(
        Case(
            f"anonymize-ipv6-{n}-bytes",
            asgi(client=(V6, 1)),
            {"cip": masked, "cid": None},
            config={"anonymize_ip": n, "token_auth": TOKEN},
        )
        for n, masked in ((1, "2001:db8:85a3:8d3::"), (2, "2001:db8:85a3::"), (3, "2001:d00::"))
    ),
    Case(
        "anonymize-ip-without-token-keys-the-masked-ip",
        asgi(),
        {"cid": keyed_visitor_id("203.0.0.0", FIREFOX)},
        config={"anonymize_ip": 2},
    ),
    # -- host pinning -----------------------------------------------------------------------
    Case(
        "allowed-hosts-unknown-host-pinned-to-first",
        asgi(headers=[*default_headers()[1:], (b"host", b"evil.example")]),
        {"url": "http://example.org/"},
        config={"allowed_hosts": ["Example.org", "*.example.com"]},
    ),
    Case(
        "allowed-hosts-wildcard-with-port",
        asgi(headers=[*default_headers()[1:], (b"host", b"shop.example.com:8080")]),
        {"url": "http://shop.example.com:8080/"},
        config={"allowed_hosts": ["example.org", "*.example.com"]},
    ),
    Case(
        "allowed-hosts-first-is-a-wildcard",
        asgi(headers=[*default_headers()[1:], (b"host", b"evil.example")]),
        {"url": "http://example.com/"},
        config={"allowed_hosts": ["*.example.com"]},
    ),
    Case(
        "base-url-pins-scheme-and-host",
        asgi("/items", query=b"x=1", headers=[*default_headers()[1:], (b"host", b"evil.example")]),
        {"url": "https://www.example.org/items?x=1", "action_name": "/items"},
        config={"base_url": "https://www.example.org/"},
    ),
    # -- bots ---------------------------------------------------------------------------------
    Case(
        "bots-exclude-leaves-bot-hits-to-matomo-to-drop",
        asgi(headers=[(b"host", b"example.org"), (b"user-agent", GOOGLEBOT.encode())]),
        {"ua": GOOGLEBOT, "lang": None, "cid": keyed_visitor_id(PEER, GOOGLEBOT)},
        config={"bots": "exclude"},
    ),
    Case("bots-visits", asgi(), {"bots": "1"}, config={"bots": "visits"}),
    Case(
        "bots-bot-reports",
        asgi(),
        {"recMode": "2", "http_status": "404", "bw_bytes": "512", "source": "my-app"},
        config={"bots": "bot-reports", "bot_source": "my-app"},
        response=ResponseView(404, "text/plain", body_bytes=512),
    ),
    Case(
        "bots-bot-reports-without-source",
        asgi(),
        {"recMode": "2", "http_status": "200", "bw_bytes": "1234"},
        config={"bots": "bot-reports"},
    ),
    # -- dimensions and custom variables ----------------------------------------------------
    Case(
        "dimensions-static-status-method-bytes",
        asgi(method="post"),
        {
            "dimension1": "static",
            "dimension2": "padded",
            "dimension3": "201",
            "dimension4": "POST",
            "dimension5": "77",
        },
        config={
            "dimensions": {1: "static", 2: "  padded\n"},
            "status_dimension": 3,
            "method_dimension": 4,
            "bytes_dimension": 5,
            "ignore_methods": [],
        },
        response=ResponseView(201, "application/json", body_bytes=77),
    ),
    Case(
        "dimension-overridden-by-the-handler",
        asgi(),
        {"dimension1": "from-handler", "dimension3": "200"},
        config={"dimensions": {1: "static"}, "status_dimension": 3},
        handler=_dims,
    ),
    Case(
        "custom-variables-json",
        asgi(),
        {"cvar": '{"1":["Role","admin"]}', "_cvar": '{"2":["Plan","pro"]}'},
        handler=_cvars,
    ),
    # -- hooks, the handler's context and the site -----------------------------------------
    Case(
        "user-id-and-action-name-hooks",
        asgi("/p", extra_headers=[(b"x-user", b"alice")]),
        {"uid": "alice", "action_name": "Page /p", "url": "http://example.org/p"},
        config={
            "user_id": lambda r: r.header("x-user") or None,
            "action_name": lambda r: f"Page {r.path}",
        },
    ),
    Case(
        "raising-hooks-are-ignored",
        asgi("/p"),
        {"action_name": "/p", "url": "http://example.org/p"},
        config={"user_id": _raise, "action_name": _raise},
    ),
    Case(
        "blank-user-id-not-sent",
        asgi("/p"),
        {"action_name": "/p", "url": "http://example.org/p"},
        config={"user_id": lambda r: "   "},
    ),
    Case(
        "route-is-the-default-action-name",
        asgi("/items/7"),
        {"action_name": "/items/{id}", "url": "http://example.org/items/7"},
        route="/items/{id}",
    ),
    Case(
        "handler-overrides",
        asgi(extra_headers=[(b"referer", b"https://example.org/")]),
        {
            "action_name": "Checkout",
            "url": "https://shop.example/checkout?step=2",
            "urlref": "https://ads.example/campaign",
            "uid": "alice@example.org",
            "cid": "abcdef0123456789",
            "_pks": "SKU-1",
            "_pkn": "Mug",
            "_pkc": '["Home", "Kitchen"]',
            "_pkp": "9.5",
        },
        handler=_handler_overrides,
    ),
    Case(
        "site-id-callable",
        asgi("/shop/cart"),
        {
            "idsite": "7",
            "action_name": "/shop/cart",
            "url": "http://example.org/shop/cart",
            "cid": keyed_visitor_id(PEER, FIREFOX, site=7),
        },
        config={"site_id": lambda r: 7 if r.path.startswith("/shop") else 1},
        sites=(1, 7),
    ),
]


def expected_params(case: Case) -> dict[str, str]:
    merged: dict[str, str | None] = {**BASE, **case.expect}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_page_view(case: Case) -> None:
    hits_builder = builder(**case.config)
    context = hits_builder.new_context()
    if case.handler is not None:
        case.handler(context)

    hits = hits_builder.build(
        case.request, case.response, context, now=NOW, rng=FixedRandom(), route=case.route
    )

    assert len(hits) == 1
    assert dict(hits[0].params) == expected_params(case)
    assert hits[0].created == NOW
    assert len(hits[0].params["url"].encode()) <= 1024
    assert_accepted(hits, token_auth=hits_builder.config.token_auth, site_ids=case.sites)


def test_there_are_enough_request_shapes() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# -- the pk_id cookie, good and bad ----------------------------------------------------------

COOKIES = [
    ("js-tracker-cookie", "_pk_id.1.2a0b=0123456789abcdef.1700000000.", "0123456789abcdef"),
    ("uri-encoded-value", "_pk_id.1.2a0b=0123456789abcdef%2E1700000000%2E", "0123456789abcdef"),
    (
        "matomo-3-cookie",
        "_pk_id.1.2a0b=0123456789abcdef.1500000000.4.1500000000.1500000000.",
        "0123456789abcdef",
    ),
    (
        "after-other-cookies",
        "a=1; b=2; _pk_id.1.8809=fedcba9876543210.1700000000.",
        "fedcba9876543210",
    ),
    (
        "after-a-malformed-cookie",
        'bad"cookie; =x; _pk_id.1.2a0b=0123456789abcdef.1.',
        "0123456789abcdef",
    ),
    ("quoted-value", '_pk_id.1.2a0b="0123456789abcdef.1700000000."', "0123456789abcdef"),
    (
        "first-valid-of-two",
        "_pk_id.1.aaaa=nothex!!nothex!!.1.; _pk_id.1.bbbb=0123456789abcdef.1.",
        "0123456789abcdef",
    ),
    ("non-hex", "_pk_id.1.2a0b=0123456789abcdeg.1700000000.", None),
    ("too-short", "_pk_id.1.2a0b=0123456789abcde.1700000000.", None),
    ("too-long", "_pk_id.1.2a0b=0123456789abcdef0.1700000000.", None),
    ("other-site", "_pk_id.10.2a0b=0123456789abcdef.1700000000.", None),
    ("no-hash-part", "_pk_id.1=0123456789abcdef.1700000000.", None),
    ("oversized-header", "x=" + "y" * 9000 + "; _pk_id.1.2a0b=0123456789abcdef.1.", None),
    ("empty-value", "_pk_id.1.2a0b=", None),
    ("garbage", ";;;==;\x7f", None),
]


@pytest.mark.parametrize(
    ("cookie", "visitor"), [c[1:] for c in COOKIES], ids=[c[0] for c in COOKIES]
)
def test_pk_id_cookie(cookie: str, visitor: str | None) -> None:
    request = asgi(extra_headers=[(b"cookie", cookie.encode())])

    (hit,) = builder().build(request, OK, None, now=NOW, rng=FixedRandom())

    if visitor is None:
        assert "_id" not in hit.params
        assert hit.params["cid"] == BASE["cid"]
    else:
        assert hit.params["_id"] == visitor
        assert hit.params["cid"] == visitor
    assert_accepted([hit])


# -- what is not tracked, and the hits a handler adds ---------------------------------------


def test_skipped_context_builds_nothing() -> None:
    hits_builder = builder()
    context = hits_builder.new_context()
    context.track_event("Video", "Play")
    context.skip()

    assert hits_builder.build(asgi(), OK, context, now=NOW, rng=FixedRandom()) == []


@pytest.mark.parametrize(
    ("config", "response"),
    [
        ({"ignore_status_codes": [404]}, ResponseView(404)),
        ({"ignore_html": True}, ResponseView(200, "text/html; charset=utf-8")),
        ({"site_id": lambda r: 0}, OK),
        ({"site_id": lambda r: True}, OK),
        ({"site_id": lambda r: "1"}, OK),
        ({"site_id": _raise}, OK),
    ],
    ids=["ignored-status", "ignored-html", "site-zero", "site-bool", "site-str", "site-raises"],
)
def test_not_tracked(config: dict[str, Any], response: ResponseView) -> None:
    assert builder(**config).build(asgi(), response, None, now=NOW, rng=FixedRandom()) == []


def test_extra_hits_share_the_visit_and_page_view() -> None:
    hits_builder = builder(token_auth=TOKEN, bots="bot-reports", bot_source="app")
    context = hits_builder.new_context()
    context.set_user_id("alice")
    context.track_event("Video", "Play", "Intro", 1.5)
    context.track_site_search("mugs", "Shop", 3)
    context.track_goal(4, revenue=10)
    context.ping()

    hits = hits_builder.build(
        asgi(extra_headers=[(b"cookie", PK_COOKIE)]), OK, context, now=NOW, rng=FixedRandom()
    )

    assert [h.created for h in hits] == [NOW] * 5
    shared = {
        "idsite": "1",
        "rec": "1",
        "apiv": "1",
        "rand": "12345",
        "url": "http://example.org/",
        "ua": FIREFOX,
        "lang": "fr-CH, fr;q=0.9",
        "cip": PEER,
        "_id": "0123456789abcdef",
        "uid": "alice",
        "recMode": "2",
        "source": "app",
        "pv_id": "7d3000",
    }
    assert [dict(h.params) for h in hits[1:]] == [
        {**shared, "e_c": "Video", "e_a": "Play", "ca": "1", "e_n": "Intro", "e_v": "1.5"},
        {**shared, "search": "mugs", "search_cat": "Shop", "search_count": "3"},
        {**shared, "idgoal": "4", "revenue": "10"},
        {**shared, "ping": "1"},
    ]
    assert hits[0].params["http_status"] == "200"
    assert_accepted(hits, token_auth=TOKEN)


def test_keyed_visitor_id_changes_with_the_day() -> None:
    hits_builder = builder()
    rng = FixedRandom()

    (today,) = hits_builder.build(asgi(), OK, None, now=NOW, rng=rng)
    (same_day,) = hits_builder.build(asgi(), OK, None, now=NOW + 60, rng=rng)
    (tomorrow,) = hits_builder.build(asgi(), OK, None, now=NOW + 86400, rng=rng)

    assert today.params["cid"] == same_day.params["cid"] == BASE["cid"]
    assert tomorrow.params["cid"] == keyed_visitor_id(PEER, FIREFOX, day="2023-11-15")


def test_raising_hook_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    hits_builder = builder(user_id=_raise)

    for _ in range(3):
        hits_builder.build(asgi(), OK, None, now=NOW, rng=FixedRandom())

    warnings = [r for r in caplog.records if "user_id hook raised" in r.getMessage()]
    assert len(warnings) == 1


def test_for_config_uses_the_configured_salt() -> None:
    from matomo_tracking import HitBuilder
    from tests.core.builders import config

    salted = HitBuilder.for_config(config(visitor_salt="test-salt"), random_salt=b"ignored")
    (hit,) = salted.build(asgi(), OK, None, now=NOW, rng=FixedRandom())

    assert hit.params["cid"] == BASE["cid"]


def test_for_config_without_salt_warns_only_when_ids_matter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from matomo_tracking import HitBuilder
    from tests.core.builders import config

    with_token = HitBuilder.for_config(config(token_auth=TOKEN), random_salt=b"r")
    assert not [r for r in caplog.records if "visitor_salt" in r.getMessage()]

    random_salted = HitBuilder.for_config(config(), random_salt=b"random")
    (hit,) = random_salted.build(asgi(), OK, None, now=NOW, rng=FixedRandom())

    assert [r for r in caplog.records if "visitor_salt" in r.getMessage()]
    assert hit.params["cid"] == keyed_visitor_id(PEER, FIREFOX, salt=b"random")
    assert with_token.config.token_auth == TOKEN


def test_uadata_is_json_with_header_style_keys() -> None:
    request = asgi(extra_headers=[(b"x-requested-with", b"com.example.app")])

    (hit,) = builder().build(request, OK, None, now=NOW, rng=FixedRandom())

    assert json.loads(hit.params["uadata"]) == {"x-requested-with": "com.example.app"}


# -- redaction beyond the page's own query ---------------------------------------------------


def _redact_hook(name: str) -> bool:
    return name.startswith("utm_")


REDACTIONS = [
    (
        "referrer-query",
        {},
        [(b"referer", b"https://example.org/reset?token=abc&next=%2F")],
        None,
        {"urlref": "https://example.org/reset?token=REDACTED&next=%2F"},
    ),
    (
        "referrer-fragment",
        {},
        [(b"referer", b"https://example.org/cb#access_token=abc&state=1")],
        None,
        {"urlref": "https://example.org/cb#access_token=REDACTED&state=1"},
    ),
    (
        "referrer-fragment-route",
        {},
        [(b"referer", b"https://example.org/#/login?password=x&u=1")],
        None,
        {"urlref": "https://example.org/#/login?password=REDACTED&u=1"},
    ),
    (
        "hook-on-the-page-url",
        {"redact_query": _redact_hook},
        [],
        b"utm_source=news&q=1&password=x",
        {"url": "http://example.org/?utm_source=REDACTED&q=1&password=REDACTED"},
    ),
    (
        "hook-that-raises-redacts",
        {"redact_query": _raise},
        [(b"referer", b"https://ref.example/?q=1")],
        b"q=1&x",
        {"url": "http://example.org/?q=REDACTED&x", "urlref": "https://ref.example/?q=REDACTED"},
    ),
    (
        "nothing-to-redact",
        {},
        [(b"referer", b"https://ref.example/plain")],
        None,
        {"urlref": "https://ref.example/plain"},
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "headers", "query", "expect"),
    [r[1:] for r in REDACTIONS],
    ids=[r[0] for r in REDACTIONS],
)
def test_redaction(
    kwargs: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
    query: bytes | None,
    expect: dict[str, str],
) -> None:
    request = asgi(query=query or b"", extra_headers=headers)

    (hit,) = builder(**kwargs).build(request, OK, None, now=NOW, rng=FixedRandom())

    assert {k: hit.params.get(k) for k in expect} == expect


def test_handler_url_is_redacted_and_cut() -> None:
    hits_builder = builder()
    context = hits_builder.new_context()
    context.url = "https://example.org/x?password=p&q=" + "é" * 600

    (hit,) = hits_builder.build(asgi(), OK, context, now=NOW, rng=FixedRandom())

    assert hit.params["url"].startswith("https://example.org/x?password=REDACTED&q=éé")
    assert len(hit.params["url"].encode()) <= 1024


# -- identity corner cases -------------------------------------------------------------------


def test_token_with_a_forced_visitor_id_and_no_peer() -> None:
    hits_builder = builder(token_auth=TOKEN)
    context = hits_builder.new_context()
    context.set_visitor_id("00000000000000ff")

    (hit,) = hits_builder.build(asgi(client=None), OK, context, now=NOW, rng=FixedRandom())

    assert "cip" not in hit.params
    assert hit.params["cid"] == "00000000000000ff"
    assert_accepted([hit], token_auth=TOKEN)


def test_no_user_agent() -> None:
    (hit,) = builder().build(
        asgi(headers=[(b"host", b"example.org")]), OK, None, now=NOW, rng=FixedRandom()
    )

    assert "ua" not in hit.params
    assert hit.params["cid"] == keyed_visitor_id(PEER, "")


def test_keyed_ids_are_remembered_within_bounds() -> None:
    hits_builder = builder()
    long_ua = "Mozilla/5.0 " + "x" * 600
    rng = FixedRandom()

    ids = {
        hits_builder.build(
            asgi(client=(f"10.0.{i // 256}.{i % 256}", 1)), OK, None, now=NOW, rng=rng
        )[0].params["cid"]
        for i in range(4100)
    }
    (long_agent,) = hits_builder.build(
        asgi(headers=[(b"host", b"example.org"), (b"user-agent", long_ua.encode())]),
        OK,
        None,
        now=NOW,
        rng=rng,
    )

    assert len(ids) == 4100
    assert long_agent.params["cid"] == keyed_visitor_id(PEER, long_ua[:1024])


@pytest.mark.parametrize(
    ("host", "allowed", "url"),
    [
        (b"[::1]:8080", ["[::1]"], "http://[::1]:8080/"),
        (b"[::2]", ["[::1]"], "http://[::1]/"),
        (b"EXAMPLE.com", ["*.example.com"], "http://example.com/"),
        (b"a.b.example.com", ["*.example.com"], "http://a.b.example.com/"),
        (b"badexample.com", ["*.example.com"], "http://example.com/"),
    ],
)
def test_allowed_hosts(host: bytes, allowed: list[str], url: str) -> None:
    request = asgi(headers=[(b"host", host), (b"user-agent", FIREFOX.encode())])

    (hit,) = builder(allowed_hosts=allowed).build(request, OK, None, now=NOW, rng=FixedRandom())

    assert hit.params["url"] == url


def test_redacts_without_a_hook() -> None:
    assert builder().redacts("password") is False
    assert builder(redact_query=lambda name: name == "q").redacts("q") is True


def test_configured_dimensions_without_a_context() -> None:
    (hit,) = builder(status_dimension=2).build(asgi(), OK, None, now=NOW, rng=FixedRandom())

    assert hit.params["dimension2"] == "200"


def test_handler_dimensions_without_configured_ones() -> None:
    hits_builder = builder()
    context = hits_builder.new_context()
    context.set_dimension(7, "from-handler")

    (hit,) = hits_builder.build(asgi(), OK, context, now=NOW, rng=FixedRandom())

    assert {k: v for k, v in hit.params.items() if k.startswith("dimension")} == {
        "dimension7": "from-handler"
    }


def test_client_hints_are_remembered_within_bounds() -> None:
    hits_builder = builder()
    rng = FixedRandom()

    def uadata(platform: str) -> str:
        request = asgi(
            extra_headers=[(b"sec-ch-ua", b'"A";v="1"'), (b"sec-ch-ua-platform", platform.encode())]
        )
        (hit,) = hits_builder.build(request, OK, None, now=NOW, rng=rng)
        return hit.params["uadata"]

    first = uadata("Linux")
    assert uadata("Linux") == first  # remembered
    values = {uadata(f"P{i}") for i in range(4200)}
    huge = uadata("x" * 5000)

    assert (
        uadata("Linux") == first == '{"sec-ch-ua":"\\"A\\";v=\\"1\\"","sec-ch-ua-platform":"Linux"}'
    )
    assert len(values) == 4200
    assert huge.endswith('"sec-ch-ua-platform":"' + "x" * 256 + '"}')


def test_site_id_of_a_request() -> None:
    assert builder().site_id(asgi()) == 1
    assert builder(site_id=lambda r: 4).site_id(asgi()) == 4
    assert builder(site_id=lambda r: -4).site_id(asgi()) is None
