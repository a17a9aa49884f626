"""What the security tests share: a dispatcher that records hits, in-process runners for both
adapters (a request in, the exact response and the hits out), the checks every hit must pass
before it may leave the process, and a collector that also records request targets."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import ipaddress
import json
import pickle
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from matomo_asgi import MatomoMiddleware as AsgiMiddleware
from matomo_tracking.answers import Answer
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats, StatsRecorder
from matomo_tracking.delivery_queue import Batch, DeliveryQueue
from matomo_tracking.dispatcher import DispatcherBase
from matomo_tracking.fields import (
    MAX_ACTION_NAME_BYTES,
    MAX_DIMENSION_CHARS,
    MAX_HEADER_CHARS,
    MAX_PF_MS,
    MAX_REFERRER_CHARS,
    MAX_URL_BYTES,
    MAX_USER_ID_CHARS,
)
from matomo_tracking.hits import CLIENT_HINT_HEADERS, Hit
from matomo_tracking.testing import Collector
from matomo_tracking.wire import bulk_body, encode_hit
from matomo_wsgi import MatomoMiddleware as WsgiMiddleware

MATOMO = "http://matomo.test"
SALT = "security-tests"
#: No hit, however hostile its request, may encode to more than this (the sum of the field
#: limits, with every character escaped the most expensive way, is about 32 KB).
MAX_HIT_BYTES = 40 * 1024
_HEX = frozenset("0123456789abcdef")
_PV_ID = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class RecordingDispatcher(DispatcherBase):
    """A dispatcher (``submit``/``stats``) that keeps every hit it is given."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self._stats = StatsRecorder()

    def submit(self, hit: Hit) -> bool:
        self.hits.append(hit)
        self._stats.queued += 1
        return True

    def stats(self) -> DispatchStats:
        return self._stats.snapshot()

    def take(self) -> list[Hit]:
        """The hits recorded so far; the list starts empty again."""
        hits, self.hits = self.hits, []
        return hits


# -- ASGI -------------------------------------------------------------------------------------


class AppFailure(Exception):
    """What the tiny apps raise when a plan asks them to fail."""


@dataclass
class AsgiPlan:
    """What the tiny ASGI app answers: status, headers, body chunks, and where it fails."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    fail: str | None = None  # "before_start", "after_start", "after_body"


def _digest(mapping: Mapping[str, Any], hidden: str) -> bytes:
    """A fingerprint of what the app was given (the middleware's own key excluded)."""
    given = {k: v for k, v in mapping.items() if k != hidden}
    return hashlib.sha256(pickle.dumps(given)).hexdigest().encode()


class AsgiApp:
    """A tiny ASGI app that answers what its current ``plan`` says, plus a fingerprint of the
    scope it saw (so any change the middleware made to the scope shows in the body)."""

    def __init__(self) -> None:
        self.plan = AsgiPlan()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        plan = self.plan
        await receive()
        if plan.fail == "before_start":
            raise AppFailure("before start")
        await send({"type": "http.response.start", "status": plan.status, "headers": plan.headers})
        if plan.fail == "after_start":
            raise AppFailure("after start")
        for chunk in plan.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": _digest(scope, "state")})
        if plan.fail == "after_body":
            raise AppFailure("after body")


@dataclass
class Outcome:
    """What the server saw: messages (ASGI) or status, headers and body (WSGI), and the
    exception that escaped, if any."""

    response: list[Any]
    error: BaseException | None

    def same_as(self, other: Outcome) -> bool:
        """Same response, and the same kind of exception with the same text."""
        if self.response != other.response:
            return False
        if (self.error is None) != (other.error is None):
            return False
        if self.error is None or other.error is None:
            return True
        return type(self.error) is type(other.error) and str(self.error) == str(other.error)


async def arun_asgi(app: Any, scope: Mapping[str, Any], body: bytes = b"") -> Outcome:
    """Run one request through ``app`` on the running event loop (``scope`` is copied first)."""
    messages: list[Any] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        messages.append(copy.deepcopy(dict(message)))

    error: BaseException | None = None
    try:
        await app(copy.deepcopy(dict(scope)), receive, send)
    except Exception as exc:
        error = exc
    return Outcome(messages, error)


def run_asgi(app: Any, scope: Mapping[str, Any], body: bytes = b"") -> Outcome:
    """``arun_asgi`` on a fresh event loop."""
    return asyncio.run(arun_asgi(app, scope, body))


def asgi_middleware(app: Any, **options: Any) -> tuple[AsgiMiddleware, RecordingDispatcher]:
    """``app`` wrapped in the ASGI middleware with a recording dispatcher."""
    dispatcher = RecordingDispatcher()
    options.setdefault("url", MATOMO)
    options.setdefault("visitor_salt", SALT)
    return AsgiMiddleware(app, dispatcher=dispatcher, **options), dispatcher


# -- WSGI -------------------------------------------------------------------------------------


@dataclass
class WsgiPlan:
    """What the tiny WSGI app answers, and where it fails."""

    status: str = "200 OK"
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    write: bool = False  # send the first chunk through the legacy write() callable
    fail: str | None = None  # "before_start", "after_start", "while_iterating"


class WsgiApp:
    """A tiny WSGI app that answers what its current ``plan`` says, plus a fingerprint of the
    environ it saw."""

    def __init__(self) -> None:
        self.plan = WsgiPlan()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        plan = self.plan
        if plan.fail == "before_start":
            raise AppFailure("before start")
        write = start_response(plan.status, list(plan.headers))
        if plan.fail == "after_start":
            raise AppFailure("after start")
        chunks = list(plan.chunks)
        if plan.write and chunks:
            write(chunks.pop(0))
        chunks.append(_digest(environ, "matomo"))
        return self._iterate(chunks, plan.fail == "while_iterating")

    @staticmethod
    def _iterate(chunks: list[bytes], fail: bool) -> Iterable[bytes]:
        yield from chunks
        if fail:
            raise AppFailure("while iterating")


def run_wsgi(app: Any, environ: Mapping[str, Any]) -> Outcome:
    """Run one request through ``app`` as a WSGI server would (``environ`` is copied first):
    call it, iterate the body, close it."""
    response: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        response.append((status, list(headers)))
        return lambda data: response.append(("write", bytes(data)))

    error: BaseException | None = None
    try:
        result = app(dict(environ), start_response)
        try:
            for chunk in result:
                response.append(("chunk", bytes(chunk)))
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    except Exception as exc:
        error = exc
    return Outcome(response, error)


def wsgi_middleware(app: Any, **options: Any) -> tuple[WsgiMiddleware, RecordingDispatcher]:
    """``app`` wrapped in the WSGI middleware with a recording dispatcher."""
    dispatcher = RecordingDispatcher()
    options.setdefault("url", MATOMO)
    options.setdefault("visitor_salt", SALT)
    return WsgiMiddleware(app, dispatcher=dispatcher, **options), dispatcher


# -- what every hit must be -------------------------------------------------------------------


def _check_url(name: str, url: str) -> None:
    assert len(url.encode("utf-8", "surrogatepass")) <= MAX_URL_BYTES, name
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https"), (name, url[:200])
    assert parts.netloc, (name, url[:200])
    assert "@" not in parts.netloc, (name, url[:200])
    assert parts.hostname, (name, url[:200])
    assert parts.port is None or 0 <= parts.port <= 65535  # .port raises on garbage
    authority = url[len(parts.scheme) + 3 :].split("/", 1)[0]
    assert authority == parts.netloc, (name, url[:200])
    assert all(c.isprintable() and not c.isspace() for c in authority), (name, authority)


def check_hit(hit: Hit, config: TrackingConfig) -> None:
    """Assert that ``hit`` is well formed and within every field limit."""
    params = hit.params
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    assert params["rec"] == "1"
    assert params["idsite"].isdigit()
    assert int(params["idsite"]) > 0
    _check_url("url", params["url"])
    assert (
        len(params.get("action_name", "").encode("utf-8", "surrogatepass")) <= MAX_ACTION_NAME_BYTES
    )
    assert len(params.get("urlref", "")) <= MAX_REFERRER_CHARS
    assert len(params.get("ua", "")) <= MAX_HEADER_CHARS
    assert len(params.get("lang", "")) <= 256
    assert len(params.get("uid", "")) <= MAX_USER_ID_CHARS
    for key in ("action_name", "ua", "lang", "urlref", "uid"):
        value = params.get(key, "")
        assert not any(unicodedata.category(c) == "Cc" for c in value), (key, value[:100])
    for key, value in params.items():
        if key.startswith("dimension"):
            assert len(value) <= MAX_DIMENSION_CHARS, key
    for key in ("cid", "_id"):
        if key in params:
            assert len(params[key]) == 16, key
            assert set(params[key]) <= _HEX, key
    if "cip" in params:
        assert config.token_auth is not None
        ipaddress.ip_address(params["cip"])
    if "pf_srv" in params:
        assert 0 <= int(params["pf_srv"]) <= MAX_PF_MS
    assert len(params["pv_id"]) == 6
    assert set(params["pv_id"]) <= _PV_ID
    if "uadata" in params:
        hints = json.loads(params["uadata"])
        assert isinstance(hints, dict)
        assert set(hints) <= set(CLIENT_HINT_HEADERS)
        assert all(isinstance(v, str) and len(v) <= 256 for v in hints.values())
    if config.token_auth is not None:
        assert config.token_auth not in json.dumps(dict(params))


def check_hits(hits: Sequence[Hit], config: TrackingConfig) -> None:
    """Every hit is well formed, encodes within ``MAX_HIT_BYTES``, and a Matomo-compatible
    collector accepts their bulk body: all tracked, none invalid."""
    for hit in hits:
        check_hit(hit, config)
    encoded = [encode_hit(hit) for hit in hits]
    for item in encoded:
        assert item.size <= MAX_HIT_BYTES, item.size
        json.loads(item.data)
    if not hits:
        return
    site_ids = {int(hit.params["idsite"]) for hit in hits}
    collector = Collector(site_ids=site_ids, token_auth=config.token_auth)
    now = max(hit.created for hit in hits)
    body = bulk_body(encoded, token_auth=config.token_auth, now=now)
    status, _, answer = collector.handle("POST", "/matomo.php", "", body)
    assert status == 200
    counts = json.loads(answer)
    assert (counts["tracked"], counts["invalid"]) == (len(hits), 0), collector.invalid[:3]


def batch_bodies(hits: Sequence[Hit], config: TrackingConfig) -> list[tuple[int, bytes]]:
    """The bulk bodies a dispatcher would post for ``hits`` (the core's ``DeliveryQueue`` cuts
    them): (hit count, body) per batch."""
    queue = DeliveryQueue(config)
    now = max(hit.created for hit in hits)
    for hit in hits:
        assert queue.admit(encode_hit(hit), now)
    queue.flush_target()
    bodies: list[tuple[int, bytes]] = []
    while isinstance(step := queue.next_step(now, 0.5), Batch):
        bodies.append((step.count, step.body))
        queue.answered(step, Answer(200, b'{"tracked":%d,"invalid":0}' % step.count), now)
    return bodies


# -- a collector that also records what URL each request used ---------------------------------


@dataclass(repr=False)  # the inherited repr: the bodies hold the token
class TargetRecordingCollector(Collector):
    """A ``Collector`` that also records the method, path and query string of every request
    (to prove the token never travels in a URL), and can answer with a redirect."""

    targets: list[tuple[str, str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    redirect_to: str | None = None
    redirect_status: int = 302
    echo_status: int | None = None  # answer with this status and the request's own body

    def handle(
        self, method: str, path: str, query: str, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        self.targets.append((method, path, query))
        self.bodies.append(body)
        if self.redirect_to is not None:
            headers = [("location", self.redirect_to), ("content-type", "text/plain")]
            return self.redirect_status, headers, b"moved"
        if self.echo_status is not None:
            return self.echo_status, [("content-type", "application/json")], body
        return super().handle(method, path, query, body)


# -- one request through either adapter ---------------------------------------------------------

ADAPTERS = ("asgi", "wsgi")


def asgi_scope(
    *,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    client: str | None = "203.0.113.5",
    server: tuple[str, int] | None = ("shop.test", 80),
    scheme: str = "http",
) -> dict[str, Any]:
    """An ASGI http scope as uvicorn makes it."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": "",
        "query_string": query.encode("utf-8"),
        "headers": [(k.lower().encode("latin-1"), v.encode("utf-8")) for k, v in headers],
        "client": (client, 50000) if client is not None else None,
        "server": server,
    }
    return scope


def wsgi_environ(
    *,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    client: str | None = "203.0.113.5",
    server: tuple[str, int] | None = ("shop.test", 80),
    scheme: str = "http",
) -> dict[str, Any]:
    """A WSGI environ as gunicorn makes it (repeated headers joined with ",")."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query.encode("utf-8").decode("latin-1"),
        "wsgi.url_scheme": scheme,
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    if server is not None:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
    if client is not None:
        environ["REMOTE_ADDR"] = client
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        text = value.encode("utf-8").decode("latin-1")
        if key == "HTTP_CONTENT_TYPE":
            environ["CONTENT_TYPE"] = text
        elif key in environ:
            environ[key] += "," + text
        else:
            environ[key] = text
    return environ


@dataclass
class Tracked:
    """One request through one adapter: the response the server saw and the hits recorded."""

    outcome: Outcome
    hits: list[Hit]
    config: TrackingConfig

    @property
    def hit(self) -> Mapping[str, str]:
        """The only hit (fails unless exactly one was recorded)."""
        assert len(self.hits) == 1, self.hits
        return self.hits[0].params


def track_request(
    adapter: str,
    options: Mapping[str, Any] | None = None,
    *,
    asgi_plan: AsgiPlan | None = None,
    wsgi_plan: WsgiPlan | None = None,
    **request: Any,
) -> Tracked:
    """Send one request (see ``asgi_scope``/``wsgi_environ``) through a fresh middleware of
    ``adapter`` ("asgi" or "wsgi") made with ``options``; every hit recorded is checked."""
    if adapter == "asgi":
        app = AsgiApp()
        if asgi_plan is not None:
            app.plan = asgi_plan
        middleware, dispatcher = asgi_middleware(app, **dict(options or {}))
        outcome = run_asgi(middleware, asgi_scope(**request))
        config = middleware.config
    else:
        wsgi_app = WsgiApp()
        if wsgi_plan is not None:
            wsgi_app.plan = wsgi_plan
        wsgi, dispatcher = wsgi_middleware(wsgi_app, **dict(options or {}))
        outcome = run_wsgi(wsgi, wsgi_environ(**request))
        config = wsgi.config
    hits = dispatcher.take()
    check_hits(hits, config)
    return Tracked(outcome, hits, config)
