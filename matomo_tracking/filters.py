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


class Filters:
    """The compiled filters of one configuration."""

    __slots__ = (
        "_agents",
        "_bots",
        "_gpc",
        "_html",
        "_dnt",
        "_methods",
        "_paths",
        "_patterns",
        "_sample",
        "_statuses",
    )

    def __init__(self, config: TrackingConfig) -> None:
        self._paths = config.ignore_paths
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
        if method in self._methods or path_is_ignored(path, self._paths):
            return True
        return self._patterns is not None and self._patterns.fullmatch(path) is not None

    def skip_request(self, request: RequestView, sample: float) -> str | None:
        """Why ``request`` is not tracked, or None. ``sample`` is a uniform draw in [0, 1)."""
        if self.skip_path(request.method, request.path):
            return "path"
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
        if self._dnt and headers.get("dnt", "").strip() == "1":
            return "dnt"
        if self._gpc and headers.get("sec-gpc", "").strip() == "1":
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
