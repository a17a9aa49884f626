"""The asyncio executor's default poster: each batch POSTed with h11 over asyncio streams, one
keep-alive connection per batch in flight (reused from batch to batch), about a quarter of
httpx's CPU per POST. Used when no ``http_client`` is given and no proxy of the environment
applies to the endpoint (else ``posting.AsyncHttpPoster``: httpx honours them)."""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11
import httpx

from matomo_tracking.answers import (
    Answer,
    AnswerBuffer,
    ConnectError,
    WriteError,
    transport_error,
)
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery_queue import Batch, Outcome
from matomo_tracking.wire import bulk_headers

__all__ = ["LeanAsyncPoster"]

_T = TypeVar("_T")

_CHUNK = 64 * 1024


class _Connection:
    """One keep-alive connection: its streams, its loop and its HTTP/1.1 state."""

    __slots__ = ("http", "loop", "reader", "sent", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.http = h11.Connection(h11.CLIENT)
        self.sent = False  # whether the request being exchanged was sent in full

    def dropped(self) -> bool:
        """Whether the server closed it while idle (end of stream seen by the loop, or the
        socket readable while no request is out: end of stream or garbage, unusable)."""
        if self.writer.is_closing() or self.reader.at_eof():
            return True
        sock = self.writer.get_extra_info("socket")
        try:  # poll: select cannot watch a descriptor numbered 1024 or more (Windows: select)
            ready = select.poll() if hasattr(select, "poll") else None
            if ready is None:
                return bool(select.select([sock], [], [], 0)[0])
            ready.register(sock, select.POLLIN)
            return bool(ready.poll(0))
        except (OSError, ValueError, TypeError):
            return True

    def close(self) -> None:
        """Close it on its loop (from another loop or thread: there, if it still runs)."""
        try:
            here = asyncio.get_running_loop() is self.loop
        except RuntimeError:  # no loop runs in this thread
            here = False
        # abort: at once, without TLS's close_notify exchange (that could outlive the loop)
        close = self.writer.transport.abort
        with contextlib.suppress(RuntimeError):  # its loop is closed: nothing can close it
            if here:
                close()
            else:
                self.loop.call_soon_threadsafe(close)


class LeanAsyncPoster:
    """POSTs batches for one ``AsyncioDispatcher`` with h11 over ``asyncio`` streams: one
    connection per batch in flight, kept alive and reused; they belong to one event loop
    (``forget`` them when the worker moves to another). Redirects are never followed; at most
    ``MAX_ANSWER_BYTES`` of an answer is read."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        parts = urlsplit(config.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        default = 443 if self._https else 80
        self._port = parts.port or default
        self._target = ((parts.path or "/") + (f"?{parts.query}" if parts.query else "")).encode()
        host = self._host.encode("idna" if not self._host.isascii() else "ascii")
        if b":" in host:  # an IPv6 address
            host = b"[" + host + b"]"
        if self._port != default:
            host += b":%d" % self._port
        self._headers = [
            *(
                (name.encode(), value.encode())
                for name, value in bulk_headers(config.endpoint).items()
            ),
            (b"Host", host),
        ]
        self._tls: ssl.SSLContext | None = None
        self._idle: list[_Connection] = []

    async def post(self, batch: Batch) -> Outcome:
        """POST ``batch`` within its timeout: Matomo's answer or how the request failed."""
        conn: _Connection | None = None
        reusable = False
        try:
            conn = await self._take(batch.timeout)
            conn.sent = False
            try:
                answer, reusable = await _within(self._exchange(conn, batch.body), batch.timeout)
            except asyncio.TimeoutError as exc:
                if conn.sent:
                    raise  # no answer in time (the core's TIMEOUT)
                raise WriteError("TimeoutError: the request could not be sent in time") from exc
            return answer
        except Exception as exc:
            return transport_error(exc)
        finally:  # a cancelled exchange too: the connection is then out of step
            if conn is not None:
                if reusable:
                    self._idle.append(conn)
                else:
                    conn.close()

    async def _exchange(self, conn: _Connection, body: bytes) -> tuple[Answer, bool]:
        http = conn.http
        headers = [*self._headers, (b"Content-Length", b"%d" % len(body))]
        head = http.send(h11.Request(method=b"POST", target=self._target, headers=headers))
        http.send_with_data_passthrough(h11.Data(data=body))
        http.send(h11.EndOfMessage())
        try:
            conn.writer.write((head or b"") + body)  # one send: no delayed-ACK stall
            await conn.writer.drain()
        except Exception as exc:
            raise WriteError(f"{type(exc).__name__}: {exc}") from exc
        conn.sent = True
        status, buffer = 0, AnswerBuffer()
        answer_headers: dict[str, str] = {}
        while True:
            event = http.next_event()  # RemoteProtocolError when cut or closed: by the core
            if event is h11.NEED_DATA:
                http.receive_data(await conn.reader.read(_CHUNK))  # b"": the server closed
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {
                    name.decode("latin-1"): value.decode("latin-1")  # names come lower-cased
                    for name, value in event.headers
                }
            elif isinstance(event, h11.Data):
                if buffer.feed(event.data):  # the cap: the rest is not read
                    return Answer.of(status, buffer.body, answer_headers), False
            elif isinstance(event, h11.EndOfMessage):
                break
            elif not isinstance(event, h11.InformationalResponse):  # never spin on PAUSED
                raise h11.RemoteProtocolError(f"unexpected {event!r} before the answer's end")
            # an informational answer (100 Continue): the real one follows
        reusable = http.our_state is h11.DONE and http.their_state is h11.DONE
        if reusable:
            http.start_next_cycle()
        return Answer.of(status, buffer.body, answer_headers), reusable

    async def _take(self, timeout: float) -> _Connection:
        while self._idle:
            conn = self._idle.pop()  # the one used last: the warmest
            if not conn.dropped():
                return conn
            conn.close()  # the server closed it while idle: nothing was sent on it
        if self._https and self._tls is None:  # made once (it loads the CA certificates)
            self._tls = httpx.create_ssl_context()  # the context httpx uses
        connecting = asyncio.open_connection(self._host, self._port, ssl=self._tls)
        try:  # TCP connect and, for https, the TLS handshake
            reader, writer = await asyncio.wait_for(
                connecting, min(self.config.connect_timeout, timeout)
            )
        except Exception as exc:
            raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return _Connection(reader, writer)

    def forget(self) -> None:
        """Drop the connections made on another loop (closed there if it still runs)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def close(self) -> None:
        """Close the idle connections."""
        self.forget()


if sys.version_info >= (3, 11):

    async def _within(work: Coroutine[Any, Any, _T], seconds: float) -> _T:
        """``work``'s result, or TimeoutError after ``seconds``."""
        async with asyncio.timeout(seconds):  # no task per call as wait_for (19 → 7 µs on 3.11)
            return await work

else:  # pragma: no cover - Python 3.10
    _within = asyncio.wait_for
