"""Closing the thread executors of a process when it ends: ``close_all`` (gunicorn's
``worker_exit`` hook, a ``multiprocessing`` child's exit) closes every live one.

Why ``multiprocessing`` children need their own step:

``multiprocessing`` ends the processes it starts (granian's workers, a ``Pool``'s workers) with
``os._exit()`` as soon as their target returns: the interpreter is not finalised, so ``atexit``
handlers never run and daemon threads die with whatever they still hold. Under
``granian --interface wsgi`` that was every hit younger than ``batch_max_age`` at SIGTERM.
What does run there is ``multiprocessing``'s own exit step (``util._exit_function()`` in
``Process._bootstrap``), which calls the finalizers registered with an exit priority: in such
a child the dispatchers are closed from there too (closing twice is harmless).
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Closable", "close_all", "close_at_child_exit", "live"]


class Closable(Protocol):
    """An executor ``close_all`` closes."""

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left within ``timeout``; whether nothing was given up."""


#: Every live thread executor of this process (thread and Celery dispatchers).
live: weakref.WeakSet[Closable] = weakref.WeakSet()


def close_all(timeout: float | None = None) -> bool:
    """Close every thread executor (thread and Celery dispatchers) of this process, each
    within ``timeout`` (default: its own ``shutdown_timeout``); whether all finished in time."""
    done = True
    for executor in list(live):
        done = executor.close(timeout) and done
    return done


_registered_in: set[int] = set()  # the pids this process registered the finalizer in


def close_at_child_exit(close: Callable[[], object]) -> None:
    """Have ``close()`` called when this process ends, if it is a ``multiprocessing`` child
    (once per process; elsewhere ``atexit`` does it). Call it from the thread that starts
    delivery in this process."""
    module = sys.modules.get("multiprocessing")
    if module is None:  # never imported here: this process is no multiprocessing child
        return
    pid = os.getpid()
    if pid in _registered_in or module.parent_process() is None:
        return
    _registered_in.add(pid)
    from multiprocessing.util import Finalize

    Finalize(None, close, exitpriority=100)
