"""A process sharing a journal with others, for tests/core/test_journal.py.

    python -m tests.core.journal_worker append PATH START COUNT LANES
    python -m tests.core.journal_worker drain PATH LEASE GO
    python -m tests.core.journal_worker claim-and-die PATH

``append`` stores COUNT hits numbered from START (lane: number % LANES), 10 per transaction;
``drain`` prints "ready", waits for the file GO, then claims, records and settles batches
until the journal is empty, and prints a JSON line of its claims (from when to when it held
each, and its hit numbers) and of the possible duplicates it was told of;
``claim-and-die`` claims one batch, prints its hit numbers and is killed before settling it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from matomo_tracking.journal import Journal
from matomo_tracking.wire import EncodedHit


def hit(number: int, lane: int = 0) -> EncodedHit:
    """The hit numbered ``number`` of visitor ``lane`` (its number is in its JSON, its
    creation time is fixed)."""
    return EncodedHit(b'{"idsite":"1","n":"%d"}' % number, 1_000.0, lane)


def number_of(data: bytes) -> int:
    """The number of a hit made by ``hit``."""
    return int(json.loads(data)["n"])


def main(argv: list[str]) -> int:
    command, path = argv[0], argv[1]
    journal = Journal(path, busy_timeout=30.0)
    if command == "append":
        start, count, lanes = (int(a) for a in argv[2:5])
        for first in range(start, start + count, 10):
            numbers = range(first, min(first + 10, start + count))
            stored = journal.append(
                os.getpid(), time.time(), spare=[hit(n, n % lanes) for n in numbers]
            )
            assert stored.stored == len(numbers), stored
        return 0
    if command == "drain":
        lease, go = float(argv[2]), argv[3]
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.005)
        duplicates = 0
        claims: list[tuple[float, float, list[int]]] = []
        idle = 0
        while idle < 300:  # up to 3 s without a claim
            claim = journal.claim(
                os.getpid(), time.time(), lease=lease, max_hits=7, max_bytes=1 << 20
            )
            if claim is None:
                counts = journal.counts(time.time())
                if counts is not None and counts.rows == 0:
                    break
                idle += 1
                time.sleep(0.01)
                continue
            idle = 0
            claimed = time.time()
            duplicates += claim.possible_duplicates
            time.sleep(0.002)  # "sending": other processes claim meanwhile
            hits = [number_of(h.data) for h in claim.hits]
            claims.append((claimed, time.time(), hits))
            journal.settle(os.getpid(), claim.rows, time.time())
        print(json.dumps({"claims": claims, "duplicates": duplicates}))
        return 0
    if command == "claim-and-die":
        claim = journal.claim(os.getpid(), time.time(), lease=0.5, max_hits=5, max_bytes=1 << 20)
        assert claim is not None
        print(json.dumps([number_of(h.data) for h in claim.hits]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
