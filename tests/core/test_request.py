"""Request views from hand-made (and malformed) scopes and environs, and header decoding."""

from __future__ import annotations

from typing import Any

import pytest

from matomo_tracking import RequestView, request_from_asgi, request_from_wsgi
from matomo_tracking.request import asgi_app_path, decode_header
from tests.core.builders import environ, scope


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain", "plain"),
        (b"caf\xc3\xa9", "café"),
        (b"caf\xe9", "café"),
        (b"\xff\xfe", "ÿþ"),
        (b"\xe2\x82", "â\x82"),  # a cut UTF-8 sequence is not UTF-8: latin-1
        (b"", ""),
    ],
)
def test_decode_header(raw: bytes, text: str) -> None:
    assert decode_header(raw) == text


ASGI: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "minimal-scope",
        {"type": "http"},
        {
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "url_path": "/",
            "query_string": "",
            "headers": {},
            "client": None,
            "server": None,
            "root_path": "",
        },
    ),
    (
        "wrong-types-everywhere",
        {
            "type": "http",
            "method": 5,
            "scheme": "gopher",
            "path": b"/x",
            "root_path": 7,
            "query_string": "a=1",
            "raw_path": "/x",
            "client": "1.2.3.4",
            "server": ("host", "80"),
            "headers": [
                (b"ok", b"1"),
                (bytearray(b"buffer"), memoryview(b"value")),
                (b"broken",),
                None,
                ("str-name", b"v"),
                (b"Dup", b"a"),
                (b"dup", b"b"),
            ],
        },
        {
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "url_path": "/",
            "query_string": "",
            "headers": {"ok": "1", "buffer": "value", "dup": "a, b"},
            "client": None,
            "server": ("host", None),
            "root_path": "",
        },
    ),
    (
        "websocket-schemes",
        {
            "type": "websocket",
            "scheme": "wss",
            "path": "/ws",
            "client": ["::1", 5],
            "server": ["::1", True],
        },
        {"scheme": "https", "path": "/ws", "client": "::1", "server": ("::1", None)},
    ),
    ("ws-scheme", {"type": "websocket", "scheme": "ws"}, {"scheme": "http"}),
    (
        "cookies-joined-with-semicolons",
        {"type": "http", "headers": [(b"cookie", b"a=1"), (b"Cookie", b"b=2")]},
        {"headers": {"cookie": "a=1; b=2"}},
    ),
    (
        "root-path-slash-only",
        {"type": "http", "root_path": "/", "path": "/x"},
        {"path": "/x", "url_path": "/x", "root_path": ""},
    ),
    (
        "root-path-trailing-slash-and-no-leading-slash",
        {"type": "http", "root_path": "api/", "path": "items"},
        {"path": "/items", "url_path": "/api/items", "root_path": "/api"},
    ),
    (
        "root-path-with-trailing-slash-in-path",
        {"type": "http", "root_path": "/api", "path": "/api/"},
        {"path": "/", "url_path": "/api/", "root_path": "/api"},
    ),
    (
        "raw-path-not-a-request-target",
        {"type": "http", "path": "/a b", "raw_path": b"/a b"},
        {"path": "/a b", "url_path": "/a%20b"},
    ),
    (
        "raw-path-non-ascii",
        {"type": "http", "path": "/é", "raw_path": "/é".encode()},
        {"path": "/é", "url_path": "/%C3%A9"},
    ),
    (
        "raw-path-with-fragment-char",
        {"type": "http", "path": "/a#b", "raw_path": b"/a#b"},
        {"url_path": "/a%23b"},
    ),
    (
        "raw-path-old-server-root-path",
        {"type": "http", "root_path": "/ro ot", "path": "/é", "raw_path": b"/%c3%a9"},
        {"path": "/é", "url_path": "/ro%20ot/%c3%a9", "root_path": "/ro ot"},
    ),
    (
        "lone-surrogate-path",
        {"type": "http", "path": "/\udcff"},
        {"path": "/\udcff", "url_path": "/%ED%B3%BF"},
    ),
    (
        "pchar-kept",
        {"type": "http", "path": "/a:b@c!$&'()*+,;=-._~/"},
        {"url_path": "/a:b@c!$&'()*+,;=-._~/"},
    ),
    (
        "query-latin1-bytes",
        {"type": "http", "query_string": b"q=caf\xe9"},
        {"query_string": "q=café"},
    ),
]


@pytest.mark.parametrize(("scope_", "fields"), [a[1:] for a in ASGI], ids=[a[0] for a in ASGI])
def test_request_from_asgi(scope_: dict[str, Any], fields: dict[str, Any]) -> None:
    view = request_from_asgi(scope_)

    assert {k: getattr(view, k) for k in fields} == fields
    assert view.source is scope_


@pytest.mark.parametrize(
    ("scope_", "path"),
    [
        (scope("/api/x", root_path="/api"), "/x"),
        (scope("/x", root_path="/api"), "/x"),
        (scope("/api", root_path="/api"), "/"),
        ({"path": None}, "/"),
        (scope("/x"), "/x"),
        ({"path": "x"}, "/x"),
        ({"path": "/x", "root_path": ""}, "/x"),
    ],
)
def test_asgi_app_path(scope_: dict[str, Any], path: str) -> None:
    assert asgi_app_path(scope_) == path
    assert request_from_asgi(scope_).path == path


WSGI: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "empty-environ",
        {},
        {
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "url_path": "/",
            "query_string": "",
            "headers": {},
            "client": None,
            "server": None,
            "root_path": "",
        },
    ),
    (
        "wrong-types-everywhere",
        {
            "REQUEST_METHOD": "",
            "wsgi.url_scheme": "gopher",
            "SCRIPT_NAME": 1,
            "PATH_INFO": None,
            "QUERY_STRING": b"a=1",
            "REMOTE_ADDR": "",
            "SERVER_NAME": "",
            "SERVER_PORT": "80",
            "HTTP_X_BYTES": b"skipped",
            1: "skipped",
        },
        {
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "url_path": "/",
            "query_string": "",
            "headers": {},
            "client": None,
            "server": None,
        },
    ),
    (
        "content-type-and-headers",
        {
            "CONTENT_TYPE": "text/plain",
            "CONTENT_LENGTH": "3",
            "HTTP_X_FORWARDED_FOR": "1.2.3.4",
            "HTTP_HOST": "h",
        },
        {"headers": {"content-type": "text/plain", "x-forwarded-for": "1.2.3.4", "host": "h"}},
    ),
    ("empty-content-type", {"CONTENT_TYPE": ""}, {"headers": {}}),
    (
        "non-latin1-strings-from-a-non-conforming-server",
        {"HTTP_X_NAME": "€uro", "SCRIPT_NAME": "/€", "PATH_INFO": "/x"},
        {
            "headers": {"x-name": "€uro"},
            "url_path": "/%E2%82%AC/x",
            "root_path": "/€",
            "path": "/x",
        },
    ),
    (
        "relative-script-name-and-path-info",
        {"SCRIPT_NAME": "app", "PATH_INFO": "x"},
        {"url_path": "/app/x", "root_path": "/app", "path": "/x"},
    ),
    (
        "raw-uri-absolute-form-ignored",
        {"PATH_INFO": "/é".encode().decode("latin-1"), "RAW_URI": "http://h/%c3%a9"},
        {"url_path": "/%C3%A9"},
    ),
    (
        "raw-uri-mismatch-ignored",
        {"PATH_INFO": "/a", "RAW_URI": "/b"},
        {"url_path": "/a"},
    ),
    (
        "request-uri-proxy-stripped-script-name",
        {
            "SCRIPT_NAME": "/app",
            "PATH_INFO": "/é".encode().decode("latin-1"),
            "REQUEST_URI": "/%c3%a9?x",
        },
        {"url_path": "/app/%c3%a9", "path": "/é"},
    ),
    (
        "invalid-utf8-path-kept-as-bytes",
        {"PATH_INFO": "/bad\xff", "RAW_URI": "/bad%ff"},
        {"url_path": "/bad%ff", "path": "/badÿ"},
    ),
    (
        "server-port-not-a-number",
        {"SERVER_NAME": "example.org", "SERVER_PORT": "http"},
        {"server": ("example.org", None)},
    ),
    (
        "lowercase-method",
        {"REQUEST_METHOD": "post", "wsgi.url_scheme": "https"},
        {"method": "POST", "scheme": "https"},
    ),
]


@pytest.mark.parametrize(("environ_", "fields"), [w[1:] for w in WSGI], ids=[w[0] for w in WSGI])
def test_request_from_wsgi(environ_: dict[str, Any], fields: dict[str, Any]) -> None:
    view = request_from_wsgi(environ_)

    assert {k: getattr(view, k) for k in fields} == fields
    assert view.source is environ_


def test_header_lookup() -> None:
    view = request_from_wsgi(environ())

    assert view.header("host") == "example.org"
    assert view.header("missing") == ""
    assert view.header("missing", "default") == "default"


def test_views_compare_without_their_source() -> None:
    first = request_from_asgi(scope("/x"))
    second = request_from_asgi(scope("/x"))

    assert first == second
    assert first.source is not second.source
    assert "source" not in repr(first)
    assert isinstance(first, RequestView)
