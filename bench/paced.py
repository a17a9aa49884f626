#!/usr/bin/env python3
"""Latency at a fixed request rate, open loop: ``bench/.venv-bench/bin/python bench/paced.py``.

Under saturation (wrk's closed loop) a tail latency only mirrors the throughput. Here each of
``--connections`` keep-alive connections has its own schedule (request ``i`` of connection
``k`` is due at ``t0 + (i * C + k) / rate``), sends it as soon as it is due and the previous
answer arrived, and its latency is counted from the *scheduled* start, so a stall of the
server delays every request due meanwhile and shows in the percentiles (no coordinated
omission, as wrk2 measures). The rate is half the bare app's maximum, measured with wrk in the
same run (``--rate`` fixes it instead).

For each stack (uvicorn httptools+uvloop with Starlette; gunicorn gthread with Flask) and each
run, the variants are measured one after the other against a fresh server: ``bare``, ``stub``
(our request path, no delivery), ``ours`` (default in-process delivery), ``spool`` (``ours``
with ``spool=``: the journal's CPU per hit at an equal request rate is ``spool`` minus ``ours``)
and ``external`` (``spool=`` + ``sender="external"``, with ``matomo-middleware send`` as the
sender) when this version has them. Requests are the
browser-like ones of ``bench/load.lua`` (2,000 visitors). Prints a table and writes JSON
(``--out``). Caveats: the client is Python on the same 2 cores; its timers have about 1 ms of
slack, which shifts every variant's latencies alike; compare p99 with the same run's bare.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.micro import _browser_headers  # noqa: E402
from bench.run import DEFAULT_OURS_OPTIONS, app_service  # noqa: E402
from bench.servers import (  # noqa: E402
    SENDER_COMMAND,
    CollectorProcess,
    ProcessTree,
    free_port,
    start_sender,
    stop_sender,
)
from bench.wrk import LoadSpec, run_wrk  # noqa: E402

__all__ = ["SENDER_COMMAND", "PacedResult", "external_sender_available", "paced_load", "percentile"]

_VISITORS = 2_000


def _requests() -> list[bytes]:
    """GET /items/<n> and GET /page alternately, with the headers of 2,000 visitors."""
    out = []
    for n in range(_VISITORS):
        path = f"/items/{n // 2}" if n % 2 == 0 else "/page"
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in _browser_headers(n))]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return out


def percentile(sorted_values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ascending values."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclasses.dataclass
class PacedResult:
    """What one paced load saw."""

    rate: float
    seconds: float
    scheduled: int
    completed: int
    errors: int
    latency_ms: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return dataclasses.asdict(self)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection reading answers with Content-Length."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiter: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end == -1:
            return
        head = self.buffer[:end].lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start != -1 else 0
        if len(self.buffer) >= end + 4 + length:
            self.buffer = self.buffer[end + 4 + length :]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


async def paced_load(port: int, rate: float, seconds: float, connections: int = 32) -> PacedResult:
    """Load 127.0.0.1:``port`` at ``rate`` req/s for ``seconds`` (open loop, see above)."""
    loop = asyncio.get_running_loop()
    requests = _requests()
    latencies: list[float] = []
    errors = 0
    scheduled = 0
    t0 = loop.time() + 0.2
    end = t0 + seconds

    async def run(k: int) -> None:
        nonlocal errors, scheduled
        _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
        i = 0
        while True:
            due = t0 + (i * connections + k) / rate
            if due >= end:
                break
            scheduled += 1
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            conn.waiter = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(requests[(i * connections + k) % len(requests)])
            try:
                await asyncio.wait_for(conn.waiter, 10.0)
            except (ConnectionError, asyncio.TimeoutError):
                errors += 1
                if conn.transport is not None:
                    conn.transport.close()
                _, conn = await loop.create_connection(_Connection, "127.0.0.1", port)
            else:
                latencies.append((loop.time() - due) * 1000.0)
            i += 1
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(run(k) for k in range(connections)))
    latencies.sort()
    return PacedResult(
        rate=rate,
        seconds=seconds,
        scheduled=scheduled,
        completed=len(latencies),
        errors=errors,
        latency_ms={
            "p50": round(percentile(latencies, 50), 3),
            "p90": round(percentile(latencies, 90), 3),
            "p99": round(percentile(latencies, 99), 3),
            "p999": round(percentile(latencies, 99.9), 3),
            "max": round(latencies[-1], 3) if latencies else float("nan"),
        },
    )


def external_sender_available() -> bool:
    """Whether this version has ``spool=`` and ``sender="external"``."""
    from matomo_tracking.config import TrackingConfig

    names = {f.name for f in dataclasses.fields(TrackingConfig)}
    return {"spool", "sender"} <= names


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def measure(
    stack: str,
    variant: str,
    rate: float | None,
    seconds: float,
    connections: int,
    collector: CollectorProcess,
    logs: Path,
) -> dict[str, Any]:
    """One fresh server, then a wrk maximum (when ``rate`` is None) or a paced load."""
    options = dict(DEFAULT_OURS_OPTIONS)
    sender: subprocess.Popen[bytes] | None = None
    app_variant = "ours" if variant in ("spool", "external") else variant
    if variant in ("spool", "external"):
        spool = logs / f"{stack}-spool.sqlite3"
        spool.unlink(missing_ok=True)
        options.update(spool=str(spool))
    if variant == "external":
        options.update(sender="external")
        sender = start_sender(spool, collector.url)
    server = app_service(
        stack, app_variant, collector.url, options, logs / f"{stack}-{variant}.log"
    )
    port = server.port
    record: dict[str, Any] = {"stack": stack, "variant": variant}
    try:
        server.start()
        run_wrk(server.base_url, LoadSpec(duration=1.0))  # warm up
        time.sleep(0.5)
        tree = ProcessTree(server.pid)
        cpu_before = tree.cpu_seconds()
        sender_tree = ProcessTree(sender.pid) if sender is not None else None
        sender_before = sender_tree.cpu_seconds() if sender_tree is not None else 0.0
        if rate is None:
            load = run_wrk(server.base_url, LoadSpec(duration=seconds))
            record["max_req_per_s"] = load["req_per_s"]
            requests = load["requests"]
        else:
            result = _run_loop(paced_load(port, rate, seconds, connections))
            record.update(result.as_dict())
            requests = result.completed
        record["cpu_us_per_req"] = (tree.cpu_seconds() - cpu_before) / max(1, requests) * 1e6
        record["sender_cpu_us_per_req"] = (
            (sender_tree.cpu_seconds() - sender_before) / max(1, requests) * 1e6
            if sender_tree is not None
            else None
        )
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        server.stop()
        if sender is not None:
            stop_sender(sender)
    return record


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="asgi,wsgi")
    parser.add_argument("--variants", default="bare,stub,ours,external")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, help="fixed req/s (default: half of bare's max)")
    parser.add_argument("--out", type=Path, help="write the JSON results here")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    skipped = []
    for journaled in ("spool", "external"):
        if journaled in variants and not external_sender_available():
            variants.remove(journaled)
            skipped.append(f"{journaled}: this version has no spool=/sender='external' yet")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-paced-") as tmp:
        logs = Path(tmp)
        collector = CollectorProcess(port=free_port(), log_path=logs / "collector.log")
        collector.start()
        try:
            for run in range(1, args.runs + 1):
                for stack in args.stacks.split(","):
                    rate = args.rate
                    if rate is None:
                        top = measure(stack, "bare", None, 5.0, 32, collector, logs)
                        rate = round(top.get("max_req_per_s", 0) / 2)
                        print(
                            f"{stack} run {run}: bare max {top.get('max_req_per_s', 0):,.0f} "
                            f"req/s -> paced at {rate:,} req/s",
                            flush=True,
                        )
                    for variant in variants:
                        record = measure(
                            stack, variant, rate, args.seconds, args.connections, collector, logs
                        )
                        record["run"] = run
                        results.append(record)
                        lat = record.get("latency_ms", {})
                        print(
                            f"  {stack} {variant:>8} run {run}: {record.get('error') or ''}"
                            f"p50 {lat.get('p50')} p99 {lat.get('p99')} p99.9 "
                            f"{lat.get('p999')} ms, {record.get('completed')}/"
                            f"{record.get('scheduled')} done, cpu "
                            f"{record.get('cpu_us_per_req', 0):.0f} µs/req",
                            flush=True,
                        )
        finally:
            collector.stop()
    summary = _summary(results)
    print(json.dumps({"skipped": skipped, "summary": summary}, indent=2))
    if args.out is not None:
        args.out.write_text(
            json.dumps({"skipped": skipped, "summary": summary, "runs": results}, indent=2)
        )
    return 0


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stack and variant: medians over the runs of p50/p99 and of p99 minus the same
    run's bare p99."""
    bare = {
        (r["stack"], r["run"]): r for r in results if r["variant"] == "bare" and "error" not in r
    }
    rows = []
    for key in dict.fromkeys((r["stack"], r["variant"]) for r in results):
        runs = [r for r in results if (r["stack"], r["variant"]) == key and "error" not in r]
        if not runs:
            rows.append({"stack": key[0], "variant": key[1], "runs": 0})
            continue
        deltas = [
            r["latency_ms"]["p99"] - bare[(r["stack"], r["run"])]["latency_ms"]["p99"]
            for r in runs
            if (r["stack"], r["run"]) in bare
        ]
        rows.append(
            {
                "stack": key[0],
                "variant": key[1],
                "runs": len(runs),
                "rate": statistics.median(r["rate"] for r in runs),
                "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in runs),
                "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in runs),
                "p99_minus_bare_ms": statistics.median(deltas) if deltas else None,
                "completed_ratio": statistics.median(
                    r["completed"] / max(1, r["scheduled"]) for r in runs
                ),
                "cpu_us_per_req": statistics.median(r["cpu_us_per_req"] for r in runs),
            }
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
