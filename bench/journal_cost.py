#!/usr/bin/env python3
"""CPU per hit of the journal (``spool=``), in one process, without a network: a
``DeliveryQueue`` with a ``Spool`` on a real SQLite file, hits admitted at a steady pace,
every batch answered at once, rounds as the executors make them (every 0.2 s or 100 hits).

    python3 bench/journal_cost.py [--hits 200000] [--dir /tmp]

Prints the CPU (user + system of this process, from ``os.times()``) per hit spent in the
spool's rounds (writing, deleting, claiming) and, for comparison, in the queue alone; and
the outage case: hits beyond the memory caps written free and read back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from matomo_tracking import Hit, TrackingConfig, encode_hit  # noqa: E402
from matomo_tracking.answers import Answer  # noqa: E402
from matomo_tracking.delivery_queue import DeliveryQueue, Wait  # noqa: E402
from matomo_tracking.journal import Journal  # noqa: E402
from matomo_tracking.spool import SYNC_HITS, Spool  # noqa: E402


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def encoded(n: int) -> list:
    params = {
        "idsite": "1",
        "rec": "1",
        "apiv": "1",
        "url": "https://shop.example/products/item",
        "action_name": "products/item",
        "ua": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "lang": "en-US,en;q=0.9",
        "pv_id": "a1B2c3",
        "rand": "123456",
        "pf_srv": "3",
    }
    now = time.time()
    return [
        encode_hit(Hit({**params, "_id": f"{i % 5000:016x}", "url_n": str(i)}, now))
        for i in range(n)
    ]


def drain(queue: DeliveryQueue, now: float) -> None:
    queue.flush_target()
    while True:
        step = queue.next_step(now, 0.5)
        if isinstance(step, Wait):
            return
        body = json.dumps({"tracked": step.count, "invalid": 0}).encode()
        queue.answered(step, Answer(200, body), now)


def run(hits: list, directory: str, *, spool: bool, queue_max_hits: int) -> float:
    config = TrackingConfig(
        url="http://127.0.0.1:9/", queue_max_hits=queue_max_hits, batch_max_age=0.001
    )
    queue = DeliveryQueue(config)
    sp = None
    if spool:
        path = Path(directory) / f"cost-{os.getpid()}-{queue_max_hits}.sqlite3"
        sp = Spool(Journal(path), queue, owner=7)
    spent = 0.0
    now = time.time()
    for start in range(0, len(hits), SYNC_HITS):
        begin = cpu()
        for hit in hits[start : start + SYNC_HITS]:
            queue.admit(hit, now)
        if sp is not None:
            work = sp.take(now)
            sp.run(work, now)
            sp.done(work, now)
        drain(queue, now)
        spent += cpu() - begin
        now += 0.005
    for _ in range(200):  # what is left: settled rows deleted, overflow read back
        begin = cpu()
        if sp is not None:
            work = sp.take(now)
            sp.run(work, now)
            sp.done(work, now)
        drain(queue, now)
        spent += cpu() - begin
        now += 1.1
        if queue.pending == 0:
            break
    assert queue.pending == 0, queue.pending
    assert queue.stats().sent == len(hits), queue.stats()
    return spent / len(hits) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--dir", help="where the journals go (default: a new temporary one)")
    args = parser.parse_args()
    if args.dir is None:
        args.dir = tempfile.mkdtemp(prefix="journal-cost-")
    hits = encoded(args.hits)
    bare = run(hits, args.dir, spool=False, queue_max_hits=10_000)
    with_spool = run(hits, args.dir, spool=True, queue_max_hits=10_000)
    overflow = run(hits, args.dir, spool=True, queue_max_hits=1_000)
    print(f"queue alone:                      {bare:6.2f} µs CPU per hit")
    print(f"queue + journal:                  {with_spool:6.2f} µs CPU per hit")
    print(f"queue + journal, memory overflow: {overflow:6.2f} µs CPU per hit")
    print(f"journaling:                       {with_spool - bare:6.2f} µs CPU per hit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
