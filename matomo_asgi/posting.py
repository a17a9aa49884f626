"""How the asyncio executor POSTs a batch: with ``lean_posting`` (h11), or, when you give an
``http_client`` or a proxy of the environment applies to the endpoint, with
``httpx.AsyncClient`` (``AsyncHttpPoster``): yours or clients made here per event loop, one
keep-alive connection each and one per batch in flight, reading at most the core's cap of
each answer and never following a redirect."""

from __future__ import annotations

import contextlib
import ssl
import urllib.request
from typing import Protocol

import httpx

from matomo_asgi.lean_posting import LeanAsyncPoster
from matomo_tracking.answers import Answer, AnswerBuffer, transport_error
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery_queue import Batch, Outcome
from matomo_tracking.env_proxy import proxy_applies
from matomo_tracking.wire import BULK_HEADERS

__all__ = ["AsyncHttpPoster", "AsyncPoster", "poster_for"]


class AsyncPoster(Protocol):
    """Performs the batches of one ``AsyncioDispatcher``; its connections belong to one event
    loop (``forget`` them when the worker moves to another)."""

    async def post(self, batch: Batch) -> Outcome:
        """POST ``batch`` within its timeout (never raising): the answer or how it failed."""

    def forget(self) -> None:
        """Drop the connections made on another loop."""

    async def close(self) -> None:
        """Close the connections made here."""


def poster_for(config: TrackingConfig, http_client: httpx.AsyncClient | None) -> AsyncPoster:
    """The lean poster (a quarter of httpx's CPU per POST), unless you give ``http_client``
    or a proxy of the environment applies to the endpoint (httpx honours them)."""
    proxies = urllib.request.getproxies_environment()
    if http_client is None and not proxy_applies(config.endpoint, proxies):
        return LeanAsyncPoster(config)
    return AsyncHttpPoster(config, http_client)


_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)


class AsyncHttpPoster:
    """POSTs batches for one ``AsyncioDispatcher``; its clients belong to one event loop
    (``forget`` them when the worker moves to another)."""

    def __init__(self, config: TrackingConfig, http_client: httpx.AsyncClient | None) -> None:
        self.config = config
        self._user_client = http_client
        self._tls: ssl.SSLContext | None = None
        self._clients: list[httpx.AsyncClient] = []

    async def post(self, batch: Batch) -> Outcome:
        """POST ``batch`` within its timeout: Matomo's answer or how the request failed."""
        config = self.config
        timeout = httpx.Timeout(batch.timeout, connect=min(config.connect_timeout, batch.timeout))
        client = self._take()
        try:
            request = client.build_request(
                "POST", config.endpoint, content=batch.body, headers=BULK_HEADERS, timeout=timeout
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            buffer = AnswerBuffer()
            try:  # at most the core's cap of the answer
                async for chunk in response.aiter_bytes():
                    if buffer.feed(chunk):
                        break
            finally:
                await response.aclose()
            return Answer.of(response.status_code, buffer.body, response.headers)
        except Exception as exc:
            return transport_error(exc)
        finally:
            if client is not self._user_client:
                self._clients.append(client)

    def _take(self) -> httpx.AsyncClient:
        if self._user_client is not None:
            return self._user_client
        if self._clients:
            return self._clients.pop()  # the one used last: its connection is the warmest
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return httpx.AsyncClient(follow_redirects=False, limits=_ONE_CONNECTION, verify=self._tls)

    def forget(self) -> None:
        """Drop the clients made on another loop (their connections belong to it)."""
        self._clients = []

    async def close(self) -> None:
        """Close the clients made here (yours stays open)."""
        clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # a client closed already, a dead loop
                await client.aclose()
