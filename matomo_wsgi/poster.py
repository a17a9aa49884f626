"""What a ``ThreadExecutor`` performs its batches with (``Poster``), and the thread
dispatcher's default poster: each batch POSTed with the standard library's
``http.client`` over one keep-alive connection per batch in flight (reused from batch to
batch), about a third of httpx's CPU per POST. Used when no proxy of the environment applies
to the endpoint (else httpx, which honours them, posts)."""

from __future__ import annotations

import http.client
import logging
import select
import ssl
import threading
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from matomo_tracking.answers import (
    Answer,
    AnswerBuffer,
    ConnectError,
    TransportError,
    WriteError,
    transport_error,
)
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery_queue import Batch, Outcome
from matomo_tracking.wire import bulk_headers

__all__ = ["LeanPoster", "Poster"]

logger = logging.getLogger("matomo_wsgi.dispatcher")

_CHUNK = 64 * 1024


class Poster(Protocol):
    """Performs one batch for a ``ThreadExecutor`` (from any of its threads)."""

    def post(self, batch: Batch) -> Outcome:
        """Deliver ``batch`` (never raising); how it ended."""

    def reset(self) -> None:
        """Forget connections inherited over a fork."""

    def close(self) -> None:
        """Release connections (the executor is closed)."""


class LeanPoster:
    """POSTs batches for a ``ThreadExecutor`` with ``http.client`` connections to the
    endpoint: one per batch in flight, kept alive and reused. Redirects are never followed;
    at most ``MAX_ANSWER_BYTES`` of an answer is read."""

    def __init__(self, config: TrackingConfig) -> None:
        self.config = config
        parts = urlsplit(config.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = bulk_headers(config.endpoint)
        self._tls: ssl.SSLContext | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the connections (after a fork they are the parent's)."""
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._closed = False

    def post(self, batch: Batch) -> Outcome:
        """POST ``batch`` (within its timeout); never raises."""
        return self.post_body(batch.body, batch.timeout)

    def post_body(self, body: bytes, timeout: float) -> Answer | tuple[TransportError, str]:
        """POST one bulk body (the answer within ``timeout``); never raises."""
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._take()
            answer, reusable = self._exchange(conn, body, timeout)
        except Exception as exc:
            if conn is not None:
                conn.close()
            return transport_error(exc)
        if reusable:
            self._give(conn)
        else:
            conn.close()
        return answer

    def _exchange(
        self, conn: http.client.HTTPConnection, body: bytes, timeout: float
    ) -> tuple[Answer, bool]:
        if conn.sock is None:
            conn.timeout = min(self.config.connect_timeout, timeout)
            try:
                conn.connect()  # TCP connect and, for https, the TLS handshake
            except Exception as exc:
                raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
        conn.sock.settimeout(timeout)
        try:
            conn.putrequest("POST", self._target, skip_accept_encoding=True)
            for name, value in self._headers.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        except Exception as exc:
            raise WriteError(f"{type(exc).__name__}: {exc}") from exc
        response = conn.getresponse()  # TimeoutError, RemoteDisconnected...: by the core
        buffer = AnswerBuffer()
        full = False
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:  # read(amt) ends quietly where Content-Length was not met
                if response.length:
                    raise http.client.IncompleteRead(buffer.body, response.length)
                full = True
                break
            if buffer.feed(chunk):
                break
        headers = {name.lower(): value for name, value in response.getheaders()}
        reusable = full and not response.will_close
        return Answer.of(response.status, buffer.body, headers), reusable

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()  # the one used last: the warmest
                if not _dropped(conn):
                    return conn
                conn.close()  # the server closed it while idle: nothing was sent on it
            tls = self._tls
        if not self._https:
            return http.client.HTTPConnection(self._host, self._port)
        if tls is None:  # made once (it loads the CA certificates): the context httpx uses
            tls = httpx.create_ssl_context()
            with self._lock:
                tls = self._tls = self._tls or tls
        return http.client.HTTPSConnection(self._host, self._port, context=tls)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()  # close() came while it was posting

    def close(self) -> None:
        """Close the idle connections; those posting close when done."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            conn.close()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle keep-alive connection was closed by the server (readable while no
    request is out means end of stream, or garbage: either way unusable)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        if not hasattr(select, "poll"):  # Windows, where select's limit is a count
            return bool(select.select([sock], [], [], 0)[0])
        poller = select.poll()  # select cannot watch a descriptor numbered 1024 or more
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
