"""Serve a ``Collector`` on 127.0.0.1 in a background thread (standard library only)."""

from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from matomo_tracking.testing.collector import Collector

__all__ = ["CollectorServer"]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


class CollectorServer:
    """A collector listening on ``127.0.0.1:port`` (port 0 picks a free one).

    ``refuse()`` closes the listening socket so connections are refused (an outage);
    ``accept()`` listens again on the same port. Use as a context manager, or ``start()``
    and ``stop()``.
    """

    def __init__(
        self, collector: Collector | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.collector = collector if collector is not None else Collector()
        self.host = host
        self.port = port
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the URL to configure as Matomo's."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The tracking endpoint, ``<base_url>/matomo.php``."""
        return self.base_url + "/matomo.php"

    def start(self) -> CollectorServer:
        """Listen and serve in a daemon thread."""
        server = make_server(
            self.host,
            self.port,
            self.collector.wsgi,
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.collector.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def refuse(self) -> None:
        """Play an outage: connections to the port are refused until ``accept()``."""
        self.stop()

    def accept(self) -> None:
        """End an outage: listen again on the same port."""
        if self._server is None:
            self.start()

    def __enter__(self) -> CollectorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
