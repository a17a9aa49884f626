"""Delivery through Celery, for fleets: web processes batch hits exactly as the thread
dispatcher does and hand each batch to a Celery task; Celery workers deliver them with the
core's policy, and while Matomo is down a batch waits in the broker (Celery's retry
countdown), not in the memory of a web process (a worker's side of it is in
``matomo_wsgi._celery_worker``).

Web processes and workers register the task with the same options, so ``token_auth`` is
read from each process's own configuration and never travels through the broker (the
messages carry the hits and their creation times only)::

    # tasks.py, imported by the web app and by the worker
    from celery import Celery
    from matomo_wsgi.celery import register_delivery_task

    app = Celery("shop", broker="redis://127.0.0.1:6379/0")
    matomo = register_delivery_task(
        app, url="https://matomo.example.org", token_auth=os.environ["MATOMO_TOKEN"]
    )

    # the web app (WSGI or ASGI middleware alike)
    from matomo_wsgi.celery import CeleryDispatcher
    app = MatomoMiddleware(app, url="https://matomo.example.org", site_id=1,
                           dispatcher=CeleryDispatcher(matomo))

    # the worker
    celery -A tasks worker
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from matomo_tracking.answers import TransportError
from matomo_tracking.config import TrackingConfig
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.delivery_queue import HANDED_OVER, Batch, Outcome
from matomo_wsgi._celery_worker import WorkerState, pack_batches, unpack_batches
from matomo_wsgi.executor import ThreadExecutor

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from matomo_tracking.config import TrackingOptions

__all__ = [
    "DEFAULT_TASK_NAME",
    "BrokerPoster",
    "CeleryDispatcher",
    "DeliveryTask",
    "pack_batches",
    "register_delivery_task",
    "unpack_batches",
]

#: The name the delivery task is registered under unless ``name=`` says otherwise.
DEFAULT_TASK_NAME = "matomo_wsgi.deliver"


class _CeleryApp(Protocol):
    """What is used of a ``celery.Celery`` app (Celery ships no type information)."""

    def task(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., None]], Any]: ...


@dataclass(frozen=True, slots=True, eq=False)
class DeliveryTask:
    """What ``register_delivery_task`` returns: the registered Celery ``task``, its ``name``
    and the delivery ``config`` it was registered with. ``stats()`` tells what this process's
    runs of the task delivered (in a worker; a web process never runs it)."""

    task: Any
    name: str
    config: TrackingConfig
    _state: WorkerState

    def stats(self) -> DispatchStats:
        """What this process's runs of the task sent, retried and dropped."""
        with self._state.lock:
            return self._state.stats.snapshot()


def register_delivery_task(
    celery_app: _CeleryApp,
    *,
    name: str = DEFAULT_TASK_NAME,
    http_client: httpx.Client | None = None,
    **options: Unpack[TrackingOptions],
) -> DeliveryTask:
    """Register the task that delivers batches of hits on ``celery_app``; call it with the same
    options in the web processes and in the workers (``url``, ``token_auth``, ``timeout``,
    ``backoff_base``, ``backoff_max``, ``max_hit_age`` and the batch and queue sizes are used;
    the others are accepted so the middleware's options can be passed as they are).

    The task posts each batch with the core's policy. Where the policy says to wait (Matomo
    down, 5xx, 429...) it calls ``self.retry(countdown=...)``: the rest of the batch goes back
    to the broker with its attempt count, and a worker takes it up when the backoff is over.
    It retries without limit; hits older than ``max_hit_age`` are dropped when they come up
    (unless a token is configured). ``acks_late`` is set: a worker that dies mid-delivery
    leaves the batch to another one (which may then send some hits twice).
    ``http_client``: an ``httpx.Client`` for the workers (else they post with ``http.client``,
    or with httpx clients made per process when a proxy of the environment applies).
    """
    config = TrackingConfig.from_kwargs(options)
    if http_client is not None and not isinstance(http_client, httpx.Client):
        raise TypeError(f"http_client must be an httpx.Client, got {type(http_client).__name__}")
    state = WorkerState(config, http_client)

    def deliver(task: Any, batches: object, attempt: int = 0) -> None:
        """Deliver batches of Matomo hits (registered by ``matomo_wsgi.celery``)."""
        later = state.deliver(batches, attempt)
        if later is not None:
            packed, tries, seconds = later
            raise task.retry(args=(packed,), kwargs={"attempt": tries}, countdown=seconds)

    task = celery_app.task(
        bind=True, name=name, max_retries=None, acks_late=True, ignore_result=True
    )(deliver)
    return DeliveryTask(task=task, name=name, config=config, _state=state)


class BrokerPoster:
    """Hands each batch to the delivery task (``apply_async``) for a ``ThreadExecutor``: the
    hits and their creation times only, never the token."""

    def __init__(self, delivery_task: DeliveryTask) -> None:
        self.delivery_task = delivery_task

    def post(self, batch: Batch) -> Outcome:
        """Publish ``batch``; ``HANDED_OVER``, or how publishing failed (retried by the queue
        with the backoff settings, as a refused connection)."""
        try:
            self.delivery_task.task.apply_async(args=(pack_batches([batch.hits]),), retry=False)
        except Exception as exc:
            return TransportError.CONNECT, f"{type(exc).__name__}: {exc}"
        return HANDED_OVER

    def reset(self) -> None:
        """Nothing to forget: Celery's producer pool handles forks."""

    def close(self) -> None:
        """Nothing to release: the Celery app is yours."""


class CeleryDispatcher(ThreadExecutor):
    """A dispatcher for either middleware (``dispatcher=``) that hands batches to Celery.

    The core's queue runs as in ``ThreadDispatcher`` (the same caps, batch sizes,
    ``flush``/``close`` deadlines, fork and exit handling), on a ``ThreadExecutor`` whose one
    sender hands each batch to the delivery task with ``apply_async`` (one hand-over at a
    time: the workers deliver in parallel), so ``submit`` never waits for the broker (nor
    blocks an event loop). When the broker cannot be reached, the hand-over is retried with
    the backoff settings while new hits fill the queue up to its caps.

    ``stats()`` describes the hand-over: ``sent`` and ``batches`` count hits and batches
    handed to the broker; what Matomo answered is logged by the workers (and in
    ``DeliveryTask.stats()`` there).
    """

    def __init__(
        self, delivery_task: DeliveryTask, *, config: TrackingConfig | None = None
    ) -> None:
        if not isinstance(delivery_task, DeliveryTask):
            raise TypeError(
                "delivery_task must be what register_delivery_task() returned, got "
                f"{type(delivery_task).__name__}"
            )
        self.delivery_task = delivery_task
        super().__init__(
            config if config is not None else delivery_task.config,
            BrokerPoster(delivery_task),
            concurrency=1,
            target="the Celery broker",
        )

    def __repr__(self) -> str:
        return f"CeleryDispatcher(task={self.delivery_task.name!r}, closed={self.closed})"
