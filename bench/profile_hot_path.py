"""Per-request cost of tracking, in process: a tiny ASGI app and a tiny WSGI app, bare and
wrapped in ``MatomoMiddleware`` (delivery stubbed: ``submit`` does nothing), driven directly
with a realistic browser request (12 headers, a ``_pk_id`` cookie, client hints, a query
string). No server, no sockets, no event loop: the ASGI coroutine is stepped by hand, since
nothing in it suspends.

    python bench/profile_hot_path.py                      # µs/request, median of repeats
    python bench/profile_hot_path.py --profile cprofile --case wsgi-tracked
    python bench/profile_hot_path.py --profile pyinstrument --case asgi-tracked
    python bench/profile_hot_path.py --visitors 100000 --clock cpu  # caches missing

Cases: ``asgi-tracked``, ``asgi-skipped``, ``wsgi-tracked``, ``wsgi-skipped`` (skipped = a path
under ``ignore_paths``). "added" is wrapped minus bare, the cost the middleware adds.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matomo_asgi import MatomoMiddleware as AsgiMiddleware
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.dispatcher import DispatcherBase
from matomo_tracking.hits import Hit
from matomo_wsgi import MatomoMiddleware as WsgiMiddleware

_clock: Callable[[], float] = time.perf_counter  # --clock cpu: time.thread_time

CASES = ("asgi-tracked", "asgi-skipped", "wsgi-tracked", "wsgi-skipped")

_BODY = b'{"id":42,"name":"item 42"}'
_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
# A browser's request, as a server hands it over (header order as Chrome sends it).
_HEADERS: list[tuple[str, str]] = [
    ("host", "shop.example.org"),
    ("connection", "keep-alive"),
    ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", '"Windows"'),
    ("upgrade-insecure-requests", "1"),
    ("user-agent", _UA),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    ("referer", "https://www.google.com/"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "de-DE,de;q=0.9,en-US;q=0.8,en;q=0.7"),
    (
        "cookie",
        "sessionid=8f2a1c9e7b6d4e3f; _pk_id.1.1fff=0123456789abcdef.1700000000.; "
        "_pk_ses.1.1fff=1; csrftoken=Zq1Xw2Ce3Vr4Bt5Ny6Mu7",
    ),
]
_PATH = "/products/42"
_SKIPPED_PATH = "/health/live"
_QUERY = "utm_source=newsletter&utm_medium=email&page=2"
_PEER = "203.0.113.195"

_OPTIONS: dict[str, Any] = {
    "url": "https://matomo.example.org",
    "site_id": 1,
    "visitor_salt": "profile-hot-path",
    "ignore_paths": ("/health", "/static"),
}


class NullDispatcher(DispatcherBase):
    """Delivery stubbed out: every hit is accepted and forgotten."""

    def submit(self, hit: Hit) -> bool:
        """Accept the hit."""
        return True

    def stats(self) -> DispatchStats:
        """Nothing ever queued."""
        return DispatchStats()


def _visitor(path: str, visitor: int | None) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(path, query, peer, headers) of the request; visitor ``i`` (``--visitors``) varies what
    differs between visitors: address, page id, query, and the ``_pk_id`` cookie (odd visitors
    have none, so their ``cid`` is the keyed hash)."""
    if visitor is None:
        return path, _QUERY, _PEER, _HEADERS
    if path == _PATH:
        path = f"/products/{visitor}"
    peer = f"10.{visitor >> 16 & 255}.{visitor >> 8 & 255}.{visitor & 255}"
    cookie = f"sessionid={visitor:016x}; csrftoken=Zq1Xw2Ce3Vr4Bt5Ny6Mu7"
    if visitor % 2 == 0:
        cookie += f"; _pk_id.1.1fff={visitor:016x}.1700000000."
    headers = [(k, cookie if k == "cookie" else v) for k, v in _HEADERS]
    return path, f"{_QUERY}&v={visitor}", peer, headers


def _scope(path: str, visitor: int | None = None) -> dict[str, Any]:
    path, query, peer, headers = _visitor(path, visitor)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": (peer, 51234),
        "server": ("10.0.0.5", 8000),
    }


def _environ(path: str, visitor: int | None = None) -> dict[str, Any]:
    path, query, peer, headers = _visitor(path, visitor)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "10.0.0.5",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": peer,
        "REMOTE_PORT": "51234",
        "RAW_URI": f"{path}?{query}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


# -- the apps -------------------------------------------------------------------------------
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", b"26")],
}
_BODY_MESSAGE = {"type": "http.response.body", "body": _BODY}


async def tiny_asgi(scope: Any, receive: Any, send: Any) -> None:
    """The smallest useful ASGI app: one JSON response."""
    await send(_START)
    await send(_BODY_MESSAGE)


def tiny_wsgi(environ: Any, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The smallest useful WSGI app: one JSON response."""
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "26")])
    return [_BODY]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _step(coroutine: Coroutine[Any, Any, None]) -> None:
    # Nothing in these requests suspends, so one send() runs the coroutine to its end.
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the ASGI app suspended; it cannot be stepped without an event loop")


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], Any]:
    return _write


def _write(data: bytes) -> None:
    return None


def _templates(make: Callable[..., dict[str, Any]], path: str, visitors: int) -> list[Any]:
    if visitors <= 1:
        return [make(path)]
    return [make(path, i) for i in range(visitors)]


def asgi_runner(app: Any, path: str, visitors: int = 1) -> Callable[[int], float]:
    """A loop of ``n`` requests to ``app``; returns the µs per request."""
    templates = _templates(_scope, path, visitors)
    count = len(templates)

    def run(n: int) -> float:
        clock = _clock
        start = clock()
        for i in range(n):
            scope = templates[i % count].copy()  # the middleware writes scope["state"]
            _step(app(scope, _receive, _send))
        return (clock() - start) / n * 1e6

    return run


def wsgi_runner(app: Any, path: str, visitors: int = 1) -> Callable[[int], float]:
    """A loop of ``n`` requests to ``app`` as a server runs them (iterate, then close)."""
    templates = _templates(_environ, path, visitors)
    count = len(templates)

    def run(n: int) -> float:
        clock = _clock
        start = clock()
        for i in range(n):
            environ = templates[i % count].copy()  # the middleware writes environ["matomo"]
            result = app(environ, _start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return (clock() - start) / n * 1e6

    return run


def runners(case: str, visitors: int = 1) -> tuple[Callable[[int], float], Callable[[int], float]]:
    """(bare, wrapped) loops of one case."""
    stack, kind = case.split("-")
    path = _PATH if kind == "tracked" else _SKIPPED_PATH
    if stack == "asgi":
        wrapped_asgi = AsgiMiddleware(tiny_asgi, dispatcher=NullDispatcher(), **_OPTIONS)
        return (
            asgi_runner(tiny_asgi, path, visitors),
            asgi_runner(wrapped_asgi, path, visitors),
        )
    wrapped_wsgi = WsgiMiddleware(tiny_wsgi, dispatcher=NullDispatcher(), **_OPTIONS)
    return wsgi_runner(tiny_wsgi, path, visitors), wsgi_runner(wrapped_wsgi, path, visitors)


def measure(case: str, n: int, repeats: int, visitors: int = 1) -> dict[str, float]:
    """Median µs per request, bare and wrapped, interleaved run by run."""
    bare, wrapped = runners(case, visitors)
    bare(n // 5)
    wrapped(n // 5)  # warm up (caches, branch predictors, allocator)
    bare_runs: list[float] = []
    wrapped_runs: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            bare_runs.append(bare(n))
            wrapped_runs.append(wrapped(n))
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    b, w = statistics.median(bare_runs), statistics.median(wrapped_runs)
    return {"bare": b, "wrapped": w, "added": w - b}


def profile(case: str, n: int, tool: str, limit: int, visitors: int = 1) -> None:
    """Profile ``n`` wrapped requests of ``case`` with cProfile or pyinstrument."""
    _, wrapped = runners(case, visitors)
    wrapped(max(1, n // 5))
    if tool == "cprofile":
        profiler = cProfile.Profile()
        profiler.enable()
        wrapped(n)
        profiler.disable()
        stats = pstats.Stats(profiler)
        stats.strip_dirs().sort_stats("tottime").print_stats(limit)
        stats.sort_stats("cumulative").print_stats(limit)
        return
    from pyinstrument import Profiler  # pip install pyinstrument

    sampler = Profiler(interval=0.0001)
    sampler.start()
    wrapped(n)
    sampler.stop()
    print(sampler.output_text(unicode=True, color=False, show_all=False))


def main(argv: list[str] | None = None) -> int:
    """Print µs/request (median of repeats) for each case, or profile one case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=CASES, action="append", help="default: all")
    parser.add_argument("-n", type=int, default=20_000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", choices=("cprofile", "pyinstrument"))
    parser.add_argument("--limit", type=int, default=30, help="rows of the cProfile tables")
    parser.add_argument(
        "--visitors",
        type=int,
        default=1,
        help="1: the same request every time (default); N: N distinct visitors in turn "
        "(address, page, query, cookie vary), so that per-visitor caches miss",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this thread's CPU time (steadier on a busy machine)",
    )
    args = parser.parse_args(argv)
    global _clock
    _clock = time.perf_counter if args.clock == "wall" else time.thread_time
    cases = args.case or list(CASES)
    if args.profile:
        for case in cases:
            print(f"== {case} ({args.profile}, {args.n} requests)")
            profile(case, args.n, args.profile, args.limit, args.visitors)
        return 0
    python = sys.version.split()[0]
    print(
        f"python {python}, n={args.n}, repeats={args.repeats}, clock={args.clock}, "
        f"visitors={args.visitors}"
    )
    print(f"{'case':<14} {'bare µs':>9} {'wrapped µs':>11} {'added µs':>9}")
    for case in cases:
        r = measure(case, args.n, args.repeats, args.visitors)
        print(f"{case:<14} {r['bare']:>9.2f} {r['wrapped']:>11.2f} {r['added']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
