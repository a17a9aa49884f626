"""Delivery rate: hits per second that one process delivers to Matomo with each dispatcher,
with Matomo (the fast collector, ``bench.collector``) answering after 0, 50 or 500 ms.

For each latency and dispatcher: submit N hits at once (a queue large enough to hold them, so
this measures delivery, not what a full queue drops), flush for at most ``--seconds``, and
divide the hits the collector counted by the time from the first submit to the end of the
flush. Also reports the most bulk requests the collector had in progress at once.

    python bench/delivery_rate.py                        0, 50 and 500 ms, both dispatchers
    python bench/delivery_rate.py --latencies 500 --kinds thread \
        --options '{"max_concurrent_batches": 8}'
    python bench/delivery_rate.py --pace 4 --concurrency 1,4,16
        Matomo's pace: each bulk request costs 4 ms per hit; delivered hits/s with 1, 4 and
        16 batches in flight allowed (``max_concurrent_batches``)

Prints one line per measurement and, with ``--json PATH``, writes them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.micro import _plain, _run_loop, _wait_for, sample_hits
from bench.servers import CollectorProcess, free_port

__all__ = ["delivery_rate", "main"]

#: Hits submitted per latency (ms): enough to keep the dispatcher busy for several seconds.
DEFAULT_COUNTS = {0.0: 100_000, 50.0: 100_000, 500.0: 100_000}


def delivery_rate(
    kind: str,
    collector: CollectorProcess,
    count: int,
    *,
    seconds: float,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Submit ``count`` hits to a new ``kind`` dispatcher (``asyncio`` or ``thread``), flush
    for at most ``seconds``; hits/s the collector counted."""
    from matomo_tracking.config import TrackingConfig

    config = TrackingConfig(
        url=collector.url,
        **{"queue_max_hits": max(count, 10_000), "queue_max_bytes": 1 << 30, **options},
    )
    hits = sample_hits(count)
    collector.reset()
    hits_now: Callable[[], int] = collector.hits
    accepted = 0
    if kind == "thread":
        from matomo_wsgi import ThreadDispatcher

        dispatcher = ThreadDispatcher(config)
        start = time.perf_counter()
        for hit in hits:
            accepted += bool(dispatcher.submit(hit))
        flushed = dispatcher.flush(seconds)
        elapsed = time.perf_counter() - start
        delivered = hits_now()
        dispatcher.close(0.1)
        stats = dispatcher.stats()
    elif kind == "asyncio":
        from matomo_asgi import AsyncioDispatcher

        async def deliver() -> tuple[int, bool, float, int, Any]:
            dispatcher = AsyncioDispatcher(config)
            taken = 0
            start = time.perf_counter()
            for index, hit in enumerate(hits):
                taken += bool(dispatcher.submit(hit))
                if index % 1000 == 999:
                    await asyncio.sleep(0)  # let the worker run, as a server's loop would
            done = await dispatcher.aflush(seconds)
            elapsed = time.perf_counter() - start
            delivered = hits_now()
            await dispatcher.aclose(0.1)
            return taken, done, elapsed, delivered, dispatcher.stats()

        accepted, flushed, elapsed, delivered, stats = _run_loop(deliver())
    else:
        raise ValueError(f"kind={kind!r} is invalid: expected 'asyncio' or 'thread'")
    counts = collector.counts()
    if flushed:
        delivered = _wait_for(hits_now, accepted, 5.0)
    return {
        "kind": kind,
        "latency_ms": counts.get("latency_ms"),
        "hits": count,
        "accepted": accepted,
        "delivered": delivered,
        "flushed": flushed,
        "seconds": round(elapsed, 3),
        "hits_per_s": round(delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "bulk_requests": counts.get("bulk_requests"),
        "max_concurrent_requests": counts.get("max_concurrent"),
        "options": options,
        "stats": _plain(stats),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print; see the module's docstring."""
    parser = argparse.ArgumentParser(description="hits/s delivered by each dispatcher")
    parser.add_argument("--latencies", default="0,50,500", help="collector latencies, ms")
    parser.add_argument("--kinds", default="asyncio,thread", help="dispatchers to measure")
    parser.add_argument("--hits", type=int, help="hits per measurement (default: by latency)")
    parser.add_argument("--seconds", type=float, default=30.0, help="longest flush (30)")
    parser.add_argument("--options", default="{}", help="TrackingConfig options, JSON")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--pace", type=float, default=0.0, help="ms each hit costs Matomo")
    parser.add_argument(
        "--concurrency", default="", help="max_concurrent_batches values to compare, e.g. 1,4,16"
    )
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    widths = [int(x) for x in args.concurrency.split(",") if x] or [None]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        collector = CollectorProcess(port=free_port(), log_path=Path(tmp) / "collector.log")
        try:
            collector.start()
            for latency in (float(x) for x in args.latencies.split(",")):
                collector.set_latency(latency, args.pace)
                for kind, width in ((k, w) for k in args.kinds.split(",") for w in widths):
                    count = args.hits or DEFAULT_COUNTS.get(latency, 20_000)
                    chosen = (
                        options if width is None else {**options, "max_concurrent_batches": width}
                    )
                    result = delivery_rate(
                        kind, collector, count, seconds=args.seconds, options=chosen
                    )
                    result["per_hit_ms"] = args.pace
                    results.append(result)
                    stats = result["stats"]
                    dropped = stats.get("dropped") if isinstance(stats, dict) else "?"
                    lanes = "" if width is None else f" x{width:<2}"
                    print(
                        f"{kind:8}{lanes} {latency:5.0f} ms +{args.pace:g} ms/hit: "
                        f"{result['delivered']:>7}/{count} hits in "
                        f"{result['seconds']:6.2f} s = {result['hits_per_s']:>9.1f} hits/s "
                        f"(bulk requests {result['bulk_requests']}, at once "
                        f"≤ {result['max_concurrent_requests']}, dropped "
                        f"{dropped})",
                        flush=True,
                    )
        finally:
            collector.stop()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
