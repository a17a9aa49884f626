"""How the asyncio executor waits: for an event with a time limit (never swallowing a
cancellation), for the shorter of two waits, and whether an event loop runs here."""

from __future__ import annotations

import asyncio

__all__ = ["running_loop", "sooner", "woken"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def sooner(seconds: float | None, other: float | None) -> float | None:
    """The shorter of two waits (None: no limit)."""
    if seconds is None or (other is not None and other < seconds):
        return other
    return seconds


async def woken(event: asyncio.Event, seconds: float | None) -> None:
    """Wait until ``event`` is set, at most ``seconds`` (a cancellation is never swallowed,
    as ``asyncio.wait_for`` may do on Python < 3.12 when both happen at once)."""
    if seconds is None:
        await event.wait()
        return
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
