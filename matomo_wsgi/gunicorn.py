"""gunicorn server hooks. In ``gunicorn.conf.py``::

    from matomo_wsgi.gunicorn import worker_exit

gunicorn calls ``worker_exit`` in the worker process as it exits (SIGTERM, ``--max-requests``
restarts, reloads): every ``ThreadDispatcher`` of the worker delivers its queued hits within
its ``shutdown_timeout`` before the process ends. The dispatchers also close at interpreter
exit (``atexit``), which covers a graceful worker exit on its own; the hook makes the flush
explicit and independent of how the worker ends, as long as gunicorn's ``graceful_timeout``
(default 30 s) leaves the time.
"""

from __future__ import annotations

from matomo_wsgi.dispatcher import close_all

__all__ = ["worker_exit"]


def worker_exit(server: object, worker: object) -> None:
    """gunicorn's ``worker_exit(server, worker)`` hook: deliver this worker's queued hits."""
    close_all()
