"""Both lean posters (the thread dispatcher's ``http.client`` one, the asyncio dispatcher's h11
one) against raw HTTP/1.1 servers on 127.0.0.1: keep-alive reuse, a connection the server
closed while idle, chunked, huge and cut answers, a hang, a server that reads nothing, a
refused connection, and the httpx path of both dispatchers when a proxy of the environment
applies."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from matomo_asgi import AsyncioDispatcher
from matomo_asgi.lean_posting import LeanAsyncPoster
from matomo_tracking.answers import MAX_ANSWER_BYTES, Answer, TransportError
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery_queue import Batch, Outcome
from matomo_tracking.hits import Hit
from matomo_wsgi import ThreadDispatcher
from matomo_wsgi.poster import LeanPoster
from tests.servers import self_signed_certificate

Reply = Callable[[socket.socket, bytes], bool]  # answer one request; False: close after


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each request read with ``reply``;
    records every request (head and body) it read in full."""

    def __init__(self, reply: Reply, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.connections = 0
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        self._listener = tls.wrap_socket(listener, server_side=True) if tls else listener
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()  # and the TLS handshake, with ``tls``
            except ssl.SSLError:
                continue  # the client refused the certificate
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:  # drop_idle() closes it under recv
            self._exchange(conn)

    def _exchange(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(data) < length:
                data += conn.recv(65536)
            request, data = head + b"\r\n\r\n" + data[:length], data[length:]
            self.requests.append(request)
            if not self.reply(conn, request):
                return

    def drop_idle(self) -> None:
        """Close every connection from the server's side."""
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self._listener.close()
        self.drop_idle()


def ok(conn: socket.socket, request: bytes) -> bool:
    body = b'{"status":"success","tracked":1,"invalid":0}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(reply: Reply, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(reply, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


class Poster:
    """A lean poster driven from the test's thread: the thread one as it is, the asyncio one
    on an event loop of its own (the same loop for every batch, as its worker's)."""

    def __init__(self, kind: str, port: int, scheme: str, userinfo: str = "") -> None:
        netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
        config = TrackingConfig(url=f"{scheme}://{netloc}", connect_timeout=1.0)
        self._thread = LeanPoster(config) if kind == "thread" else None
        self._asyncio = LeanAsyncPoster(config) if kind == "asyncio" else None
        self._loop = asyncio.new_event_loop()

    def post(self, batch: Batch) -> Outcome:
        if self._thread is not None:
            return self._thread.post(batch)
        assert self._asyncio is not None
        return self._loop.run_until_complete(self._asyncio.post(batch))

    def idle(self, seconds: float) -> None:
        """Wait, as a worker between batches (its loop running, for the asyncio one)."""
        self._loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        if self._thread is not None:
            self._thread.close()
        if self._asyncio is not None:
            self._loop.run_until_complete(self._asyncio.close())
            self._loop.run_until_complete(asyncio.sleep(0))  # the transports' last callbacks
        self._loop.close()


PosterFor = Callable[..., Poster]


@pytest.fixture(params=["thread", "asyncio"])
def poster_for(request: pytest.FixtureRequest) -> Iterator[PosterFor]:
    """Makes the lean poster of each executor for a port (closed after the test)."""
    posters: list[Poster] = []

    def make(port: int, scheme: str = "http", userinfo: str = "") -> Poster:
        posters.append(Poster(request.param, port, scheme, userinfo))
        return posters[-1]

    yield make
    for poster in posters:
        poster.close()


def batch(body: bytes = b'{"requests":["?idsite=1&rec=1"]}', timeout: float = 2.0) -> Batch:
    return Batch(body, 1, timeout, False, time.time(), [], (0,))


def test_keep_alive_is_reused_and_headers_are_the_bulk_ones(
    serve: Callable[..., RawServer], poster_for: PosterFor
) -> None:
    server = serve(ok)
    poster = poster_for(server.port)
    assert poster.post(batch()) == Answer(200, b'{"status":"success","tracked":1,"invalid":0}')
    assert isinstance(poster.post(batch()), Answer)
    assert server.connections == 1
    head = server.requests[0].split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert head[0] == b"post /matomo.php http/1.1"
    assert sorted(head[1:]) == [
        b"content-length: 32",
        b"content-type: application/json",
        b"host: 127.0.0.1:%d" % server.port,
        # what httpx sends: Matomo records it for a hit without ``ua``, as before
        b"user-agent: " + httpx.Client().headers["user-agent"].lower().encode(),
    ]
    poster.close()


def test_credentials_in_the_url_go_as_basic_auth_as_httpx_sends_them(
    serve: Callable[..., RawServer], poster_for: PosterFor
) -> None:
    server = serve(ok)
    poster = poster_for(server.port, userinfo="shop:p%40ss%20w")  # a Matomo behind basic auth
    assert isinstance(poster.post(batch()), Answer)
    lines = server.requests[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    fields = {name.lower(): value for name, value in (line.split(b": ", 1) for line in lines[1:])}
    assert fields[b"authorization"] == b"Basic " + base64.b64encode(b"shop:p@ss w")
    assert fields[b"host"] == b"127.0.0.1:%d" % server.port
    assert lines[0] == b"POST /matomo.php HTTP/1.1"


def test_a_connection_on_a_descriptor_above_1024_is_kept_alive(
    serve: Callable[..., RawServer], poster_for: PosterFor
) -> None:
    # select() cannot watch a descriptor numbered 1024 or more: a busy server has them
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"needs 1,200 open files, the limit here is {soft}")
    server = serve(ok)
    poster = poster_for(server.port)
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        for _ in range(3):
            assert isinstance(poster.post(batch()), Answer)
        assert server.connections == 1
    finally:
        poster.close()
        for fd in held:
            os.close(fd)


@pytest.mark.parametrize("looking", [True, False], ids=["loop-saw-it", "loop-asleep"])
def test_a_connection_closed_while_idle_is_replaced_and_the_batch_sent_once(
    serve: Callable[..., RawServer], poster_for: PosterFor, looking: bool
) -> None:
    server = serve(ok)
    poster = poster_for(server.port)
    assert isinstance(poster.post(batch()), Answer)
    server.drop_idle()
    if looking:
        poster.idle(0.1)  # an asyncio worker's loop reads the end of stream meanwhile
    else:
        time.sleep(0.1)  # ... or does not: the socket says so
    assert isinstance(poster.post(batch()), Answer)
    assert len(server.requests) == 2
    assert server.connections == 2
    poster.close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nRETRY-after: 7\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            Answer(429, b"abcde", retry_after="7"),
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Answer(200, b"ok"),
        ),
    ],
    ids=["chunked", "informational-first"],
)
def test_an_answer_is_read_as_it_is_framed(
    serve: Callable[..., RawServer], poster_for: PosterFor, raw: bytes, expected: Answer
) -> None:
    def reply(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(raw)
        return True

    poster = poster_for(serve(reply).port)
    assert poster.post(batch()) == expected
    assert poster.post(batch()) == expected  # still in step


def test_a_huge_answer_is_capped(serve: Callable[..., RawServer], poster_for: PosterFor) -> None:
    def huge(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n")
        with contextlib.suppress(OSError):
            conn.sendall(b"x" * 10_000_000)
        return False

    answer = poster_for(serve(huge).port).post(batch())
    assert isinstance(answer, Answer)
    assert answer.body == b"x" * MAX_ANSWER_BYTES


def test_a_cut_answer_may_have_been_processed(
    serve: Callable[..., RawServer], poster_for: PosterFor
) -> None:
    def cut(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        return False

    def silent(conn: socket.socket, request: bytes) -> bool:
        return False

    for reply in (cut, silent):
        outcome = poster_for(serve(reply).port).post(batch())
        assert isinstance(outcome, tuple)
        assert outcome[0] is TransportError.CUT
        assert outcome[0].maybe_processed


def test_no_answer_in_time_is_a_timeout(
    serve: Callable[..., RawServer], poster_for: PosterFor
) -> None:
    def hang(conn: socket.socket, request: bytes) -> bool:
        time.sleep(1.0)
        return False

    outcome = poster_for(serve(hang).port).post(batch(timeout=0.2))
    assert isinstance(outcome, tuple)
    assert outcome[0] is TransportError.TIMEOUT


def test_a_request_the_server_never_reads_is_not_a_duplicate(poster_for: PosterFor) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # connects, never accepted
        poster = poster_for(listener.getsockname()[1])
        outcome = poster.post(batch(b"x" * 32_000_000, timeout=0.5))  # more than buffers hold
    assert isinstance(outcome, tuple)
    assert outcome[0] is TransportError.OTHER
    assert not outcome[0].maybe_processed


def test_a_refused_connection_is_not_a_duplicate(poster_for: PosterFor) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcome = poster_for(port).post(batch())
    assert isinstance(outcome, tuple)
    assert outcome[0] is TransportError.CONNECT
    assert not outcome[0].maybe_processed


def test_https_trusts_what_httpx_trusts(
    serve: Callable[..., RawServer],
    poster_for: PosterFor,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = serve(ok, tls)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    outcome = poster_for(server.port, "https").post(batch())  # httpx's CA bundle: not trusted
    assert isinstance(outcome, tuple)
    assert outcome[0] is TransportError.CONNECT
    assert server.requests == []  # nothing was sent over the refused channel

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # which httpx's context then trusts
    poster = poster_for(server.port, "https")
    assert isinstance(poster.post(batch()), Answer)
    assert isinstance(poster.post(batch()), Answer)
    assert len(server.requests) == 2
    assert server.connections == 1  # kept alive (the refused handshake never became one)


@pytest.mark.parametrize("dispatcher_class", [ThreadDispatcher, AsyncioDispatcher])
def test_a_proxy_of_the_environment_is_honoured(
    serve: Callable[..., RawServer],
    monkeypatch: pytest.MonkeyPatch,
    dispatcher_class: type[ThreadDispatcher | AsyncioDispatcher],
) -> None:
    proxy = serve(ok)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    config = TrackingConfig(url="http://matomo.invalid", batch_max_age=0.01)
    dispatcher = dispatcher_class(config)
    try:
        dispatcher.submit(Hit({"idsite": "1", "rec": "1", "url": "http://shop.test/"}, time.time()))
        assert dispatcher.flush(5)
    finally:
        dispatcher.close(1)
    assert proxy.requests[0].startswith(b"POST http://matomo.invalid/matomo.php HTTP/1.1")
