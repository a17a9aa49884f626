"""The thread dispatcher: the core's ``DeliveryQueue`` run by a ``ThreadExecutor`` whose sender
threads POST each batch over one keep-alive connection (reused from batch to batch): with
``http.client`` (``poster.LeanPoster``), or an ``httpx.Client`` when you give one or a proxy of
the environment applies; reading at most the core's fixed cap of each answer, never following a
redirect.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.request

import httpx

from matomo_tracking.answers import Answer, AnswerBuffer, TransportError, transport_error
from matomo_tracking.config import TrackingConfig, masked_url
from matomo_tracking.delivery_queue import Batch, Outcome
from matomo_tracking.env_proxy import proxy_applies
from matomo_tracking.wire import BULK_HEADERS
from matomo_wsgi.executor import ThreadExecutor, close_all
from matomo_wsgi.poster import LeanPoster

__all__ = ["HttpPoster", "ThreadDispatcher", "close_all", "poster_for"]

logger = logging.getLogger(__name__)

_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


class HttpPoster:
    """POSTs batches for a ``ThreadExecutor`` with httpx clients: yours (``http_client``), or
    clients made here, one connection each and one per batch in flight at most."""

    def __init__(self, config: TrackingConfig, http_client: httpx.Client | None = None) -> None:
        self.config = config
        self._user_client = http_client
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the clients (after a fork they share the parent's connections)."""
        self._lock = threading.Lock()
        self._clients: list[httpx.Client] = []
        self._closed = False
        self._tls: ssl.SSLContext | None = None

    def post(self, batch: Batch) -> Outcome:
        """POST ``batch`` (within its timeout)."""
        return self.post_body(batch.body, batch.timeout)

    def post_body(self, body: bytes, read_timeout: float) -> Answer | tuple[TransportError, str]:
        """POST one bulk body; Matomo's answer (at most ``MAX_ANSWER_BYTES`` of it) or how the
        request failed (classified by the core)."""
        config = self.config
        timeout = httpx.Timeout(read_timeout, connect=min(config.connect_timeout, read_timeout))
        client = self._take()
        try:
            with client.stream(
                "POST",
                config.endpoint,
                content=body,
                headers=BULK_HEADERS,
                follow_redirects=False,
                timeout=timeout,
            ) as response:
                buffer = AnswerBuffer()
                for chunk in response.iter_bytes():
                    if buffer.feed(chunk):
                        break
                return Answer.of(response.status_code, buffer.body, response.headers)
        except Exception as exc:
            return transport_error(exc)
        finally:
            self._give(client)

    def _take(self) -> httpx.Client:
        if self._user_client is not None:
            return self._user_client
        with self._lock:
            if self._clients:
                return self._clients.pop()  # the one used last: its connection is the warmest
            tls = self._tls
        if tls is None:  # made once (it loads the CA certificates), outside the lock
            tls = httpx.create_ssl_context()
            with self._lock:
                tls = self._tls = self._tls or tls
        return httpx.Client(follow_redirects=False, limits=_ONE_CONNECTION, verify=tls)

    def _give(self, client: httpx.Client) -> None:
        if client is self._user_client:
            return
        with self._lock:
            if not self._closed:
                self._clients.append(client)
                return
        _close_quietly(client)  # close() came while it was posting

    def close(self) -> None:
        """Close the clients made here (yours stays open)."""
        with self._lock:
            clients, self._clients = self._clients, []
            self._closed = True
        for client in clients:
            _close_quietly(client)


def _close_quietly(client: httpx.Client) -> None:
    try:
        client.close()
    except Exception:  # pragma: no cover
        logger.debug("matomo: closing an HTTP client failed", exc_info=True)


def poster_for(config: TrackingConfig, http_client: httpx.Client | None) -> LeanPoster | HttpPoster:
    """The lean poster (a third of httpx's CPU per POST), unless you give ``http_client`` or
    a proxy of the environment applies to the endpoint (httpx honours them)."""
    proxies = urllib.request.getproxies_environment()
    if http_client is None and not proxy_applies(config.endpoint, proxies):
        return LeanPoster(config)
    return HttpPoster(config, http_client)


class ThreadDispatcher(ThreadExecutor):
    """Delivers hits to Matomo from background threads of each process.

    ``submit(hit)`` never blocks and never raises: it returns False when the hit is dropped
    (queue full, dispatcher closed), counted in ``stats().dropped``. ``flush(timeout)`` waits
    for what was submitted so far; ``close(timeout)`` delivers what is left within the
    deadline, counts the rest as dropped (``shutdown``) and stops the threads. Both run at
    interpreter exit (``atexit``) with ``config.shutdown_timeout``.

    The core's ``DeliveryQueue`` decides everything: lanes by visitor, one batch at a time
    while the queue is shallow, one more lane per answer while a backlog waits (up to
    ``max_concurrent_batches`` sender threads), one request at a time to a failing Matomo
    with a one-hit probe every ``probe_interval``. With ``config.sync_mode`` every ``submit``
    delivers inline in the caller's thread, for at most ``config.timeout`` seconds.

    ``http_client``: your own ``httpx.Client`` (TLS, proxies; allow ``max_concurrent_batches``
    connections); else clients are made per process, one connection each. Redirects are
    never followed, whatever the client's setting, so the token never travels elsewhere.
    """

    def __init__(self, config: TrackingConfig, *, http_client: httpx.Client | None = None) -> None:
        if not isinstance(config, TrackingConfig):
            raise TypeError(f"config must be a TrackingConfig, got {type(config).__name__}")
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(
                f"http_client must be an httpx.Client, got {type(http_client).__name__}"
            )
        super().__init__(config, poster_for(config, http_client))

    def __repr__(self) -> str:
        endpoint = masked_url(self.config.endpoint)
        return f"ThreadDispatcher(endpoint={endpoint!r}, closed={self.closed})"
