"""The thread executors' life in a process: each ``watch``ed one is closed when the process ends
(``atexit``; ``close_all`` from gunicorn's ``worker_exit`` hook or a ``multiprocessing``
child's exit) and told when the process forks, in the child (``after_fork``).

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

import atexit
import logging
import os
import sys
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Watched", "close_all", "close_at_child_exit", "forget", "live", "watch"]

logger = logging.getLogger("matomo_wsgi.dispatcher")


class Watched(Protocol):
    """An executor whose life follows its process's."""

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is left within ``timeout``; whether nothing was given up."""

    def after_fork(self) -> None:
        """In a forked child: start again without the parent's threads, queue and locks."""


#: Every live (not closed) thread executor of this process (thread and Celery dispatchers).
live: weakref.WeakSet[Watched] = weakref.WeakSet()


def watch(executor: Watched) -> None:
    """Close ``executor`` when this process ends, and tell it of forks."""
    live.add(executor)


def forget(executor: Watched) -> None:
    """``executor`` is closed: nothing more to do for it at exit."""
    live.discard(executor)


def _close_at_exit() -> None:
    try:
        close_all()
    except Exception:  # pragma: no cover - never fail the interpreter's exit
        logger.debug("matomo: closing at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    for executor in list(live):
        executor.after_fork()


# Once per process (the executors a process has are in ``live``): a live executor is referenced
# by its delivery threads, so the weak set keeps every one that has hits to deliver.
atexit.register(_close_at_exit)
if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
