"""Who a hit belongs to: the visitor (``_id``, ``cid``, ``cip``), the user (``uid``) and the
page view (``pv_id``), per the Tracking API's rules with and without ``token_auth``."""

from __future__ import annotations

import time
from typing import Protocol

from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.fields import MAX_USER_ID_CHARS, clean_text
from matomo_tracking.hooks import Hooks
from matomo_tracking.proxies import anonymize_ip
from matomo_tracking.request import RequestView
from matomo_tracking.visitor import pk_visitor_id, salted_visitor_id

__all__ = ["Identity", "RandomSource", "new_page_view_id"]

_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Keyed visitor ids remembered per builder (an HMAC costs 1.5 µs more, bench/micro.py "tricks");
# agents longer than this are not remembered, so that huge headers cannot fill the memory.
_VISITOR_CACHE_SIZE = 4096
_VISITOR_CACHE_MAX_UA = 512


class RandomSource(Protocol):
    """What the core needs of a random generator (``random.Random`` fits)."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def getrandbits(self, k: int, /) -> int:
        """An int of ``k`` random bits."""
        ...


def new_page_view_id(rng: RandomSource) -> str:
    """A fresh 6-character ``[0-9a-zA-Z]`` page-view id."""
    n = rng.getrandbits(36)
    text = ""
    for _ in range(6):  # least significant digit first
        text += _BASE62[n % 62]
        n //= 62
    return text


class Identity:
    """Sets a page view's visitor and user parameters for one configuration.

    ``salt`` keys the per-visitor ids sent when there is no token (so no ``cip``).
    """

    __slots__ = ("_config", "_day", "_hooks", "_salt", "_visitors")

    def __init__(self, config: TrackingConfig, salt: bytes, hooks: Hooks) -> None:
        self._config = config
        self._salt = salt
        self._hooks = hooks
        self._day: tuple[int, str] = (-1, "")
        self._visitors: dict[tuple[str, str, int, str], str] = {}

    def assign(
        self,
        params: dict[str, str],
        request: RequestView,
        client_ip: str | None,
        context: TrackingContext | None,
        site: int,
        ua: str,
        now: float,
    ) -> None:
        """Add ``cip``, ``_id``, ``cid`` and ``uid`` to ``params`` as the request says."""
        config = self._config
        if client_ip is not None and config.anonymize_ip:
            client_ip = anonymize_ip(client_ip, config.anonymize_ip)
        if config.token_auth is not None and client_ip is not None:
            params["cip"] = client_ip
        forced = context.visitor_id if context is not None else None
        self.visitor_ids(params, request, client_ip, site, ua, now, forced=forced)
        user_id = context.user_id if context is not None else None
        if user_id is None and config.user_id is not None:
            hooked = self._hooks.call("user_id", config.user_id, request)
            user_id = None if hooked is None else str(hooked)
        user_id = clean_text(user_id, MAX_USER_ID_CHARS) if user_id else None
        if user_id:  # a blank id would read as "no user" to Matomo anyway
            params["uid"] = user_id

    def visitor_ids(
        self,
        params: dict[str, str],
        request: RequestView,
        client_ip: str | None,
        site: int,
        ua: str,
        now: float,
        *,
        forced: str | None = None,
    ) -> None:
        """Add the visitor id parameters (``_id``/``cid``) of ``request``'s hits to ``params``:
        a ``forced`` id, the JavaScript tracker's ``_pk_id`` cookie or (without a token, so
        without ``cip``) the keyed id of ``client_ip`` (already anonymised; None: no keyed id)
        and ``ua`` (the cleaned User-Agent header)."""
        cookie = request.headers.get("cookie", "")
        pk_id = pk_visitor_id(cookie, site) if cookie else None
        if self._config.token_auth is not None:
            if forced is not None:
                params["cid"] = forced
            elif pk_id is not None:
                params["_id"] = pk_id
            return
        # Without cip every visitor shares the server's IP; a per-visitor id keeps visits
        # apart. A JavaScript visitor id keeps server and browser hits together.
        if pk_id is not None:
            params["_id"] = pk_id
        if forced is not None:
            params["cid"] = forced
        elif pk_id is not None:
            params["cid"] = pk_id
        elif client_ip is not None:
            params["cid"] = self._salted_visitor_id(client_ip, ua, site, self._today(now))

    def _today(self, now: float) -> str:
        day = int(now // 86400)
        cached = self._day
        if cached[0] == day:
            return cached[1]
        text = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
        self._day = (day, text)
        self._visitors.clear()  # keyed by day: yesterday's ids (and addresses) are not kept
        return text

    def _salted_visitor_id(self, client_ip: str, ua: str, site: int, day: str) -> str:
        """``salted_visitor_id`` with this builder's salt, remembered for repeat visitors."""
        key = (client_ip, ua, site, day)
        visitor = self._visitors.get(key)
        if visitor is None:
            visitor = salted_visitor_id(self._salt, client_ip, ua, site, day)
            if len(ua) <= _VISITOR_CACHE_MAX_UA:
                if len(self._visitors) >= _VISITOR_CACHE_SIZE:
                    self._visitors.clear()  # atomic, unlike evicting one entry across threads
                self._visitors[key] = visitor
        return visitor
