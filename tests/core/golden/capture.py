"""Capture what real servers hand an app, as golden files for the request-view tests.

Run by hand from the repository root when a server's behaviour may have changed (a new
uvicorn or gunicorn release), then review the diff of the JSON files::

    .venv/bin/python -m tests.core.golden.capture

It starts, one after the other, on 127.0.0.1:

- uvicorn with an ASGI app that answers with its scope as JSON (bytes as latin-1 strings),
  plainly and with ``--root-path /api`` (a proxy that strips ``/api`` in front of it);
- gunicorn with a WSGI app that answers with the ``str`` values of its environ, plainly and
  with ``SCRIPT_NAME=/app`` in its environment (gunicorn's way to mount an app under a prefix);

sends each of them the requests in ``REQUESTS`` with httpx (percent-encoded UTF-8 paths,
lower-case and invalid escapes, queries with ``+`` and empty values, headers with latin-1
bytes, repeated headers, cookies, a POST), and writes one file per server set-up to
``tests/core/golden/<name>.json``: ``{"server": ..., "captures": {request name: {"request":
..., "scope" or "environ": ...}}}``. ``tests/core/test_golden.py`` rebuilds the scope or
environ from them and asserts the request view and the hit exactly.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Callable, Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (name, method, target, headers as (name, value) byte pairs, body)
Request = tuple[str, str, str, list[tuple[bytes, bytes]], bytes]

_UA = b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
REQUESTS: list[Request] = [
    ("root", "GET", "/", [(b"User-Agent", _UA)], b""),
    ("plain", "GET", "/items/1", [(b"User-Agent", _UA), (b"Accept-Language", b"fr-CH")], b""),
    (
        "utf8_path_and_query",
        "GET",
        "/caf%C3%A9/%E2%82%AC?q=%C3%A9t%C3%A9&page=2",
        [(b"User-Agent", _UA)],
        b"",
    ),
    ("lowercase_escapes", "GET", "/caf%c3%a9", [(b"User-Agent", _UA)], b""),
    ("encoded_space_and_slash", "GET", "/a%20b/c%2Fd", [(b"User-Agent", _UA)], b""),
    ("invalid_utf8_escape", "GET", "/bad%FF", [(b"User-Agent", _UA)], b""),
    (
        "query_plus_empty_and_secret",
        "GET",
        "/search?q=a+b&empty=&flag&password=hunter2&x=%2B",
        [(b"User-Agent", _UA)],
        b"",
    ),
    (
        "latin1_and_utf8_headers",
        "GET",
        "/h",
        [
            (b"User-Agent", b"Mozilla/5.0 (caf\xc3\xa9)"),
            (b"Referer", b"http://example.org/caf\xe9"),
            (b"X-Odd", b"\xff\xfe latin"),
        ],
        b"",
    ),
    (
        "repeated_headers",
        "GET",
        "/r",
        [
            (b"User-Agent", _UA),
            (b"Accept-Language", b"de"),
            (b"Accept-Language", b"en;q=0.5"),
            (b"X-Forwarded-For", b"198.51.100.1"),
            (b"X-Forwarded-For", b"203.0.113.9"),
            (b"Cookie", b"a=1"),
            (b"Cookie", b"_pk_id.1.1fff=0123456789ABCDEF.1700000000."),
        ],
        b"",
    ),
    (
        "cookies_and_client_hints",
        "GET",
        "/c",
        [
            (b"User-Agent", _UA),
            (b"Cookie", b"_pk_id.1.1fff=0123456789abcdef.1700000000.; session=xyz"),
            (b"Sec-CH-UA", b'"Chromium";v="124", "Not-A.Brand";v="99"'),
            (b"Sec-CH-UA-Mobile", b"?0"),
            (b"Sec-CH-UA-Platform", b'"Linux"'),
        ],
        b"",
    ),
    (
        "post_form",
        "POST",
        "/form?next=%2F",
        [(b"User-Agent", _UA), (b"Content-Type", b"application/x-www-form-urlencoded")],
        b"a=1&b=2",
    ),
]

# uvicorn behind a proxy that strips /api: the client asked for /api/items/1.
ROOT_PATH_REQUESTS: list[Request] = [
    ("stripped_by_proxy", "GET", "/items/1?a=%C3%A9", [(b"User-Agent", _UA)], b""),
    ("root_of_mount", "GET", "/", [(b"User-Agent", _UA)], b""),
]

# gunicorn with SCRIPT_NAME=/app: requests must start with /app.
SCRIPT_NAME_REQUESTS: list[Request] = [
    ("under_script_name", "GET", "/app/items/%C3%A9?x=1", [(b"User-Agent", _UA)], b""),
    ("script_name_itself", "GET", "/app", [(b"User-Agent", _UA)], b""),
]

_SCOPE_KEYS = (
    "type",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "query_string",
    "root_path",
    "headers",
    "client",
    "server",
)


def _latin1(value: bytes) -> str:
    return value.decode("latin-1")


async def asgi_app(
    scope: dict[str, Any],
    receive: Callable[[], Any],
    send: Callable[[dict[str, Any]], Any],
) -> None:
    """Answer every http request with its scope as JSON (bytes as latin-1 strings)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    dumped: dict[str, Any] = {}
    for key in _SCOPE_KEYS:
        if key not in scope:
            continue
        value = scope[key]
        if isinstance(value, bytes):
            value = _latin1(value)
        elif key == "headers":
            value = [[_latin1(bytes(n)), _latin1(bytes(v))] for n, v in value]
        elif isinstance(value, tuple):
            value = list(value)
        dumped[key] = value
    body = json.dumps(dumped).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer every request with the ``str`` values of its environ as JSON."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    dumped = {k: v for k, v in sorted(environ.items()) if isinstance(v, str)}
    body = json.dumps(dumped).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def _send(base_url: str, requests: list[Request]) -> dict[str, Any]:
    import httpx

    captures: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for name, method, target, headers, body in requests:
            response = client.request(method, target, headers=headers, content=body or None)
            response.raise_for_status()
            captures[name] = {
                "request": {
                    "method": method,
                    "target": target,
                    "headers": [[_latin1(n), _latin1(v)] for n, v in headers],
                    "body_base64": base64.b64encode(body).decode(),
                },
                "dump": response.json(),
            }
    return captures


def main() -> int:
    """Start each server, capture, write the JSON files."""
    sys.path.insert(0, str(HERE.parents[2]))
    from tests.servers import ServerProcess, free_port

    app = "tests.core.golden.capture"
    setups: list[tuple[str, str, list[str], dict[str, str], list[Request], str]] = [
        ("uvicorn", "uvicorn", [], {}, REQUESTS, "scope"),
        ("uvicorn-root-path", "uvicorn", ["--root-path", "/api"], {}, ROOT_PATH_REQUESTS, "scope"),
        ("gunicorn", "gunicorn", [], {}, REQUESTS, "environ"),
        (
            "gunicorn-script-name",
            "gunicorn",
            [],
            {"SCRIPT_NAME": "/app"},
            SCRIPT_NAME_REQUESTS,
            "environ",
        ),
    ]
    for name, program, extra, env, requests, kind in setups:
        port = free_port()
        if program == "uvicorn":
            args = [f"{app}:asgi_app", "--host", "127.0.0.1", "--port", str(port), *extra]
            args += ["--no-access-log", "--lifespan", "on"]
        else:
            args = [f"{app}:wsgi_app", "--bind", f"127.0.0.1:{port}", "--workers", "1", *extra]
        with ServerProcess(program, args, port=port, env=env) as server:
            captures = _send(server.base_url, requests)
        for capture in captures.values():
            capture[kind] = capture.pop("dump")
        data = {"server": f"{program} {version(program)}", "kind": kind, "captures": captures}
        path = HERE / f"{name}.json"
        path.write_text(json.dumps(data, indent=2, ensure_ascii=True, sort_keys=True) + "\n")
        print(f"wrote {path.relative_to(HERE.parents[2])}: {len(captures)} request(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
