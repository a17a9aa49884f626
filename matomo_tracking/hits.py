"""From a request and its response to Tracking API hits (a page view plus the hits a handler
added), every parameter per the Matomo Tracking API reference."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Protocol, TypeVar
from urllib.parse import unquote_plus

from matomo_tracking.actions import custom_variables_json
from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.fields import (
    MAX_ACTION_NAME_BYTES,
    MAX_DIMENSION_CHARS,
    MAX_HEADER_CHARS,
    MAX_PF_MS,
    MAX_REFERRER_CHARS,
    MAX_URL_BYTES,
    MAX_USER_ID_CHARS,
    clean_text,
    truncate_bytes,
    truncate_chars,
    truncate_url,
)
from matomo_tracking.filters import Filters
from matomo_tracking.proxies import Origin, TrustedProxies, anonymize_ip
from matomo_tracking.request import RequestView, ResponseView
from matomo_tracking.visitor import pk_visitor_id, salted_visitor_id

__all__ = ["CLIENT_HINT_HEADERS", "Hit", "HitBuilder", "RandomSource"]

logger = logging.getLogger("matomo_tracking")

#: Request headers copied into ``uadata`` (header-style client hints, read by Matomo >= 4.12).
CLIENT_HINT_HEADERS = (
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-ch-ua-platform-version",
    "sec-ch-ua-model",
    "sec-ch-ua-arch",
    "sec-ch-ua-bitness",
    "sec-ch-ua-full-version",
    "sec-ch-ua-full-version-list",
    "sec-ch-ua-form-factors",
    "x-requested-with",
)
_BASE62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SHARED = ("idsite", "rec", "apiv", "url", "ua", "lang", "uadata", "cip", "_id", "cid", "uid")
_SHARED_BOT = ("bots", "recMode", "source")
_SHARED_KEYS = (*_SHARED, *_SHARED_BOT, "pv_id")
# ``uadata`` is a JSON object of strings: written as json.dumps(ensure_ascii=False,
# separators=(",", ":")) writes it, without building an encoder per request.
_HINT_KEYS = tuple((name, encode_basestring(name) + ":") for name in CLIENT_HINT_HEADERS)
# Keyed visitor ids remembered per builder (an HMAC per request is the core's dearest step);
# agents longer than this are not remembered, so that huge headers cannot fill the memory.
_VISITOR_CACHE_SIZE = 4096
_VISITOR_CACHE_MAX_UA = 512
# uadata strings remembered per builder, by the raw hint headers (bounded like the above).
_HINTS_CACHE_SIZE = 1024
_HINTS_CACHE_MAX_CHARS = 1024

T = TypeVar("T")


class RandomSource(Protocol):
    """What the core needs of a random generator (``random.Random`` fits)."""

    def random(self) -> float: ...

    def getrandbits(self, k: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class Hit:
    """One Tracking API request: its parameters (all strings) and when it happened
    (Unix seconds), from which ``cdo`` is computed when it is sent."""

    params: Mapping[str, str]
    created: float


def new_page_view_id(rng: RandomSource) -> str:
    """A fresh 6-character ``[0-9a-zA-Z]`` page-view id."""
    n = rng.getrandbits(36)
    digits = _BASE62  # least significant digit first
    return (
        digits[n % 62]
        + digits[n // 62 % 62]
        + digits[n // 3844 % 62]
        + digits[n // 238_328 % 62]
        + digits[n // 14_776_336 % 62]
        + digits[n // 916_132_832 % 62]
    )


def redact_query(
    query: str, names: frozenset[str], redacts: Callable[[str], bool] | None = None
) -> str:
    """``query`` with ``REDACTED`` as the value of every parameter whose decoded, trimmed name
    is in ``names`` once lower-cased, or for which ``redacts(decoded name)`` is true; every other
    byte (the redacted parameters' names included) stays exactly as sent."""
    if not query or not (names or redacts):
        return query
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        raw, sep, _ = part.partition("=")
        if not sep:
            continue
        name = unquote_plus(raw) if "%" in raw or "+" in raw else raw
        name = name.strip()
        if name.lower() in names or (redacts is not None and redacts(name)):
            parts[i] = raw + "=REDACTED"
            changed = True
    return "&".join(parts) if changed else query


def redact_url(
    url: str, names: frozenset[str], redacts: Callable[[str], bool] | None = None
) -> str:
    """``url`` with its query redacted as by ``redact_query``, and its fragment too (a fragment
    can carry parameters: ``#access_token=...``, ``#/route?token=...``)."""
    if "?" not in url and "#" not in url:
        return url
    base, hash_mark, fragment = url.partition("#")
    path, question_mark, query = base.partition("?")
    if question_mark:
        query = redact_query(query, names, redacts)
    if hash_mark:
        route, inner_mark, inner = fragment.partition("?")
        if inner_mark:
            fragment = route + inner_mark + redact_query(inner, names, redacts)
        else:
            fragment = redact_query(fragment, names, redacts)
    return path + question_mark + query + hash_mark + fragment


class HitBuilder:
    """Turns (request, response, context) into hits for one configuration.

    ``salt`` keys the per-visitor ids sent when there is no token (so no ``cip``); pass the
    configured ``visitor_salt`` or, without one, random bytes made once per process.
    """

    __slots__ = (
        "_base_prefix",
        "_day",
        "_failed_hooks",
        "_has_dimensions",
        "_hints",
        "_response_filters",
        "_salt",
        "_site",
        "_visitors",
        "config",
        "filters",
        "proxies",
    )

    def __init__(self, config: TrackingConfig, *, salt: bytes) -> None:
        self.config = config
        self.filters = Filters(config)
        self.proxies = TrustedProxies(config.trusted_proxies)
        self._salt = salt
        self._day: tuple[int, str] = (-1, "")
        self._failed_hooks: set[str] = set()
        self._visitors: dict[tuple[str, str, int, str], str] = {}
        self._hints: dict[tuple[str | None, ...], str] = {}
        # Derived once: what every request would otherwise recompute.
        self._base_prefix = config.base_url.rstrip("/") if config.base_url is not None else None
        self._site = config.site_id if isinstance(config.site_id, int) else None
        self._response_filters = bool(config.ignore_status_codes) or config.ignore_html
        self._has_dimensions = bool(
            config.dimensions
            or config.status_dimension is not None
            or config.method_dimension is not None
            or config.bytes_dimension is not None
        )

    @classmethod
    def for_config(cls, config: TrackingConfig, *, random_salt: bytes) -> HitBuilder:
        """A builder keyed with ``config.visitor_salt``, or with ``random_salt`` (made once per
        process by the caller) and a warning when visitor ids matter and no salt is set."""
        if config.visitor_salt is not None:
            return cls(config, salt=config.visitor_salt.encode("utf-8"))
        if config.token_auth is None:
            logger.warning(
                "matomo: no visitor_salt configured; visitor ids (cid) use a random salt for this "
                "process, so one visitor counts as several across processes and restarts"
            )
        return cls(config, salt=random_salt)

    def new_context(self) -> TrackingContext:
        """A fresh per-request context."""
        return TrackingContext(max_custom_variables=self.config.max_custom_variables)

    def call_hook(
        self, name: str, hook: Callable[[RequestView], T], request: RequestView
    ) -> T | None:
        """Run a user hook; if it raises, log once per hook and return None."""
        try:
            return hook(request)
        except Exception:
            if name not in self._failed_hooks:
                self._failed_hooks.add(name)
                logger.warning("matomo: the %s hook raised; it is ignored", name, exc_info=True)
            return None

    def site_id(self, request: RequestView) -> int | None:
        """The site id for ``request`` (from a callable when configured), or None."""
        site = self.config.site_id
        if isinstance(site, int):
            return site
        value = self.call_hook("site_id", site, request)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return None

    def origin(self, request: RequestView) -> Origin:
        """Client IP, scheme and host after proxy resolution and host pinning."""
        origin = self.proxies.resolve(request)
        config = self.config
        if config.base_url is not None:
            return Origin(origin.client_ip, "", "")
        if config.allowed_hosts and not _host_allowed(origin.host, config.allowed_hosts):
            return Origin(origin.client_ip, origin.scheme, config.allowed_hosts[0].lstrip("*."))
        return origin

    def redacts(self, name: str) -> bool:
        """Whether the ``redact_query`` hook redacts parameter ``name``; True if it raises
        (a value that cannot be judged is not sent), logged once."""
        hook = self.config.redact_query
        if hook is None:
            return False
        try:
            return bool(hook(name))
        except Exception:
            if "redact_query" not in self._failed_hooks:
                self._failed_hooks.add("redact_query")
                logger.warning(
                    "matomo: the redact_query hook raised; the parameters it was asked about "
                    "are redacted",
                    exc_info=True,
                )
            return True

    def redact_url(self, url: str) -> str:
        """``url`` with the configured query parameters redacted (query and fragment)."""
        hook = self.redacts if self.config.redact_query is not None else None
        return redact_url(url, self.config.redact_query_params, hook)

    def page_url(self, request: RequestView, origin: Origin) -> str:
        """The absolute URL the client asked for (query redacted, cut to 1024 bytes)."""
        hook = self.redacts if self.config.redact_query is not None else None
        query = redact_query(request.query_string, self.config.redact_query_params, hook)
        prefix = self._base_prefix
        if prefix is None:
            prefix = f"{origin.scheme}://{origin.host.lower()}"
        url = prefix + request.url_path + ("?" + query if query else "")
        return truncate_url(url, MAX_URL_BYTES)

    def _today(self, now: float) -> str:
        day = int(now // 86400)
        cached = self._day
        if cached[0] == day:
            return cached[1]
        text = time.strftime("%Y-%m-%d", time.gmtime(day * 86400))
        self._day = (day, text)
        self._visitors.clear()  # keyed by day: yesterday's ids (and addresses) are not kept
        return text

    def _uadata(self, headers: Mapping[str, str]) -> str | None:
        """``_client_hints(headers)``, remembered: hints repeat across the visitors of one
        browser version."""
        if "sec-ch-ua" not in headers and "x-requested-with" not in headers:
            return None
        key = tuple(map(headers.get, CLIENT_HINT_HEADERS))
        uadata = self._hints.get(key)
        if uadata is None:
            uadata = _client_hints(headers)
            if sum(map(len, filter(None, key))) <= _HINTS_CACHE_MAX_CHARS:
                if len(self._hints) >= _HINTS_CACHE_SIZE:
                    self._hints.clear()
                self._hints[key] = uadata
        return uadata

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

    def build(
        self,
        request: RequestView,
        response: ResponseView,
        context: TrackingContext | None,
        *,
        now: float,
        rng: RandomSource,
        route: str | None = None,
    ) -> list[Hit]:
        """The page view and the context's extra hits, or [] when the request is skipped."""
        config = self.config
        if context is not None and context.skipped:
            return []
        if self._response_filters and self.filters.skip_response(response) is not None:
            return []
        site = self._site if self._site is not None else self.site_id(request)
        if site is None:
            return []
        headers = request.headers
        origin = self.origin(request)
        ua = clean_text(headers.get("user-agent", ""), MAX_HEADER_CHARS)

        params: dict[str, str] = {
            "idsite": str(site),
            "rec": "1",
            "apiv": "1",
            "rand": str(rng.getrandbits(31)),
        }
        url = context.url if context is not None and context.url else None
        params["url"] = (
            truncate_url(self.redact_url(url), MAX_URL_BYTES)
            if url
            else self.page_url(request, origin)
        )

        action = context.action_name if context is not None else None
        if action is None and config.action_name is not None:
            action = self.call_hook("action_name", config.action_name, request)
        if action is None:
            action = route or request.path
        params["action_name"] = truncate_bytes(clean_text(str(action), 4096), MAX_ACTION_NAME_BYTES)
        if ua:
            params["ua"] = ua
        lang = clean_text(headers.get("accept-language", ""), 256)
        if lang:
            params["lang"] = lang
        referrer = context.referrer if context is not None and context.referrer else None
        referrer = referrer or headers.get("referer", "")
        if referrer:
            # The referrer is often another page of this site, with its own secrets in its
            # query: redacted like the page URL.
            referrer = self.redact_url(clean_text(referrer, 4096))
            params["urlref"] = truncate_chars(referrer, MAX_REFERRER_CHARS)
        if response.ttfb_ms is not None and math.isfinite(response.ttfb_ms):
            pf_srv = max(0, round(response.ttfb_ms))
            if pf_srv <= MAX_PF_MS:
                params["pf_srv"] = str(pf_srv)
        params["pv_id"] = new_page_view_id(rng)
        self._identity(params, request, origin, context, site, ua, now)
        uadata = self._uadata(headers)
        if uadata:
            params["uadata"] = uadata
        if self._has_dimensions or (context is not None and context.dimensions):
            self._dimensions(params, request, response, context)
        if context is not None:
            limit = context.max_custom_variables
            if context.page_variables:
                params["cvar"] = custom_variables_json(context.page_variables, limit)
            if context.visit_variables:
                params["_cvar"] = custom_variables_json(context.visit_variables, limit)
            params.update(context.page_params)
        if config.bots == "visits":
            params["bots"] = "1"
        elif config.bots == "bot-reports":
            params["recMode"] = "2"
            params["http_status"] = str(response.status)
            params["bw_bytes"] = str(response.body_bytes)
            if config.bot_source:
                params["source"] = config.bot_source

        hits = [Hit(params, now)]
        if context is not None and context.extra_hits:
            shared = {k: params[k] for k in _SHARED_KEYS if k in params}
            shared["rand"] = params["rand"]
            for extra in context.extra_hits:
                hit = dict(shared)
                hit.update(extra)
                hits.append(Hit(hit, now))
        return hits

    def _identity(
        self,
        params: dict[str, str],
        request: RequestView,
        origin: Origin,
        context: TrackingContext | None,
        site: int,
        ua: str,
        now: float,
    ) -> None:
        config = self.config
        client_ip = origin.client_ip
        if client_ip is not None and config.anonymize_ip:
            client_ip = anonymize_ip(client_ip, config.anonymize_ip)
        cookie = request.headers.get("cookie", "")
        pk_id = pk_visitor_id(cookie, site) if cookie else None
        forced = context.visitor_id if context is not None else None
        if config.token_auth is not None:
            if client_ip is not None:
                params["cip"] = client_ip
            if forced is not None:
                params["cid"] = forced
            elif pk_id is not None:
                params["_id"] = pk_id
        else:
            # Without cip every visitor shares the server's IP; a per-visitor id keeps
            # visits apart. A JavaScript visitor id keeps server and browser hits together.
            if pk_id is not None:
                params["_id"] = pk_id
            if forced is not None:
                params["cid"] = forced
            elif pk_id is not None:
                params["cid"] = pk_id
            elif client_ip is not None:
                params["cid"] = self._salted_visitor_id(client_ip, ua, site, self._today(now))
        user_id = context.user_id if context is not None else None
        if user_id is None and config.user_id is not None:
            hooked = self.call_hook("user_id", config.user_id, request)
            user_id = None if hooked is None else str(hooked)
        user_id = clean_text(user_id, MAX_USER_ID_CHARS) if user_id else None
        if user_id:  # a blank id would read as "no user" to Matomo anyway
            params["uid"] = user_id

    def _dimensions(
        self,
        params: dict[str, str],
        request: RequestView,
        response: ResponseView,
        context: TrackingContext | None,
    ) -> None:
        config = self.config
        dims: dict[int, str] = dict(config.dimensions)
        if config.status_dimension is not None:
            dims[config.status_dimension] = str(response.status)
        if config.method_dimension is not None:
            dims[config.method_dimension] = request.method
        if config.bytes_dimension is not None:
            dims[config.bytes_dimension] = str(response.body_bytes)
        if context is not None:
            dims.update(context.dimensions)
        for key, value in dims.items():
            params[f"dimension{key}"] = clean_text(value, MAX_DIMENSION_CHARS)


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    name = host.lower()
    if name.startswith("["):
        name = name.split("]", 1)[0] + "]"
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    for pattern in allowed:
        if pattern.startswith("*."):
            if name.endswith(pattern[1:]) or name == pattern[2:]:
                return True
        elif name == pattern:
            return True
    return False


def _client_hints(headers: Mapping[str, str]) -> str:
    # only called when a hint header is there (HitBuilder._uadata checks)
    members = [
        key + encode_basestring(clean_text(headers[name], 256))
        for name, key in _HINT_KEYS
        if name in headers
    ]
    return "{" + ",".join(members) + "}"
