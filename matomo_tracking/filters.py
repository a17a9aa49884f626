"""Decide which requests become hits: path, method, agent, privacy and sampling filters
before the app runs; content type and status after it."""

from __future__ import annotations

import re

from matomo_tracking.bots import classify_user_agent, is_bot
from matomo_tracking.config import TrackingConfig
from matomo_tracking.request import RequestView, ResponseView

__all__ = ["Filters", "path_is_ignored"]


def path_is_ignored(path: str, prefixes: tuple[str, ...]) -> bool:
    """Segment-aware prefix match: ``/health`` matches ``/health`` and ``/health/x``,
    not ``/healthy``; ``/`` matches everything."""
    for prefix in prefixes:
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            return True
    return False


def _signal(value: str | None) -> bool:
    """Whether a privacy header (``DNT``, ``X-Do-Not-Track``, ``Sec-GPC``) says "1"; a
    repeated header arrives joined with commas, and any "1" in it counts."""
    if not value:
        return False
    return any(item.strip() == "1" for item in value.split(","))


class Filters:
    """The compiled filters of one configuration."""

    __slots__ = (
        "_agents",
        "_bots",
        "_dnt",
        "_every_path",
        "_exact_paths",
        "_gpc",
        "_html",
        "_methods",
        "_path_heads",
        "_paths",
        "_patterns",
        "_sample",
        "_statuses",
    )

    def __init__(self, config: TrackingConfig) -> None:
        self._paths = config.ignore_paths
        # path_is_ignored() as one set lookup and one startswith() of a tuple.
        self._every_path = "/" in self._paths
        self._exact_paths = frozenset(self._paths)
        self._path_heads = tuple(p + "/" for p in self._paths)
        self._patterns = (
            re.compile("|".join(f"(?:{p})" for p in config.ignore_patterns))
            if config.ignore_patterns
            else None
        )
        self._methods = config.ignore_methods
        self._agents = (
            re.compile("|".join(f"(?:{p})" for p in config.ignore_user_agents), re.IGNORECASE)
            if config.ignore_user_agents
            else None
        )
        self._bots = config.ignore_bots
        self._dnt = config.respect_dnt
        self._gpc = config.respect_gpc
        self._sample = config.sample_rate
        self._html = config.ignore_html
        self._statuses = config.ignore_status_codes

    def skip_path(self, method: str, path: str) -> bool:
        """The cheapest check, made before any view is built."""
        if (
            method in self._methods
            or self._every_path
            or path in self._exact_paths
            or path.startswith(self._path_heads)
        ):
            return True
        return self._patterns is not None and self._patterns.fullmatch(path) is not None

    def skip_request(self, request: RequestView, sample: float) -> str | None:
        """Why ``request`` is not tracked, or None. ``sample`` is a uniform draw in [0, 1)."""
        if self.skip_path(request.method, request.path):
            return "path"
        return self.skip_visitor(request, sample)

    def skip_visitor(self, request: RequestView, sample: float) -> str | None:
        """``skip_request`` without the path and method (checked already): why the visitor's
        request is not tracked (agent, bot, privacy signal, sampling), or None."""
        headers = request.headers
        if self._agents is not None or self._bots:
            agent = headers.get("user-agent", "")
            if self._agents is not None and self._agents.search(agent):
                return "user_agent"
            if self._bots is True and is_bot(agent):
                return "bot"
            if isinstance(self._bots, frozenset):
                bot = classify_user_agent(agent)
                if bot is not None and bot.category in self._bots:
                    return "bot"
        if self._dnt and (_signal(headers.get("dnt")) or _signal(headers.get("x-do-not-track"))):
            return "dnt"
        if self._gpc and _signal(headers.get("sec-gpc")):
            return "gpc"
        if self._sample < 1.0 and sample >= self._sample:
            return "sampled"
        return None

    def skip_response(self, response: ResponseView) -> str | None:
        """Why a request is not tracked once its response is known, or None."""
        if response.status in self._statuses:
            return "status"
        if self._html and response.content_type.split(";", 1)[0].strip().lower() == "text/html":
            return "html"
        return None
