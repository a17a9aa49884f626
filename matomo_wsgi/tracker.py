"""``Tracker``: the standalone tracker for code outside requests (jobs, CLIs, Celery tasks)."""

from __future__ import annotations

import random
import time
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from matomo_tracking.config import TrackingConfig
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.flow import check_dispatcher
from matomo_tracking.tracker import BaseTracker, request_view_of
from matomo_wsgi.dispatcher import ThreadDispatcher

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from matomo_tracking.config import TrackingOptions

__all__ = ["Tracker"]


class Tracker(BaseTracker):
    """Track page views, events, goals, ecommerce and more from any Python code.

    ``Tracker(url=..., site_id=..., token_auth=...)`` takes the middleware's keyword arguments;
    ``request=`` clones a real request for every call (the same as ``set(request=...)``).
    Each ``track_*`` call builds a hit and queues it without blocking (returns False if it
    was dropped); a background thread delivers in bulk batches. With ``sync_mode=True`` each
    call sends inline instead (scripts, serverless). ``close()`` (or ``with``) delivers what
    is left; it also runs at interpreter exit.
    """

    _dispatcher: Dispatcher  # always one here (the base class allows None)

    def __init__(
        self,
        *,
        http_client: httpx.Client | None = None,
        dispatcher: Dispatcher | None = None,
        request: object = None,
        **options: Unpack[TrackingOptions],
    ) -> None:
        config = TrackingConfig.from_kwargs(options)
        check_dispatcher(dispatcher, http_client)
        if request is not None:
            request_view_of(request)  # an unsupported request is refused here, not later
        if dispatcher is None:
            dispatcher = ThreadDispatcher(config, http_client=http_client)
        super().__init__(config, clock=time.time, rng=random.Random(), dispatcher=dispatcher)
        if request is not None:
            self.set(request=request)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued hit is delivered (or ``timeout`` passes)."""
        return self._dispatcher.flush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is queued (within ``timeout``, default ``shutdown_timeout``) and stop."""
        return self._dispatcher.close(timeout)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
