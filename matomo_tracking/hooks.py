"""The user's hooks (``site_id``, ``action_name``, ``user_id``, ``redact_query`` callables): a
hook that raises never breaks a request; it is logged once per hook and its answer ignored."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

__all__ = ["Hooks"]

logger = logging.getLogger("matomo_tracking")

A = TypeVar("A")
T = TypeVar("T")


class Hooks:
    """Runs user hooks for one builder, remembering which ones already failed."""

    __slots__ = ("_failed",)

    def __init__(self) -> None:
        self._failed: set[str] = set()

    def call(self, name: str, hook: Callable[[A], T], argument: A) -> T | None:
        """``hook(argument)``; if it raises, log once per hook and return None."""
        try:
            return hook(argument)
        except Exception:
            self.failed(name, "it is ignored")
            return None

    def failed(self, name: str, consequence: str) -> None:
        """Log (once per hook, with the traceback being handled) that ``name`` raised."""
        if name not in self._failed:
            self._failed.add(name)
            logger.warning("matomo: the %s hook raised; %s", name, consequence, exc_info=True)
