"""The paced (open-loop) client of ``bench/paced.py``: requests start on schedule whatever
happened to earlier ones, and latency counts from the scheduled start, so one stall of the
server shows in the tail of every request that was due meanwhile (no coordinated omission)."""

from __future__ import annotations

import asyncio

from bench.paced import PacedResult, paced_load, percentile

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _serve(stall_after: int, stall_s: float) -> tuple[asyncio.Server, int]:
    answered = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        while await reader.readuntil(b"\r\n\r\n"):
            answered += 1
            if answered == stall_after:
                await asyncio.sleep(stall_s)  # the whole server stalls (one event loop)
            writer.write(ANSWER)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_stall_shows_in_the_tail_and_every_scheduled_request_is_sent() -> None:
    async def main() -> PacedResult:
        server, port = await _serve(stall_after=50, stall_s=0.3)
        async with server:
            return await paced_load(port, rate=200.0, seconds=1.5, connections=1)

    result = asyncio.run(main())
    assert result.completed == result.scheduled == 300
    p50, p99 = result.latency_ms["p50"], result.latency_ms["p99"]
    assert p50 < 50  # most requests are answered at once
    # With one connection a closed-loop client would see one slow request; here the ~60
    # requests due during the 300 ms stall all count their wait from their scheduled start.
    assert p99 >= 200


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
