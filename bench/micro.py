"""In-process micro-benchmarks of matomo-middleware.

1. Overhead: microseconds per request that ``matomo_asgi.MatomoMiddleware`` and
   ``matomo_wsgi.MatomoMiddleware`` add to a minimal app, with delivery stubbed out (a
   dispatcher whose ``submit`` only counts). The apps are called directly with a prebuilt
   scope/environ (no server, no sockets) built as uvicorn and gunicorn build them, with a
   browser's headers, cycling through 10,000 distinct visitors (more than any cache holds);
   bare and wrapped runs are interleaved, and the median of the repeats is reported.
   ``tricks``: what each speed trick kept on the hot path saves (ns), against the plain way.
2. Delivery: hits per second that ``AsyncioDispatcher`` and ``ThreadDispatcher`` deliver from
   one process to the fast collector (``bench.collector``): submit N hits, flush, and divide
   the hits the collector counted by the time from the first submit to the end of the flush.

Run alone: ``python bench/micro.py [--quick]`` (starts its own collector on 127.0.0.1);
``bench/run.py`` runs it too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.apps.counting import CountingDispatcher
from bench.servers import CollectorProcess, free_port

__all__ = [
    "ENVIRONS",
    "SCOPES",
    "asgi_overhead",
    "dispatcher_throughput",
    "gunicorn_environ",
    "run_micro",
    "tricks",
    "uvicorn_scope",
    "wsgi_overhead",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

_BODY = b'{"id":42,"name":"item 42","price":29}'
#: Distinct visitors the overhead loops cycle through: more than any per-visitor cache holds
#: (4,096), so that caches miss as they do on a busy site, not always hit as with one request.
VISITORS = 10_000


def _ua(n: int) -> str:
    return (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        f"Chrome/120.0.{n}.0 Safari/537.36"
    )


def _browser_headers(n: int) -> list[tuple[str, str]]:
    """What a browser sends (as bench/load.lua does), for visitor ``n``."""
    headers = [
        ("host", "shop.example.org"),
        ("user-agent", _ua(n)),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.9,de;q=0.8"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", f"https://shop.example.org/page?from={n}"),
        ("sec-ch-ua", '"Chromium";v="120", "Not?A_Brand";v="8"'),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", '"Linux"'),
        ("connection", "keep-alive"),
    ]
    if n % 2 == 0:  # half of them with a JavaScript tracker's cookie and a session
        headers.append(("cookie", f"_pk_id.1.1fff={n * 7919:016x}.1700000000.; sessionid=s{n}"))
    return headers


def _client(n: int) -> str:
    return f"198.51.{n // 250 % 256}.{n % 250 + 1}"


def uvicorn_scope(n: int) -> dict[str, Any]:
    """The scope uvicorn (httptools) builds for visitor ``n``'s ``GET /items/<n>``."""
    path = f"/items/{n % 1000}"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": (_client(n), 40000 + n % 20000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in _browser_headers(n)],
        "state": {},
    }


def gunicorn_environ(n: int) -> dict[str, Any]:
    """The environ gunicorn (gthread) builds for visitor ``n``'s ``GET /items/<n>``."""
    path = f"/items/{n % 1000}"
    environ: dict[str, Any] = {
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": object,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "gunicorn/23.0.0",
        "gunicorn.socket": None,
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": _client(n),
        "REMOTE_PORT": str(40000 + n % 20000),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "wsgi.url_scheme": "http",
    }
    for name, value in _browser_headers(n):
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


SCOPES = [uvicorn_scope(n) for n in range(VISITORS)]
ENVIRONS = [gunicorn_environ(n) for n in range(VISITORS)]


# -- overhead -------------------------------------------------------------------------------
async def _bare_asgi(scope: Scope, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"37")],
        }
    )
    await send({"type": "http.response.body", "body": _BODY})


def _bare_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "37")])
    return [_BODY]


async def _asgi_loop(app: ASGIApp, iterations: int) -> float:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    scopes = SCOPES
    start = time.perf_counter()
    for i in range(iterations):
        scope = dict(scopes[i % VISITORS])  # a fresh dict per request, as the server makes
        scope["state"] = {}
        await app(scope, receive, send)
    return (time.perf_counter() - start) / iterations * 1e6


def _wsgi_loop(app: Callable[..., Iterable[bytes]], iterations: int) -> float:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    empty = b""
    environs = ENVIRONS
    start = time.perf_counter()
    for i in range(iterations):
        environ = dict(environs[i % VISITORS])  # a fresh dict per request, as the server makes
        environ["wsgi.input"] = io.BytesIO(empty)
        result = app(environ, start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return (time.perf_counter() - start) / iterations * 1e6


def _summary(
    bare: list[float], ours: list[float], stub: CountingDispatcher, calls: int
) -> dict[str, Any]:
    bare_us, ours_us = statistics.median(bare), statistics.median(ours)
    return {
        "bare_us": round(bare_us, 3),
        "ours_us": round(ours_us, 3),
        "added_us": round(ours_us - bare_us, 3),
        "bare_runs_us": [round(v, 3) for v in bare],
        "ours_runs_us": [round(v, 3) for v in ours],
        "hits_per_request": round(stub.submitted / calls, 3) if calls else 0.0,
    }


def asgi_overhead(iterations: int, repeats: int) -> dict[str, Any]:
    """µs per request added by ``matomo_asgi.MatomoMiddleware`` (delivery stubbed)."""
    from matomo_asgi import MatomoMiddleware

    stub = CountingDispatcher()
    ours = MatomoMiddleware(_bare_asgi, url="http://127.0.0.1:9", site_id=1, dispatcher=stub)

    async def measure() -> tuple[list[float], list[float]]:
        await _asgi_loop(_bare_asgi, max(100, iterations // 10))  # warm up
        await _asgi_loop(ours, max(100, iterations // 10))
        stub.submitted = 0
        bare_runs, ours_runs = [], []
        for _ in range(repeats):
            bare_runs.append(await _asgi_loop(_bare_asgi, iterations))
            ours_runs.append(await _asgi_loop(ours, iterations))
        return bare_runs, ours_runs

    bare_runs, ours_runs = asyncio.run(measure())
    result = _summary(bare_runs, ours_runs, stub, iterations * repeats)
    result.update(iterations=iterations, repeats=repeats)
    return result


def wsgi_overhead(iterations: int, repeats: int) -> dict[str, Any]:
    """µs per request added by ``matomo_wsgi.MatomoMiddleware`` (delivery stubbed)."""
    from matomo_wsgi import MatomoMiddleware

    stub = CountingDispatcher()
    ours = MatomoMiddleware(_bare_wsgi, url="http://127.0.0.1:9", site_id=1, dispatcher=stub)
    _wsgi_loop(_bare_wsgi, max(100, iterations // 10))  # warm up
    _wsgi_loop(ours, max(100, iterations // 10))
    stub.submitted = 0
    bare_runs, ours_runs = [], []
    for _ in range(repeats):
        bare_runs.append(_wsgi_loop(_bare_wsgi, iterations))
        ours_runs.append(_wsgi_loop(ours, iterations))
    result = _summary(bare_runs, ours_runs, stub, iterations * repeats)
    result.update(iterations=iterations, repeats=repeats)
    return result


# -- the speed tricks the hot path keeps ----------------------------------------------------
def _per_call_ns(function: Callable[[], object], number: int) -> float:
    import timeit

    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e9


def tricks(number: int = 20_000) -> dict[str, Any]:
    """What each speed trick kept on the hot path saves, in ns per request (each one's
    comment in the code points here): the trick's way and the plain way, side by side."""
    import dataclasses
    from collections.abc import MutableMapping
    from http.cookies import SimpleCookie

    from matomo_tracking.delivery_queue import DeliveryEvent, EventKind
    from matomo_tracking.request import RequestView
    from matomo_tracking.visitor import pk_visitor_id, salted_visitor_id
    from matomo_tracking.wire import EncodedHit

    def frozen(cls: type[Any]) -> Any:  # the same class, frozen: what it would cost frozen
        fields = [
            (f.name, Any, dataclasses.field(default=f.default)) for f in dataclasses.fields(cls)
        ]
        return dataclasses.make_dataclass(f"Frozen{cls.__name__}", fields, frozen=True, slots=True)

    frozen_hit, frozen_view, frozen_event = map(frozen, (EncodedHit, RequestView, DeliveryEvent))
    data = b'{"idsite":"1","rec":"1"}'

    environ = ENVIRONS[0]
    state: dict[str, Any] = {}
    cookie = _browser_headers(0)[-1][1]
    known = {("198.51.0.1", _ua(0), 1, "2026-12-02"): "0123456789abcdef"}

    def class_first() -> None:  # request_from_wsgi's loop over the environ
        for key in environ:
            if key.__class__ is not str and not isinstance(key, str):
                continue

    def plain_isinstance() -> None:
        for key in environ:
            if not isinstance(key, str):
                continue

    def cookie_slow() -> None:
        jar: SimpleCookie = SimpleCookie()
        jar.load(cookie)

    pairs = {
        "environ key checks (class first / isinstance)": (class_first, plain_isinstance),
        "ASGI state check (class first / MutableMapping ABC)": (
            lambda: state.__class__ is dict or isinstance(state, MutableMapping),
            lambda: isinstance(state, MutableMapping),
        ),
        "keyed visitor id (remembered / HMAC)": (
            lambda: known.get(("198.51.0.1", _ua(0), 1, "2026-12-02")),
            lambda: salted_visitor_id(b"salt", "198.51.0.1", _ua(0), 1, "2026-12-02"),
        ),
        "request view (positional / keyword arguments)": (
            lambda: RequestView("GET", "http", "/", "/", "", {}, None, None, "", None),
            lambda: RequestView(
                method="GET",
                scheme="http",
                path="/",
                url_path="/",
                query_string="",
                headers={},
                client=None,
                server=None,
                root_path="",
                source=None,
            ),
        ),
        "_pk_id cookie (fast path / SimpleCookie)": (
            lambda: pk_visitor_id(cookie, 1),
            cookie_slow,
        ),
        "per-request dataclass: RequestView (plain slots / frozen)": (
            lambda: RequestView("GET", "https", "/a", "/a", "", environ, "198.51.0.1"),
            lambda: frozen_view("GET", "https", "/a", "/a", "", environ, "198.51.0.1"),
        ),
        "per-hit dataclass: EncodedHit and its queued DeliveryEvent (plain slots / frozen)": (
            lambda: DeliveryEvent(EventKind.QUEUED, 1, hits=(EncodedHit(data, 1.0, 7),)),
            lambda: frozen_event(EventKind.QUEUED, 1, hits=(frozen_hit(data, 1.0, 7),)),
        ),
    }
    results: dict[str, Any] = {}
    for name, (trick, plain) in pairs.items():
        fast, slow = _per_call_ns(trick, number), _per_call_ns(plain, number)
        results[name] = {"trick_ns": round(fast), "plain_ns": round(slow)}
    return results


# -- delivery throughput --------------------------------------------------------------------
def sample_hits(count: int) -> list[Any]:
    """``count`` realistic page-view hits (100 distinct parameter sets, cycled)."""
    from matomo_tracking.hits import Hit

    now = time.time()
    variants = [
        {
            "idsite": "1",
            "rec": "1",
            "apiv": "1",
            "url": f"http://127.0.0.1:8000/items/{n}?ref=home",
            "action_name": f"items/{n}",
            "ua": _ua(n),
            "lang": "en-US,en;q=0.9",
            "urlref": "http://127.0.0.1:8000/page",
            "_id": f"{n:016x}",
            "pv_id": f"a{n:05d}",
            "pf_srv": "3",
            "cvar": '{"1":["HTTP-method","GET"],"2":["HTTP-status","200"]}',
            "rand": str(n * 7919),
        }
        for n in range(100)
    ]
    return [Hit(params=variants[i % 100], created=now) for i in range(count)]


def _wait_for(hits: Callable[[], int], target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = hits()
    while count < target and time.monotonic() < deadline:
        time.sleep(0.05)
        count = hits()
    return count


def dispatcher_throughput(
    kind: str, url: str, count: int, hits: Callable[[], int]
) -> dict[str, Any]:
    """Deliver ``count`` hits with the ``asyncio`` or ``thread`` dispatcher; hits/s delivered."""
    from matomo_tracking.config import TrackingConfig

    # A queue that holds every hit: this measures delivery, not what a full queue drops.
    config = TrackingConfig(
        url=url, queue_max_hits=max(count, 10_000), queue_max_bytes=1024 * 1024 * 1024
    )
    batch = sample_hits(count)
    before = hits()
    accepted = 0
    if kind == "thread":
        from matomo_wsgi import ThreadDispatcher

        dispatcher = ThreadDispatcher(config)
        start = time.perf_counter()
        for hit in batch:
            accepted += bool(dispatcher.submit(hit))
        submitted = time.perf_counter() - start
        dispatcher.flush(120.0)
        elapsed = time.perf_counter() - start
        dispatcher.close(5.0)
        stats = dispatcher.stats()
    elif kind == "asyncio":
        from matomo_asgi import AsyncioDispatcher

        async def deliver() -> tuple[int, float, float, Any]:
            dispatcher = AsyncioDispatcher(config)
            taken = 0
            start = time.perf_counter()
            for index, hit in enumerate(batch):
                taken += bool(dispatcher.submit(hit))
                if index % 1000 == 999:
                    await asyncio.sleep(0)  # let the worker run, as a server's loop would
            submitted = time.perf_counter() - start
            await dispatcher.aflush(120.0)
            elapsed = time.perf_counter() - start
            await dispatcher.aclose(5.0)
            return taken, submitted, elapsed, dispatcher.stats()

        accepted, submitted, elapsed, stats = _run_loop(deliver())
    else:
        raise ValueError(f"kind={kind!r} is invalid: expected 'asyncio' or 'thread'")
    delivered = _wait_for(hits, before + accepted, 10.0) - before
    return {
        "hits": count,
        "accepted": accepted,
        "delivered": delivered,
        "seconds": round(elapsed, 4),
        "submit_us_per_hit": round(submitted / count * 1e6, 3) if count else 0.0,
        "hits_per_s": round(delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "stats": _plain(stats),
    }


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _plain(value: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return repr(value)


# -- everything -----------------------------------------------------------------------------
def run_micro(collector: CollectorProcess, *, quick: bool = False) -> dict[str, Any]:
    """All micro-benchmarks; a part that fails reports ``{"error": ...}`` instead."""
    iterations, repeats = (2_000, 3) if quick else (20_000, 7)
    count = 5_000 if quick else 100_000
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "asgi_overhead": lambda: asgi_overhead(iterations, repeats),
        "tricks": lambda: tricks(2_000 if quick else 20_000),
        "wsgi_overhead": lambda: wsgi_overhead(iterations, repeats),
        "asyncio_dispatcher": lambda: dispatcher_throughput(
            "asyncio", collector.url, count, collector.hits
        ),
        "thread_dispatcher": lambda: dispatcher_throughput(
            "thread", collector.url, count, collector.hits
        ),
    }
    results: dict[str, Any] = {}
    for name, part in parts.items():
        print(f"  micro: {name} ...", flush=True)
        try:
            results[name] = part()
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  micro: {name}: {_brief(results[name])}", flush=True)
    return results


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR " + str(result["error"])[:300]
    if "added_us" not in result and "hits_per_s" not in result:
        return ", ".join(f"{k}: {v['trick_ns']} vs {v['plain_ns']} ns" for k, v in result.items())
    if "added_us" in result:
        return (
            f"bare {result['bare_us']} µs, ours {result['ours_us']} µs, "
            f"added {result['added_us']} µs"
        )
    return (
        f"{result['delivered']}/{result['hits']} hits in {result['seconds']} s "
        f"= {result['hits_per_s']} hits/s"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the micro-benchmarks with a collector of their own; print JSON."""
    parser = argparse.ArgumentParser(description="matomo-middleware micro-benchmarks")
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke test)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-micro-") as tmp:
        collector = CollectorProcess(port=free_port(), log_path=Path(tmp) / "collector.log")
        try:
            collector.start()
            results = run_micro(collector, quick=args.quick)
        finally:
            collector.stop()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
