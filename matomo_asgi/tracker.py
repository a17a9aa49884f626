"""``AsyncTracker``: the standalone tracker for asyncio code (jobs, webhooks, workers)."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import httpx

from matomo_asgi.dispatcher import AsyncioDispatcher
from matomo_tracking.config import TrackingConfig
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.flow import check_dispatcher
from matomo_tracking.tracker import BaseTracker, request_view_of

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from matomo_tracking.config import TrackingOptions

__all__ = ["AsyncTracker"]


class AsyncTracker(BaseTracker):
    """Track page views, events, goals, ecommerce and more from asyncio code.

    ``AsyncTracker(url=..., site_id=..., token_auth=...)`` takes the middleware's keyword
    arguments. Each ``track_*`` call builds a hit and queues it without blocking (returns
    False if it was dropped); delivery runs on the event loop in bulk batches. Call
    ``await tracker.aclose()`` (or use ``async with``) before the loop ends.
    """

    _dispatcher: Dispatcher  # always one here (the base class allows None)

    def __init__(
        self,
        *,
        http_client: httpx.AsyncClient | None = None,
        dispatcher: Dispatcher | None = None,
        request: object = None,
        **options: Unpack[TrackingOptions],
    ) -> None:
        config = TrackingConfig.from_kwargs(options)
        check_dispatcher(dispatcher, http_client)
        if request is not None:
            request_view_of(request)  # an unsupported request is refused here, not later
        if dispatcher is None:
            dispatcher = AsyncioDispatcher(config, http_client=http_client)
        super().__init__(config, clock=time.time, rng=random.Random(), dispatcher=dispatcher)
        if request is not None:
            self.set(request=request)

    async def aflush(self, timeout: float | None = None) -> bool:
        """Wait until every queued hit is delivered (or ``timeout`` passes)."""
        return await self._dispatcher.aflush(timeout)

    async def aclose(self, timeout: float | None = None) -> bool:
        """Deliver what is queued (within ``timeout``, default ``shutdown_timeout``) and stop."""
        return await self._dispatcher.aclose(timeout)

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
