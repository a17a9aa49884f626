"""A fast Matomo-compatible collector that only counts hits, for benchmarks.

Unlike ``matomo_tracking.testing.Collector`` it neither validates nor stores hits: it answers
like Matomo as cheaply as it can, so that it is never the bottleneck of a benchmark.

- ``GET``/``POST .../matomo.php`` (or any path ending in ``.php``) with parameters: one hit;
  ``204`` when ``send_image=0`` was sent, else ``200`` with a 1x1 GIF.
- ``POST`` of a bulk JSON body (``{"requests": [...]}``): counts the entries without parsing
  the body when every entry is a JSON object (the ``{"`` byte pair cannot occur inside a JSON
  string, so it opens exactly one object), else with ``json.loads``; answers
  ``200 {"status":"success","tracked":n,"invalid":0}``.
- ``GET /_bench/counts``: the counters as JSON. ``POST /_bench/reset``: zero them.
  ``POST /_bench/mode?latency_ms=N``: wait ``N`` ms (``asyncio.sleep``) before answering each
  tracking request.

"Down" is played by the harness: it stops this process (connections are then refused) and
starts it again on the same port. On shutdown the counters are written to ``--counts-file``
so that hits answered just before the stop are not lost from the count.

Run: ``python -m bench.collector --port 8765 [--counts-file counts.json]`` (uvicorn, one
process, httptools and uvloop when installed).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["BenchCollector", "count_bulk_entries", "main"]

_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_BULK_PREFIX = b'{"requests":['
_JSON = [(b"content-type", b"application/json")]


def count_bulk_entries(body: bytes) -> int | None:
    """How many hits a bulk body holds, or None if it is not a bulk body.

    Fast path for the compact form every client of this project sends (entries are flat JSON
    objects): count the ``{"`` pairs after the opening of the ``requests`` array.
    """
    if body.startswith(_BULK_PREFIX):
        if body.startswith(b'{"requests":[]'):
            return 0
        if body[len(_BULK_PREFIX) : len(_BULK_PREFIX) + 2] == b'{"':
            return body.count(b'{"', len(_BULK_PREFIX))
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("requests"), list):
        return None
    return sum(1 for entry in data["requests"] if isinstance(entry, dict | str))


class BenchCollector:
    """The ASGI app: counters, latency mode and the control endpoints."""

    def __init__(self, counts_file: Path | None = None) -> None:
        self.counts_file = counts_file
        self.latency = 0.0
        self.per_hit = 0.0  # Matomo's pace: seconds each hit of a request costs it
        self.concurrent = 0  # tracking requests in progress
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.hits = 0
        self.bulk_requests = 0
        self.single_requests = 0
        self.unparsed = 0
        self.bytes = 0
        self.since = time.time()
        # the most tracking requests in progress at once (body read, not yet answered)
        self.max_concurrent = self.concurrent

    def counts(self) -> dict[str, Any]:
        """The counters (and the current latency) as a JSON-able dict."""
        return {
            "hits": self.hits,
            "bulk_requests": self.bulk_requests,
            "single_requests": self.single_requests,
            "unparsed": self.unparsed,
            "bytes": self.bytes,
            "since": self.since,
            "max_concurrent": self.max_concurrent,
            "latency_ms": round(self.latency * 1000),
            "per_hit_ms": self.per_hit * 1000,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path: str = scope["path"]
        if path.endswith(".php"):
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.per_hit and scope["method"] == "POST":
                    await asyncio.sleep(self.per_hit * (count_bulk_entries(body) or 1))
                await self._track(scope, body, send)
            finally:
                self.concurrent = max(0, self.concurrent - 1)
        elif path.startswith("/_bench/"):
            await self._control(scope, path, send)
        else:
            await _respond(send, 404, [(b"content-type", b"text/plain")], b"not found")

    async def _track(self, scope: Scope, body: bytes, send: Send) -> None:
        self.bytes += len(body)
        query: bytes = scope.get("query_string", b"")
        if scope["method"] == "POST" and b'"requests"' in body[:64]:
            count = count_bulk_entries(body)
            if count is None:
                self.unparsed += 1
                count = 0
            self.hits += count
            self.bulk_requests += 1
            if b'"send_image":0' in body[-64:]:  # as Matomo: 204, no counts
                await _respond(send, 204, [], b"")
                return
            answer = b'{"status":"success","tracked":%d,"invalid":0}' % count
            await _respond(send, 200, _JSON, answer)
            return
        if not query and not body:
            await _respond(send, 200, [(b"content-type", b"text/plain")], b"Matomo collector")
            return
        self.hits += 1
        self.single_requests += 1
        if b"send_image=0" in query or b"send_image=0" in body:
            await _respond(send, 204, [], b"")
        else:
            await _respond(send, 200, [(b"content-type", b"image/gif")], _GIF)

    async def _control(self, scope: Scope, path: str, send: Send) -> None:
        if path == "/_bench/reset" and scope["method"] == "POST":
            self.reset()
        elif path == "/_bench/mode" and scope["method"] == "POST":
            params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            try:
                self.latency = max(0.0, float(params.get("latency_ms", "0")) / 1000)
                self.per_hit = max(0.0, float(params.get("per_hit_ms", "0")) / 1000)
            except ValueError:
                message = b'{"error":"latency_ms and per_hit_ms must be numbers"}'
                await _respond(send, 400, _JSON, message)
                return
        elif path != "/_bench/counts":
            await _respond(send, 404, _JSON, b'{"error":"unknown control endpoint"}')
            return
        await _respond(send, 200, _JSON, json.dumps(self.counts()).encode())

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.counts_file is not None:
                    tmp = self.counts_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps(self.counts()))
                    tmp.replace(self.counts_file)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def server_flavour() -> tuple[str, str]:
    """The uvicorn ``http`` and ``loop`` implementations available here (fastest first)."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return http, loop


def main(argv: list[str] | None = None) -> None:
    """Serve the collector on 127.0.0.1 with uvicorn (one process)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--counts-file", type=Path, default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    app = BenchCollector(args.counts_file)
    app.latency = args.latency_ms / 1000
    http, loop = server_flavour()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=http,
        loop=loop,
        lifespan="on",
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
