"""Fuzzing both adapters in-process: whatever a client (or a broken server) puts in a request,
the app's answer is byte for byte what the bare app gives, nothing escapes but the app's own
exception, and every hit that is recorded is well formed, within every field limit, and
accepted by a Matomo-compatible collector.

The example budget comes from the hypothesis profile (``tests/conftest.py``): ``dev`` (100)
locally, ``ci`` (200) under CI. The long run: ``HYPOTHESIS_PROFILE=long`` (20,000 examples)::

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/security/test_fuzz.py \
        -p no:cacheprovider --timeout 0
"""

from __future__ import annotations

import functools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matomo_tracking.config import TrackingConfig
from matomo_tracking.testing import Collector
from tests.security.harness import (
    AsgiApp,
    AsgiPlan,
    RecordingDispatcher,
    WsgiApp,
    WsgiPlan,
    asgi_middleware,
    batch_bodies,
    check_hit,
    check_hits,
    run_asgi,
    run_wsgi,
    wsgi_middleware,
)
from tests.sentinel import SENTINEL_TOKEN

# -- raw material -------------------------------------------------------------------------------

TEXT = st.text(max_size=24)  # any code point but lone surrogates
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=24)
#: 64 KB is the largest header most servers accept (and larger than Matomo's field limits).
SIZES = st.sampled_from([1, 1, 1, 1, 40, 2731])


def enlarged(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values of ``strategy``, sometimes repeated up to 64 KB."""
    return st.tuples(strategy, SIZES).map(lambda pair: (pair[0] * pair[1])[: 64 * 1024])


def utf8(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


IPS = st.ip_addresses().map(str)
IP_ISH = st.one_of(
    IPS,
    IPS.map(lambda ip: f"[{ip}]:443" if ":" in ip else f"{ip}:80"),
    st.sampled_from(
        [
            "fe80::1%eth0",
            "[fe80::1%25eth0]:80",
            "fe80::1%",
            "::ffff:10.0.0.1",
            "unknown",
            "_hidden",
            "",
            " ",
            '"',
            "[",
            "10.0.0.1, 10.0.0.2",
            "999.1.1.1",
            "1.2.3.4.5",
        ]
    ),
    TEXT,
)
XFF = st.lists(IP_ISH, max_size=6).map(", ".join)
FORWARDED = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(["for", "proto", "host", "by", "For", "FOR", ""]),
            st.one_of(
                IP_ISH,
                IP_ISH.map(lambda v: f'"{v}"'),
                st.sampled_from(["https", "http", "ftp", "evil.example", "a@b", "x/y"]),
            ),
        ),
        max_size=4,
    ).map(lambda pairs: ";".join(f"{k}={v}" for k, v in pairs)),
    max_size=4,
).map(", ".join)
PK_ID_VALUES = st.one_of(
    st.from_regex(r"[0-9a-fA-F]{16}\.[0-9]{10}\.", fullmatch=True),
    st.sampled_from(
        ["zzzzzzzzzzzzzzzz.1.", "0123456789abcdeg.1.", "%00%00", '"0123456789abcdef"', ""]
    ),
    st.just("0123456789abcdef" * 4096),  # oversized
    TEXT,
)
COOKIES = st.one_of(
    st.tuples(
        st.sampled_from(["_pk_id.1.abcd", "_pk_id.1.", "_pk_id", "_PK_ID.1.x"]), PK_ID_VALUES
    ).map("=".join),
    st.lists(
        st.sampled_from(["a=1", '"', "$Foo=1", ";", ",", "=", "_pk_id.1.x=0123456789abcdef.1."])
    ).map("; ".join),
    TEXT,
)
QUERY = st.one_of(
    st.binary(max_size=40),
    st.lists(
        st.tuples(
            st.sampled_from(["q", "password", "TOKEN", "a%00", "%zz", "", "api_key", "x+y"]), TEXT
        ).map(lambda kv: f"{kv[0]}={kv[1]}"),
        max_size=5,
    ).map(lambda parts: utf8("&".join(parts))),
)
PATHS = st.one_of(
    st.sampled_from(
        ["/", "/a/../b", "/%00", "/\x00", "/%zz", "/%", "/%C3%A9", "/\u00e9", "//double", "/..", ""]
    ),
    TEXT.map(lambda t: "/" + t),
    TEXT,
)

#: Header values by name: what an attacker would aim at each one, and anything at all.
HEADER_VALUES: dict[str, st.SearchStrategy[bytes]] = {
    "host": st.one_of(
        st.sampled_from(
            [
                b"shop.test",
                b"SHOP.test:8080",
                b"[::1]:80",
                b"evil.example/x?y#",
                b"a@evil.example",
                b"a b",
                b"shop.test:99999",
                b"::",
                b"[",
                b"shop.test\r\nx: y",
                b"\xff\xfe",
            ]
        ),
        TEXT.map(utf8),
    ),
    "user-agent": st.one_of(
        st.sampled_from([b"Mozilla/5.0", b"Googlebot/2.1", b"curl/8"]), TEXT.map(utf8)
    ),
    "accept-language": TEXT.map(utf8),
    "referer": st.one_of(
        st.sampled_from([b"https://shop.test/reset?token=abc&x=1", b"javascript:alert(1)", b"//x"]),
        TEXT.map(utf8),
    ),
    "cookie": COOKIES.map(utf8),
    "x-forwarded-for": XFF.map(utf8),
    "x-forwarded-proto": st.sampled_from([b"https", b"http, https", b"ftp", b"", b"HTTPS"]),
    "x-forwarded-host": st.one_of(
        st.sampled_from([b"evil.example", b"a@evil", b"x/y"]), TEXT.map(utf8)
    ),
    "forwarded": FORWARDED.map(utf8),
    "sec-ch-ua": TEXT.map(utf8),
    "sec-ch-ua-platform": TEXT.map(utf8),
    "x-requested-with": TEXT.map(utf8),
    "dnt": st.sampled_from([b"1", b"0", b"1, 1", b"yes"]),
    "sec-gpc": st.sampled_from([b"1", b"0"]),
    "content-type": TEXT.map(utf8),
}
HEADER_NAMES = sorted(HEADER_VALUES)
NAMED_HEADER = st.sampled_from(HEADER_NAMES).flatmap(
    lambda name: st.tuples(
        st.sampled_from([name.encode(), name.upper().encode(), name.title().encode()]),
        enlarged(
            st.one_of(
                HEADER_VALUES[name],
                st.binary(max_size=24),
                LATIN1.map(lambda t: t.encode("latin-1")),
            )
        ),
    )
)
HEADERS = st.lists(
    st.one_of(NAMED_HEADER, st.tuples(st.binary(max_size=16), enlarged(st.binary(max_size=24)))),
    max_size=10,
)
ADDRESSES = st.one_of(
    st.none(),
    st.tuples(IP_ISH, st.integers(0, 65535)),
    st.lists(st.one_of(IP_ISH, st.integers()), max_size=3),
    st.sampled_from(["junk", 5]),
    st.tuples(
        st.sampled_from(["shop.test", "a@evil.example/x?", "evil example", "::1", "", "[::1]"]),
        st.one_of(st.integers(0, 65535), st.none()),
    ),
)
METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD", "OPTIONS", "PROPFIND", "get", "", "G\x00ET", "\u00c4"]),
    TEXT,
    st.just("X" * 10_000),
    st.integers(),
)

# -- configurations -------------------------------------------------------------------------------

CONFIGS: list[dict[str, Any]] = [
    {},
    {
        "token_auth": SENTINEL_TOKEN,
        "trusted_proxies": ["0.0.0.0/0", "::/0"],
        "anonymize_ip": 2,
    },
    {
        "token_auth": SENTINEL_TOKEN,
        "trusted_proxies": ["10.0.0.0/8", "fd00::/8", "127.0.0.1"],
        "allowed_hosts": ["shop.test", "*.shop.test"],
        "respect_dnt": True,
        "respect_gpc": True,
        "bots": "bot-reports",
        "status_dimension": 1,
        "method_dimension": 2,
        "bytes_dimension": 3,
    },
    {"base_url": "https://www.shop.test/app", "anonymize_ip": 3, "bots": "visits"},
    {
        "ignore_paths": ["/health"],
        "ignore_patterns": [r"/admin/.*"],
        "ignore_user_agents": ["curl"],
        "ignore_bots": True,
        "ignore_html": True,
        "redact_query_params": ["q"],
    },
]


class _Adapters:
    """One middleware per configuration and adapter, made once (hypothesis runs many examples
    per test; making dispatchers per example would only measure their construction)."""

    def __init__(self) -> None:
        self.asgi_app = AsgiApp()
        self.wsgi_app = WsgiApp()
        self.asgi = [asgi_middleware(self.asgi_app, **options) for options in CONFIGS]
        self.wsgi = [wsgi_middleware(self.wsgi_app, **options) for options in CONFIGS]


@functools.lru_cache(maxsize=1)
def adapters() -> _Adapters:
    return _Adapters()


# -- ASGI ---------------------------------------------------------------------------------------

ASGI_SCOPES = st.fixed_dictionaries(
    {"type": st.sampled_from(["http", "http", "http", "websocket"])},  # others pass through
    optional={
        "asgi": st.just({"version": "3.0"}),
        "http_version": st.sampled_from(["1.0", "1.1", "2", "3"]),
        "method": METHODS,
        "scheme": st.one_of(
            st.sampled_from(["http", "https", "ws", "wss", "ftp", "", "HTTPS"]), TEXT
        ),
        "path": st.one_of(enlarged(PATHS), st.none(), st.integers()),
        "raw_path": st.one_of(st.none(), enlarged(PATHS.map(utf8)), st.binary(max_size=40), TEXT),
        "root_path": st.one_of(st.sampled_from(["", "/", "/api", "/api/", "api"]), TEXT, st.none()),
        "query_string": st.one_of(enlarged(QUERY), TEXT, st.none()),
        "headers": HEADERS,
        "client": ADDRESSES,
        "server": ADDRESSES,
        "state": st.sampled_from([{}, {"other": 1}]),
    },
)
ASGI_PLANS = st.builds(
    AsgiPlan,
    status=st.sampled_from([200, 201, 204, 302, 304, 404, 500, 599]),
    headers=st.lists(
        st.one_of(
            st.tuples(
                st.just(b"content-type"),
                st.sampled_from([b"text/html", b"application/json", b"\xff"]),
            ),
            st.tuples(st.binary(max_size=12), st.binary(max_size=24)),
        ),
        max_size=4,
    ),
    chunks=st.lists(st.binary(max_size=64), max_size=3),
    fail=st.sampled_from([None, None, None, "before_start", "after_start", "after_body"]),
)
FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(
    scope=ASGI_SCOPES,
    plan=ASGI_PLANS,
    which=st.integers(0, len(CONFIGS) - 1),
    body=st.binary(max_size=16),
)
def test_asgi_middleware_survives_any_request(
    scope: dict[str, Any], plan: AsgiPlan, which: int, body: bytes
) -> None:
    made = adapters()
    middleware, dispatcher = made.asgi[which]
    made.asgi_app.plan = plan
    dispatcher.take()

    bare = run_asgi(made.asgi_app, scope, body)
    tracked = run_asgi(middleware, scope, body)

    assert tracked.same_as(bare), (tracked, bare)
    _check_recorded(dispatcher, middleware.config)


# -- WSGI ---------------------------------------------------------------------------------------


def _wsgi_header_key(name: bytes) -> str:
    return "HTTP_" + name.decode("latin-1").upper().replace("-", "_")


WSGI_HEADERS = HEADERS.map(
    lambda pairs: {_wsgi_header_key(name): value.decode("latin-1") for name, value in pairs}
)
WSGI_TEXT = st.one_of(LATIN1, TEXT)  # a conforming server gives latin-1; others do not
WSGI_ENVIRONS = st.fixed_dictionaries(
    {},
    optional={
        "REQUEST_METHOD": st.one_of(METHODS, st.none()),
        "wsgi.url_scheme": st.one_of(st.sampled_from(["http", "https", "ftp", ""]), WSGI_TEXT),
        "SCRIPT_NAME": st.one_of(st.sampled_from(["", "/app", "/app/", "app"]), WSGI_TEXT),
        "PATH_INFO": st.one_of(
            enlarged(PATHS.map(lambda p: utf8(p).decode("latin-1"))), WSGI_TEXT, st.none()
        ),
        "RAW_URI": st.one_of(enlarged(PATHS), st.just("/app/%C3%A9?x")),
        "REQUEST_URI": WSGI_TEXT,
        "QUERY_STRING": st.one_of(
            enlarged(QUERY.map(lambda q: q.decode("latin-1"))), WSGI_TEXT, st.integers()
        ),
        "REMOTE_ADDR": st.one_of(IP_ISH, st.none()),
        "SERVER_NAME": st.one_of(
            st.sampled_from(["shop.test", "a@evil.example/x?", "evil example", "::1", ""]),
            WSGI_TEXT,
        ),
        "SERVER_PORT": st.one_of(
            st.sampled_from(["80", "443", "8080", "\u00b2", "-1", "9" * 30, ""]), WSGI_TEXT
        ),
        "CONTENT_TYPE": WSGI_TEXT,
    },
)
WSGI_PLANS = st.builds(
    WsgiPlan,
    status=st.sampled_from(
        [
            "200 OK",
            "201 Created",
            "204 No Content",
            "302 Found",
            "404 Not Found",
            "500 Internal Server Error",
            "299",
            "abc",
        ]
    ),
    headers=st.lists(
        st.one_of(
            st.tuples(
                st.just("Content-Type"),
                st.sampled_from(["text/html; charset=utf-8", "application/json"]),
            ),
            st.tuples(LATIN1, LATIN1),
        ),
        max_size=4,
    ),
    chunks=st.lists(st.binary(max_size=64), max_size=3),
    write=st.booleans(),
    fail=st.sampled_from([None, None, None, "before_start", "after_start", "while_iterating"]),
)


@FUZZ
@given(
    environ=WSGI_ENVIRONS,
    headers=WSGI_HEADERS,
    non_latin1=st.dictionaries(
        st.sampled_from(["HTTP_HOST", "HTTP_USER_AGENT", "HTTP_COOKIE", "HTTP_X_FORWARDED_FOR"]),
        TEXT,
    ),
    plan=WSGI_PLANS,
    which=st.integers(0, len(CONFIGS) - 1),
)
def test_wsgi_middleware_survives_any_request(
    environ: dict[str, Any],
    headers: dict[str, str],
    non_latin1: dict[str, str],
    plan: WsgiPlan,
    which: int,
) -> None:
    made = adapters()
    middleware, dispatcher = made.wsgi[which]
    made.wsgi_app.plan = plan
    dispatcher.take()
    request = {**environ, **headers, **non_latin1}

    bare = run_wsgi(made.wsgi_app, request)
    tracked = run_wsgi(middleware, request)

    assert tracked.same_as(bare), (tracked, bare)
    _check_recorded(dispatcher, middleware.config)


def _check_recorded(dispatcher: RecordingDispatcher, config: TrackingConfig) -> None:
    hits = dispatcher.take()
    assert len(hits) <= 1  # one page view, or skipped
    check_hits(hits, config)


# -- many giant hits in one bulk request ----------------------------------------------------------

GIANT = b'\xf0\x9f\x98\x80"\\' * (64 * 1024 // 6)  # astral characters and JSON escapes, 64 KB


def _giant_scope(i: int) -> dict[str, Any]:
    names = [
        b"host",
        b"user-agent",
        b"accept-language",
        b"referer",
        b"cookie",
        b"x-forwarded-for",
        b"forwarded",
        b"x-forwarded-host",
        *(n.encode() for n in HEADER_NAMES if n.startswith("sec-ch")),
    ]
    names += [
        b"x-requested-with",
        b"sec-ch-ua-model",
        b"sec-ch-ua-arch",
        b"sec-ch-ua-full-version-list",
    ]
    return {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/" + GIANT.decode() + str(i),
        "query_string": b"q=" + b"%01\x01" * (16 * 1024),
        "headers": [(name, GIANT) for name in names],
        "client": ("10.1.2.3", 1234),
        "server": ("shop.test", 443),
    }


def test_many_giant_hits_stay_within_batch_limits() -> None:
    app = AsgiApp()
    middleware, dispatcher = asgi_middleware(app, token_auth=SENTINEL_TOKEN)
    wsgi, wsgi_dispatcher = wsgi_middleware(WsgiApp(), token_auth=SENTINEL_TOKEN)
    for i in range(40):
        run_asgi(middleware, _giant_scope(i))
        environ = {
            f"HTTP_{n.decode().upper().replace('-', '_')}": v.decode("latin-1")
            for n, v in _giant_scope(i)["headers"]
        }
        run_wsgi(
            wsgi,
            {
                **environ,
                "PATH_INFO": GIANT.decode("latin-1"),
                "REMOTE_ADDR": "10.1.2.3",
                "QUERY_STRING": "q=" + "%01\x01" * 16 * 1024,
            },
        )
    hits = dispatcher.take() + wsgi_dispatcher.take()
    assert len(hits) == 80
    config = middleware.config

    bodies = batch_bodies(hits, config)

    assert len(bodies) > 1  # the byte limit cut the batches, not the hit count
    assert max(len(b) for _, b in bodies) > config.batch_max_bytes // 2
    collector = Collector(token_auth=SENTINEL_TOKEN)
    for count, body in bodies:
        assert count <= config.batch_max_hits
        assert len(body) <= config.batch_max_bytes, len(body)
        status, _, answer = collector.handle("POST", "/matomo.php", "", body)
        assert status == 200
        assert json.loads(answer) == {
            "status": "success",
            "tracked": count,
            "invalid": 0,
            "invalid_indices": [],
        }
    for hit in hits:
        check_hit(hit, config)
