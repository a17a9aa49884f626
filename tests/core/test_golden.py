"""Request views and hits from scopes and environs captured on real servers.

The JSON files under ``golden/`` were written by ``golden/capture.py`` (uvicorn and gunicorn on
127.0.0.1, requests sent with httpx); see its docstring to refresh them. Each capture is turned
back into the scope or environ the server handed the app, and the view and the hit built from it
are asserted exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from matomo_tracking import RequestView, ResponseView, request_from_asgi, request_from_wsgi
from tests.core.builders import NOW, FixedRandom, assert_accepted, builder, keyed_visitor_id

GOLDEN = Path(__file__).resolve().parent / "golden"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HTTPX_HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "connection": "keep-alive"}
HINTS = '"Chromium";v="124", "Not-A.Brand";v="99"'


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return data


def rebuild_scope(dumped: dict[str, Any]) -> dict[str, Any]:
    """The scope as uvicorn handed it over: latin-1 strings back to bytes, lists to tuples."""
    rebuilt = dict(dumped)
    for key in ("raw_path", "query_string"):
        rebuilt[key] = dumped[key].encode("latin-1")
    rebuilt["headers"] = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in dumped["headers"]]
    for key in ("client", "server"):
        if dumped.get(key) is not None:
            rebuilt[key] = tuple(dumped[key])
    return rebuilt


@dataclass
class Expected:
    """The view of one captured request (what both servers agree on, unless overridden)."""

    path: str
    url_path: str
    query: str = ""
    url_query: str | None = None  # the query in the tracked URL, when redacted
    headers: dict[str, str] = field(default_factory=lambda: {"user-agent": UA})
    method: str = "GET"
    asgi_path: str | None = None
    asgi_headers: dict[str, str] = field(default_factory=dict)
    wsgi_headers: dict[str, str] = field(default_factory=dict)
    asgi_client: str = "127.0.0.1"
    root_path: str = ""
    hit: dict[str, str] = field(default_factory=dict)


EXPECTED: dict[str, Expected] = {
    "root": Expected("/", "/"),
    "plain": Expected(
        "/items/1",
        "/items/1",
        headers={"user-agent": UA, "accept-language": "fr-CH"},
    ),
    "utf8_path_and_query": Expected(
        "/café/€", "/caf%C3%A9/%E2%82%AC", query="q=%C3%A9t%C3%A9&page=2"
    ),
    "lowercase_escapes": Expected("/café", "/caf%c3%a9"),
    "encoded_space_and_slash": Expected("/a b/c/d", "/a%20b/c%2Fd"),
    "invalid_utf8_escape": Expected("/badÿ", "/bad%FF", asgi_path="/bad\ufffd"),
    "query_plus_empty_and_secret": Expected(
        "/search",
        "/search",
        query="q=a+b&empty=&flag&password=hunter2&x=%2B",
        url_query="q=a+b&empty=&flag&password=REDACTED&x=%2B",
    ),
    "latin1_and_utf8_headers": Expected(
        "/h",
        "/h",
        headers={
            "user-agent": "Mozilla/5.0 (café)",
            "referer": "http://example.org/café",
            "x-odd": "ÿþ latin",
        },
        hit={"ua": "Mozilla/5.0 (café)", "urlref": "http://example.org/café"},
    ),
    "repeated_headers": Expected(
        "/r",
        "/r",
        asgi_headers={
            "accept-language": "de, en;q=0.5",
            "x-forwarded-for": "198.51.100.1, 203.0.113.9",
            "cookie": "a=1; _pk_id.1.1fff=0123456789ABCDEF.1700000000.",
        },
        wsgi_headers={
            "accept-language": "de,en;q=0.5",
            "x-forwarded-for": "198.51.100.1,203.0.113.9",
            "cookie": "a=1,_pk_id.1.1fff=0123456789ABCDEF.1700000000.",
        },
        # uvicorn --proxy-headers (its default) believes 127.0.0.1 and rewrote the client
        asgi_client="203.0.113.9",
        hit={"_id": "0123456789abcdef", "cid": "0123456789abcdef"},
    ),
    "cookies_and_client_hints": Expected(
        "/c",
        "/c",
        headers={
            "user-agent": UA,
            "cookie": "_pk_id.1.1fff=0123456789abcdef.1700000000.; session=xyz",
            "sec-ch-ua": HINTS,
            "sec-ch-ua-mobile": "?0",
            "sec-ch-ua-platform": '"Linux"',
        },
        hit={
            "_id": "0123456789abcdef",
            "cid": "0123456789abcdef",
            "uadata": json.dumps(
                {"sec-ch-ua": HINTS, "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Linux"'},
                separators=(",", ":"),
            ),
        },
    ),
    "post_form": Expected(
        "/form",
        "/form",
        query="next=%2F",
        method="POST",
        headers={"user-agent": UA, "content-type": "application/x-www-form-urlencoded"},
        asgi_headers={"content-length": "7"},
    ),
    "stripped_by_proxy": Expected("/items/1", "/api/items/1", query="a=%C3%A9", root_path="/api"),
    "root_of_mount": Expected("/", "/api/", root_path="/api"),
    "under_script_name": Expected("/items/é", "/app/items/%C3%A9", query="x=1", root_path="/app"),
    "script_name_itself": Expected("/", "/app", root_path="/app"),
}

CAPTURES = [
    (setup, name)
    for setup in ("uvicorn", "uvicorn-root-path", "gunicorn", "gunicorn-script-name")
    for name in load(setup)["captures"]
]


def view_of(setup: str, name: str) -> tuple[RequestView, dict[str, Any]]:
    data = load(setup)
    capture = data["captures"][name]
    if data["kind"] == "scope":
        return request_from_asgi(rebuild_scope(capture["scope"])), capture["scope"]
    return request_from_wsgi(capture["environ"]), capture["environ"]


@pytest.mark.parametrize(("setup", "name"), CAPTURES, ids=[f"{s}-{n}" for s, n in CAPTURES])
def test_golden_view_and_hit(setup: str, name: str) -> None:
    expected = EXPECTED[name]
    view, dumped = view_of(setup, name)
    is_asgi = setup.startswith("uvicorn")
    host = dict(view.headers)["host"]
    port = int(host.rsplit(":", 1)[1])

    headers = {"host": host, **HTTPX_HEADERS, **expected.headers}
    headers.update(expected.asgi_headers if is_asgi else expected.wsgi_headers)
    client = expected.asgi_client if is_asgi else "127.0.0.1"
    assert view == RequestView(
        method=expected.method,
        scheme="http",
        path=expected.asgi_path if is_asgi and expected.asgi_path else expected.path,
        url_path=expected.url_path,
        query_string=expected.query,
        headers=headers,
        client=client,
        server=("127.0.0.1", port),
        root_path=expected.root_path,
    )
    assert view.source == (rebuild_scope(dumped) if is_asgi else dumped)

    (hit,) = builder().build(view, ResponseView(200), None, now=NOW, rng=FixedRandom())

    query = expected.url_query if expected.url_query is not None else expected.query
    ua = headers["user-agent"]
    params = {
        "idsite": "1",
        "rec": "1",
        "apiv": "1",
        "rand": "12345",
        "url": f"http://127.0.0.1:{port}{expected.url_path}" + (f"?{query}" if query else ""),
        "action_name": view.path,
        "ua": ua,
        "pv_id": "7d3000",
        "cid": keyed_visitor_id(client, ua),
        **expected.hit,
    }
    if "accept-language" in headers:
        params["lang"] = headers["accept-language"]
    assert dict(hit.params) == params
    assert_accepted([hit])


def test_every_capture_has_an_expectation() -> None:
    assert {name for _, name in CAPTURES} == set(EXPECTED)
    assert load("uvicorn")["server"].startswith("uvicorn ")
    assert load("gunicorn")["server"].startswith("gunicorn ")
