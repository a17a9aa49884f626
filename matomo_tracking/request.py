"""Normalised views of a request and its response, built from an ASGI scope or a WSGI environ."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

__all__ = [
    "RequestView",
    "ResponseView",
    "asgi_app_path",
    "decode_header",
    "request_from_asgi",
    "request_from_wsgi",
    "wsgi_app_path",
]

# Characters kept as they are when percent-encoding a decoded path: RFC 3986 pchar plus "/".
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# Every byte a path keeps as it is (letters, digits, ``_PATH_SAFE``): a path made only of these
# needs no quoting.
_PATH_KEPT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + _PATH_SAFE.encode()
# The header names browsers and proxies send most, by their WSGI environ key and by their
# raw ASGI name (others are converted as they come).
_COMMON_HEADERS = (
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "dnt",
    "forwarded",
    "host",
    "if-modified-since",
    "if-none-match",
    "origin",
    "pragma",
    "priority",
    "referer",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "sec-gpc",
    "te",
    "upgrade-insecure-requests",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-request-id",
    "x-requested-with",
)
_WSGI_HEADER_NAMES = {"HTTP_" + n.upper().replace("-", "_"): n for n in _COMMON_HEADERS}
_ASGI_HEADER_NAMES = {n.encode("ascii"): n for n in _COMMON_HEADERS}
# A request target's path as a client sends it: printable ASCII without space, '#' or '?'.
_RAW_PATH = re.compile(r"/[\x21\x22\x24-\x3e\x40-\x7e]*")


# Not frozen (treat it as immutable), as ResponseView and Hit: one is made per request, and a
# frozen dataclass's __init__ costs three times as much (bench/micro.py ``tricks``).
@dataclass(slots=True, unsafe_hash=True)
class RequestView:
    """What the core needs to know about one incoming request (treat it as immutable).

    ``path`` is the app-relative, decoded path that filters and route matching see;
    ``url_path`` is the full path the client asked for (root path included), percent-encoded.
    ``headers`` maps lower-case names to text values (repeated headers joined by ``", "``,
    cookies by ``"; "``). ``client`` is the peer address the server reported.
    ``source`` is the native request object (ASGI scope, WSGI environ or a framework request)
    for hooks that need more than the view carries.
    """

    method: str
    scheme: str
    path: str
    url_path: str
    query_string: str
    headers: Mapping[str, str]
    client: str | None = None
    server: tuple[str, int | None] | None = None
    root_path: str = ""
    source: Any = field(default=None, compare=False, repr=False)

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name`` (lower case), or ``default``."""
        return self.headers.get(name, default)


@dataclass(slots=True, unsafe_hash=True)
class ResponseView:
    """What the adapter observed of the response (treat it as immutable).

    ``ttfb_ms`` is the time from the request's arrival to the first response byte (``pf_srv``);
    ``body_bytes`` the body bytes actually sent; ``failed`` whether an exception escaped the app.
    """

    status: int
    content_type: str = ""
    ttfb_ms: float | None = None
    body_bytes: int = 0
    failed: bool = False


def decode_header(raw: bytes) -> str:
    """Header bytes as text: UTF-8 where valid, else latin-1 (never raises)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _encode_path(path: str | bytes) -> str:
    # Lone surrogates (hand-made scopes) are encoded rather than raising.
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogatepass")
    if not raw.rstrip(_PATH_KEPT):  # nothing to quote (what quote() checks first, cheaper)
        return raw.decode("ascii")
    return quote(raw, safe=_PATH_SAFE)


def _server(value: object) -> tuple[str, int | None] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        port = value[1] if isinstance(value[1], int) and not isinstance(value[1], bool) else None
        return (value[0], port)
    return None


def _asgi_paths(scope: Mapping[str, Any]) -> tuple[str, str, str]:
    """(root path, app-relative path, full path) of an ASGI scope."""
    root_path = scope.get("root_path") or ""
    path = scope.get("path") or "/"
    if not root_path and isinstance(path, str) and path[:1] == "/":
        return "", path, path  # the common case, as the general one below would find it
    if not isinstance(root_path, str):
        root_path = ""
    if not isinstance(path, str):
        path = "/"
    root_path = _rooted(root_path.rstrip("/")) if root_path.strip("/") else ""
    path = _rooted(path)
    # Servers following the current ASGI spec put the root path inside ``path``; older ones
    # do not. Strip it only when it is there.
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        return root_path, path[len(root_path) :] or "/", path
    return root_path, path, root_path + path


def asgi_app_path(scope: Mapping[str, Any]) -> str:
    """The app-relative path of an ASGI scope (``root_path`` removed when ``path`` has it):
    what filters see, computed without building a view (the adapters' cheap early exit)."""
    path = scope.get("path")
    if not scope.get("root_path") and isinstance(path, str) and path[:1] == "/":
        return path  # no root path: what _asgi_paths() gives, without its work
    return _asgi_paths(scope)[1]


def request_from_asgi(scope: Mapping[str, Any]) -> RequestView:
    """Build a view of an ASGI ``http`` scope (never raises on malformed optional keys)."""
    headers: dict[str, str] = {}
    names = _ASGI_HEADER_NAMES
    raw_headers = scope.get("headers") or ()
    for item in raw_headers:
        try:
            raw_name, raw_value = item
            if not isinstance(raw_name, bytes):
                raw_name = bytes(raw_name)
            if not isinstance(raw_value, bytes):
                raw_value = bytes(raw_value)
        except (TypeError, ValueError):
            continue
        name = names.get(raw_name)
        if name is None:
            try:
                name = raw_name.decode("utf-8").lower()
            except UnicodeDecodeError:
                name = raw_name.decode("latin-1").lower()
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        if name in headers:  # repeated: joined, cookies with "; " as browsers send them
            headers[name] += ("; " if name == "cookie" else ", ") + value
        else:
            headers[name] = value

    root_path, app_path, full_path = _asgi_paths(scope)

    url_path: str | None = None
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes) and raw_path:
        # raw_path keeps the client's own percent-encoding (the query never belongs to it);
        # trust it only if it decodes, as servers decode it, to the path the server gave us.
        raw = raw_path.split(b"?", 1)[0].decode("latin-1")
        if _RAW_PATH.fullmatch(raw):
            decoded = unquote(raw, errors="replace") if "%" in raw else raw
            if decoded == full_path:
                url_path = raw
            elif root_path and decoded == app_path:
                url_path = _encode_path(root_path) + raw
    if url_path is None:
        url_path = _encode_path(full_path)

    query = scope.get("query_string") or b""
    query_string = decode_header(query) if isinstance(query, bytes) else ""

    client = scope.get("client")
    peer = (
        client[0]
        if isinstance(client, (list, tuple)) and client and isinstance(client[0], str)
        else None
    )

    method = scope.get("method")
    method = method.upper() if isinstance(method, str) else "GET"
    scheme = scope.get("scheme")
    scheme = scheme if scheme in ("http", "https") else ("https" if scheme == "wss" else "http")
    server = _server(scope.get("server"))
    # In field order: keyword arguments to a class cost a dict per call (bench/micro.py).
    return RequestView(
        method, scheme, app_path, url_path, query_string, headers, peer, server, root_path, scope
    )


def _rooted(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _wsgi_bytes(value: str) -> bytes:
    """The raw bytes behind a WSGI (latin-1) string; UTF-8 for a non-conforming one."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _wsgi_text(value: str) -> str:
    """WSGI strings are latin-1 decodings of the raw bytes: recover the bytes, then decode."""
    if value.isascii():  # the same text either way
        return value
    try:
        return decode_header(value.encode("latin-1"))
    except UnicodeEncodeError:
        return value


def wsgi_app_path(environ: Mapping[str, Any]) -> str | None:
    """The app-relative path of a WSGI environ (``PATH_INFO``) when it is ASCII, else None:
    other paths are latin-1 decodings of UTF-8 bytes, decoded by the view (the adapters'
    cheap early exit, before any view is built)."""
    path = environ.get("PATH_INFO") or "/"
    return path if isinstance(path, str) and path.isascii() else None


def request_from_wsgi(environ: Mapping[str, Any]) -> RequestView:
    """Build a view of a WSGI environ (never raises on malformed optional keys)."""
    # Later keys that map to the same name win, as dict() of the pairs would. The environ is
    # twice as long as its headers: the loop is kept to the fewest steps per key.
    headers: dict[str, str] = {}
    names = _WSGI_HEADER_NAMES
    for key, value in environ.items():
        # The exact class first: 140 ns less per request (bench/micro.py "tricks").
        if key.__class__ is not str and not isinstance(key, str):
            continue
        if key[:5] == "HTTP_":
            if value.__class__ is str or isinstance(value, str):
                headers[names.get(key) or key[5:].replace("_", "-").lower()] = (
                    value if value.isascii() else _wsgi_text(value)
                )
        elif key == "CONTENT_TYPE" and isinstance(value, str) and value:
            headers["content-type"] = value if value.isascii() else _wsgi_text(value)

    script = environ.get("SCRIPT_NAME")
    info = environ.get("PATH_INFO")
    script_raw = _wsgi_bytes(script).rstrip(b"/") if isinstance(script, str) else b""
    info_raw = _wsgi_bytes(info) if isinstance(info, str) else b""
    if script_raw and not script_raw.startswith(b"/"):
        script_raw = b"/" + script_raw
    if info_raw and not info_raw.startswith(b"/"):
        info_raw = b"/" + info_raw
    # The client asked for SCRIPT_NAME + PATH_INFO (just SCRIPT_NAME when PATH_INFO is empty).
    full_raw = script_raw + info_raw or b"/"
    script_name = decode_header(script_raw)
    app_path = decode_header(info_raw) if info_raw else "/"

    url_path: str | None = None
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if isinstance(raw_uri, str):
        # The request target as sent (gunicorn RAW_URI, uWSGI/mod_wsgi REQUEST_URI) keeps the
        # client's percent-encoding; used only when it decodes to the same bytes.
        raw = raw_uri.split("?", 1)[0]
        if _RAW_PATH.fullmatch(raw):
            decoded = unquote_to_bytes(raw) if "%" in raw else raw.encode("ascii")
            if decoded == full_raw:
                url_path = raw
            elif script_raw and decoded == (info_raw or b"/"):
                url_path = _encode_path(script_raw) + raw
    if url_path is None:
        url_path = _encode_path(full_raw)

    query = environ.get("QUERY_STRING") or ""
    query_string = _wsgi_text(query) if isinstance(query, str) else ""

    peer = environ.get("REMOTE_ADDR")
    server_name = environ.get("SERVER_NAME")
    server_port = environ.get("SERVER_PORT")
    server: tuple[str, int | None] | None = None
    if isinstance(server_name, str) and server_name:
        port = (
            int(server_port)
            if isinstance(server_port, str) and server_port.isascii() and server_port.isdigit()
            else None  # "²".isdigit() is true, but int("²") raises
        )
        server = (server_name, port)

    method = environ.get("REQUEST_METHOD")
    method = method.upper() if isinstance(method, str) and method else "GET"
    scheme = environ.get("wsgi.url_scheme")
    scheme = scheme if scheme in ("http", "https") else "http"
    client = peer if isinstance(peer, str) and peer else None
    # In field order: keyword arguments to a class cost a dict per call (bench/micro.py).
    return RequestView(
        method,
        scheme,
        app_path,
        url_path,
        query_string,
        headers,
        client,
        server,
        script_name,
        environ,
    )
