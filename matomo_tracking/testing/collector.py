"""A Matomo-compatible tracking collector for tests, demos and local development.

It accepts what Matomo's ``matomo.php`` accepts (single hits by GET or POST form, bulk JSON),
validates each hit the way Matomo does — and a little more strictly where a silent Matomo
default would hide a client bug — stores the accepted hits in memory and answers like Matomo.
Failure modes (``fail_with``, ``slow``, ``hold``) let tests play an unhealthy Matomo.

``collector.asgi`` and ``collector.wsgi`` are the same collector as ASGI and WSGI apps;
``GET /`` is a live, auto-refreshing page of received and rejected hits (``page``; a click on
one shows every parameter, ``/hit/N`` and ``/rejected/N``) and ``GET /hits.json`` their JSON.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from matomo_tracking.testing.page import detail_page, hit_facts, hit_type, live_page

__all__ = ["Collector", "ReceivedHit"]

_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
# What Matomo prints after the image when a single hit fails (M core/Tracker/Response.php).
_NOTICE = b"This resource is part of Matomo."
_PREFLIGHT_HEADERS = (
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "GET, POST"),
    ("access-control-allow-headers", "*"),
)
_CORS_HEADERS = (
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
)
_TOKEN_AGE_LIMIT = 86400
_HEX = frozenset("0123456789abcdefABCDEF")
_INT = re.compile(r"-?[0-9]+")

Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class ReceivedHit:
    """A hit the collector accepted: its parameters, when it arrived, the time Matomo would
    record it at (``cdt``/``cdo`` applied), and whether it came in a bulk request."""

    params: Mapping[str, str]
    received_at: float
    recorded_at: float
    bulk: bool
    authenticated: bool

    def __getitem__(self, key: str) -> str:
        return self.params[key]

    def get(self, key: str, default: str | None = None) -> str | None:
        """A parameter, or ``default``."""
        return self.params.get(key, default)


@dataclass
class _Mode:
    fail_status: int | None = None
    fail_count: int | None = None
    delay: float = 0.0
    hold: bool = False
    hang_after_read: float = 0.0
    retry_after: str | None = None
    max_body: int | None = None
    cut: int = 0


@dataclass
class Collector:
    """An in-memory Matomo tracking endpoint.

    ``site_ids``: the sites that exist. ``token_auth``: a super user's token (None: no such
    token), accepted for every site and the only one that gets ``invalid_indices`` in bulk
    answers. ``write_tokens``: tokens of users with write (or admin) access, each to the site
    ids given (a token for other sites does not authenticate). ``goal_ids``: the goals that
    exist (None: any ``idgoal``). ``clock``: where the collector reads the time
    (``time.time``). ``status_dimension``: the custom dimension that carries the response
    status (the middleware's ``status_dimension``), for the live page's status column.
    """

    site_ids: Iterable[int] = (1,)
    token_auth: str | None = None
    clock: Callable[[], float] = time.time
    write_tokens: Mapping[str, Iterable[int]] = field(default_factory=dict)
    goal_ids: Iterable[int] | None = None
    status_dimension: int | None = None
    hits: list[ReceivedHit] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[tuple[Mapping[str, Any], str]] = field(default_factory=list)
    #: The HTTP status of every tracking request answered, in order (failure modes included).
    answered: list[int] = field(default_factory=list)
    mode: _Mode = field(default_factory=_Mode)
    #: Tracking requests being answered right now (failure delays included), and the most
    #: there were at once since the collector was made or cleared: how many requests a client
    #: keeps in flight.
    in_progress: int = 0
    max_in_progress: int = 0

    def __post_init__(self) -> None:
        self.site_ids = frozenset(self.site_ids)
        self._writers = {t: frozenset(sites) for t, sites in self.write_tokens.items()}
        self._goals = None if self.goal_ids is None else frozenset(self.goal_ids)
        self._orders: set[tuple[str, str]] = set()
        self._gauge = threading.Lock()  # served from several threads by CollectorServer

    def __repr__(self) -> str:
        return f"Collector(site_ids={sorted(self.site_ids)!r}, hits={len(self.hits)})"

    # -- failure modes -------------------------------------------------------------------
    def fail_with(
        self, status: int, count: int | None = None, retry_after: str | None = None
    ) -> None:
        """Answer the next ``count`` tracking requests (all, if None) with HTTP ``status``."""
        self.mode.fail_status, self.mode.fail_count = status, count
        self.mode.retry_after = retry_after

    def slow(self, seconds: float) -> None:
        """Wait ``seconds`` before answering each tracking request."""
        self.mode.delay = seconds

    def hold(self) -> None:
        """Keep every tracking request waiting (unanswered) until ``release()``."""
        self.mode.hold = True

    def release(self) -> None:
        """Let held requests through."""
        self.mode.hold = False

    def limit_body(self, max_bytes: int | None) -> None:
        """Answer HTTP 413 to tracking requests whose body is larger than ``max_bytes`` (as a
        web server's body limit does in front of Matomo); None lifts the limit."""
        self.mode.max_body = max_bytes

    def hang_after_read(self, seconds: float) -> None:
        """Read each request, record nothing, and answer only after ``seconds`` (so a client
        with a shorter timeout gives up after Matomo may have received the hits)."""
        self.mode.hang_after_read = seconds

    def cut_answers(self, count: int = 1_000_000) -> None:
        """Record the next ``count`` tracking requests as usual, then cut their answers short
        (the connection closes mid-answer: the client cannot know the hits were recorded)."""
        self.mode.cut = count

    def _cut_now(self, tracking: bool) -> bool:
        with self._gauge:
            if not tracking or self.mode.cut <= 0:
                return False
            self.mode.cut -= 1
            return True

    def heal(self) -> None:
        """Back to a healthy collector."""
        self.mode = _Mode()

    def clear(self) -> None:
        """Forget everything received."""
        self.hits.clear()
        self.requests.clear()
        self.invalid.clear()
        self.answered.clear()
        self._orders.clear()
        with self._gauge:
            self.max_in_progress = self.in_progress

    # -- queries -------------------------------------------------------------------------
    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedHit]:
        """Wait until at least ``count`` hits arrived; return them (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.hits) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} hit(s), received {len(self.hits)}")
            time.sleep(0.01)
        return list(self.hits)

    # -- the protocol --------------------------------------------------------------------
    def _fail_now(self) -> int | None:
        mode = self.mode
        if mode.fail_status is None:
            return None
        if mode.fail_count is not None:
            if mode.fail_count <= 0:
                mode.fail_status = None
                return None
            mode.fail_count -= 1
        return mode.fail_status

    def handle(self, method: str, path: str, query: str, body: bytes) -> Response:
        """Answer one HTTP request (no waiting: failure delays are applied by the servers)."""
        if path in ("", "/") and method == "GET":
            return 200, [("content-type", "text/html; charset=utf-8")], self.page().encode()
        if method == "GET" and path.startswith(("/hit/", "/rejected/")):
            return self._detail(path)
        if path == "/hits.json":
            data = [dict(h.params) for h in self.hits]
            return 200, [("content-type", "application/json")], json.dumps(data).encode()
        if not (path.endswith("/matomo.php") or path.endswith("/piwik.php")):
            return 404, [("content-type", "text/plain")], b"not found"
        if method == "OPTIONS":  # a CORS preflight: answered, nothing tracked
            self.answered.append(204)
            return 204, list(_PREFLIGHT_HEADERS), b""
        answer = self._tracking_request(method, query, body)
        self.answered.append(answer[0])
        return answer

    def _tracking_request(self, method: str, query: str, body: bytes) -> Response:
        if self.mode.max_body is not None and len(body) > self.mode.max_body:
            return 413, [("content-type", "text/plain")], b"request entity too large"
        status = self._fail_now()
        if status is not None:
            headers = [("content-type", "text/plain")]
            if self.mode.retry_after:
                headers.append(("retry-after", self.mode.retry_after))
            return status, headers, b"collector failure mode"
        status, headers, payload = self._matomo_answer(method, query, body)
        # Matomo's own headers (core/Tracker/Response.php): GET answers are not to be cached;
        # other answers allow a browser's cross-origin request.
        if method == "GET":
            headers = [*headers, ("cache-control", "no-store")]
        else:
            headers = [*headers, *_CORS_HEADERS]
        return status, headers, payload

    def _matomo_answer(self, method: str, query: str, body: bytes) -> Response:
        now = self.clock()
        if method == "POST" and b'"requests"' in body:
            return self._bulk(body, query, now)
        params = dict(parse_qsl(query, keep_blank_values=True))
        if method == "POST" and not body.lstrip().startswith(b"{"):
            # (a JSON body is not a form: PHP fills no $_POST from it)
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            params.update({k: v for k, v in form if k not in params})
        if not params:  # a monitor's GET (200), an empty POST (400): Matomo's notice
            status = 200 if method == "GET" else 400
            return status, [("content-type", "text/html")], _NOTICE
        token = params.pop("token_auth", None)
        send_image = params.pop("send_image", None)
        if params.get("ca") == "1" and params.get("ping") == "1":
            # An exception inside Matomo: on a single hit every exception ends as a 400.
            reason: str | None = "ca=1 with ping=1 fails in Matomo"
            self.invalid.append((params, "ca=1 with ping=1 fails in Matomo"))
        else:
            reason, hit = self._record(params, token, now, bulk=False)
            if hit is not None:
                self.hits.append(hit)
        self.requests.append({"bulk": False, "count": 1, "token": token is not None})
        image = send_image != "0"
        if reason is not None:
            # Matomo prints the image (unless send_image=0), then its HTML notice.
            body = (_GIF if image else b"") + _NOTICE
            return 400, [("content-type", "image/gif" if image else "text/html")], body
        if not image:
            return 204, [], b""
        return 200, [("content-type", "image/gif")], _GIF

    def _bulk(self, body: bytes, query: str, now: float) -> Response:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
            answer = {"status": "success", "tracked": 0, "invalid": 0}
            return 200, [("content-type", "application/json")], json.dumps(answer).encode()
        token = data.get("token_auth")
        token = token if isinstance(token, str) else None
        # A top-level send_image of 0 (number or string) makes Matomo answer 204 without the
        # counts, after tracking the hits (plugins/BulkTracking/Tracker/Response.php).
        no_image = data.get("send_image") in (0, "0")
        tracked = invalid = 0
        indices: list[int] = []
        position = 0
        accepted: list[ReceivedHit] = []
        orders = set(self._orders)  # the batch is one transaction: undone if it fails
        for entry in data["requests"]:
            if isinstance(entry, str):
                if "?" not in entry:
                    continue  # Matomo silently skips strings without a query part
                entry_query = entry.split("?", 1)[1]
                params: dict[str, Any] = dict(parse_qsl(entry_query, keep_blank_values=True))
            elif isinstance(entry, dict):
                params = dict(entry)
            else:
                continue
            # A hit's own token counts only when the batch has none; send_image per hit is
            # ignored.
            own_token = params.pop("token_auth", None)
            params.pop("send_image", None)
            if params.get("ca") == "1" and params.get("ping") == "1":
                self._orders = orders
                self.invalid.append((params, "ca=1 with ping=1 fails in Matomo"))
                self.requests.append({"bulk": True, "count": position, "token": token is not None})
                failed: dict[str, Any] = {"status": "error", "tracked": tracked, "invalid": invalid}
                if token is not None and token == self.token_auth:
                    failed["invalid_indices"] = indices
                return 500, [("content-type", "application/json")], json.dumps(failed).encode()
            hit_token = token if token is not None else own_token
            hit_token = hit_token if isinstance(hit_token, str) else None
            reason, hit = self._record(params, hit_token, now, bulk=True)
            if reason is None:
                tracked += 1
                if hit is not None:
                    accepted.append(hit)
            else:
                invalid += 1
                indices.append(position)
            position += 1
        self.hits.extend(accepted)
        self.requests.append({"bulk": True, "count": position, "token": token is not None})
        if no_image:
            return 204, [], b""
        result: dict[str, Any] = {"status": "success", "tracked": tracked, "invalid": invalid}
        if token is not None and token == self.token_auth:
            result["invalid_indices"] = indices
        return 200, [("content-type", "application/json")], json.dumps(result).encode()

    def _record(
        self, params: dict[str, Any], token: str | None, now: float, *, bulk: bool
    ) -> tuple[str | None, ReceivedHit | None]:
        """Validate one hit: (the reason it is invalid, None) or (None, the hit to store, or
        None when Matomo answers success but stores nothing: ``rec`` missing or 0)."""
        reason = self._validate(params, token, now)
        if reason is not None:
            self.invalid.append((params, reason))
            return reason, None
        if str(params.get("rec", "")) not in ("", "0") and _int(params.get("rec")):
            recorded = now
            cdt, cdo = params.get("cdt"), params.get("cdo")
            if isinstance(cdt, str) and (_int(cdt) or 0) > 0:
                recorded = float(cdt)
            if isinstance(cdo, str) and _int(cdo) is not None:
                recorded -= abs(int(cdo))
            authenticated = self._authenticates(token, _int(params.get("idsite")))
            return None, ReceivedHit(params, now, recorded, bulk, authenticated)
        return None, None

    def _authenticates(self, token: str | None, site: int | None) -> bool:
        """Whether ``token`` is a super user's, or has write access to ``site``."""
        if token is None:
            return False
        if self.token_auth is not None and token == self.token_auth:
            return True
        sites = self._writers.get(token)
        return sites is not None and site in sites

    def _validate(self, params: Mapping[str, Any], token: str | None, now: float) -> str | None:
        for key, value in params.items():
            if not isinstance(value, str):
                return f"{key}: values must be strings"
        site = _int(params.get("idsite"))
        if site is None or site not in self.site_ids:
            return "idsite: unknown or invalid site"
        authenticated = self._authenticates(token, site)
        if "cip" in params and not authenticated:
            return "cip requires a valid token_auth"
        for key in ("country", "region", "city", "lat", "long"):
            if key in params and not authenticated:
                return f"{key} requires a valid token_auth"
        cid = params.get("cid")
        if cid and (len(cid) != 16 or not set(cid) <= _HEX):
            return "cid must be 16 hexadecimal characters"
        visitor = params.get("_id")
        if visitor and len(visitor) >= 16 and not set(visitor[:16]) <= _HEX:
            return "_id must be hexadecimal"
        recorded = now
        cdt = params.get("cdt")
        if cdt and (_int(cdt) or 0) > 0:
            recorded = float(cdt)
        cdo = params.get("cdo")
        if cdo:
            if _int(cdo) is None:
                return "cdo must be an integer"
            recorded -= abs(int(cdo))
        if now - recorded >= _TOKEN_AGE_LIMIT and not authenticated:
            return "custom timestamp older than 24 h requires token_auth"
        for key in ("e_c", "e_a"):
            if "e_c" in params and "e_a" in params and not params[key].strip():
                return f"{key} must not be empty or whitespace"
        if "c_n" in params and not params["c_n"].strip():
            return "c_n must not be empty"
        for key, value in params.items():
            if key.startswith("pf_") and value and (_int(value) is None or int(value) < 0):
                return f"{key} must be a non-negative integer"
        goal = _int(params.get("idgoal"))
        if self._goals is not None and goal is not None and goal > 0 and goal not in self._goals:
            return f"idgoal {goal} does not exist"
        if params.get("ec_id"):
            order = (str(site), params["ec_id"])
            if order in self._orders:
                return "duplicate order id"
            self._orders.add(order)
        for key in ("_cvar", "cvar", "ec_items", "uadata"):
            if params.get(key):
                try:
                    json.loads(params[key])
                except ValueError:
                    return f"{key} must be JSON"
        return None

    # -- the live page -------------------------------------------------------------------
    def page(self) -> str:
        """The live page: tracked and invalid counts, the latest hits with their type and
        status, the rejected hits with their reason; it refreshes itself, every value is
        escaped (``matomo_tracking.testing.page``)."""
        return live_page(self.hits, self.invalid, status_dimension=self.status_dimension)

    def _detail(self, path: str) -> Response:
        kind, _, number = path.strip("/").partition("/")
        index = int(number) if number.isdigit() else -1
        html_type = [("content-type", "text/html; charset=utf-8")]
        if kind == "hit" and 0 <= index < len(self.hits):
            hit = self.hits[index]
            facts = hit_facts(hit, self.status_dimension)
            page = detail_page(hit.params, facts, title=f"{facts[0][1]} #{index}")
            return 200, html_type, page.encode()
        if kind == "rejected" and 0 <= index < len(self.invalid):
            params, reason = self.invalid[index]
            facts = [("type", hit_type(params)), ("rejected because", reason)]
            page = detail_page(params, facts, title=f"rejected {facts[0][1]} #{index}")
            return 200, html_type, page.encode()
        return 404, [("content-type", "text/plain")], b"no such hit"

    # -- servers -------------------------------------------------------------------------
    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        """The collector as a WSGI app."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        tracking = self._tracking(environ.get("PATH_INFO", "/"))
        if tracking:
            self._started()
        try:
            if tracking:
                self._wait_sync()
            status, headers, payload = self._answer_after_hang_sync(
                environ.get("REQUEST_METHOD", "GET"),
                environ.get("PATH_INFO", "/"),
                environ.get("QUERY_STRING", ""),
                body,
            )
        finally:
            if tracking:
                self._ended()
        declared = len(payload) + (64 if self._cut_now(tracking) else 0)
        length_header = ("content-length", str(declared))
        start_response(f"{status} {_reason(status)}", [*headers, length_header])
        return [payload]

    def _tracking(self, path: str) -> bool:
        return path.endswith(".php")

    def _started(self) -> None:
        with self._gauge:
            self.in_progress += 1
            self.max_in_progress = max(self.max_in_progress, self.in_progress)

    def _ended(self) -> None:
        with self._gauge:
            self.in_progress -= 1

    def _wait_sync(self) -> None:
        if self.mode.delay:
            time.sleep(self.mode.delay)
        while self.mode.hold:
            time.sleep(0.01)

    def _answer_after_hang_sync(self, method: str, path: str, query: str, body: bytes) -> Response:
        if self.mode.hang_after_read and self._tracking(path):
            time.sleep(self.mode.hang_after_read)
            self.requests.append({"bulk": True, "count": 0, "hung": True})
            return 503, [], b""
        return self.handle(method, path, query, body)

    async def asgi(
        self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        """The collector as an ASGI app."""
        import asyncio  # only when served over ASGI; the core itself never imports asyncio

        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope.get("path", "/")
        tracking = self._tracking(path)
        if tracking:
            self._started()
        try:
            if tracking and self.mode.delay:
                await asyncio.sleep(self.mode.delay)
            while tracking and self.mode.hold:
                await asyncio.sleep(0.01)
            if tracking and self.mode.hang_after_read:
                await asyncio.sleep(self.mode.hang_after_read)
                self.requests.append({"bulk": True, "count": 0, "hung": True})  # as WSGI's
                status, headers, payload = 503, list[tuple[str, str]](), b""
            else:
                query = scope.get("query_string", b"").decode("latin-1")
                status, headers, payload = self.handle(
                    scope.get("method", "GET"), path, query, body
                )
        finally:
            if tracking:
                self._ended()
        declared = len(payload) + (64 if self._cut_now(tracking) else 0)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers]
                + [(b"content-length", str(declared).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _int(value: object) -> int | None:
    # ASCII digits only, as PHP reads ints: superscripts are digits to str.isdigit()
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    return None


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
