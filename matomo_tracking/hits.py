"""From a request and its response to Tracking API hits (a page view plus the hits a handler
added), every parameter per the Matomo Tracking API reference.

``HitBuilder.build`` is the one pass over a request; each concern it draws on lives in its own
module: the client and host (``proxies``), redaction (``redaction``), the visitor and user
(``identity``), device hints (``client_hints``), custom dimensions (``dimensions``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from matomo_tracking.actions import custom_variables_json
from matomo_tracking.client_hints import CLIENT_HINT_HEADERS, ClientHints
from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.dimensions import add_dimensions, configures_dimensions
from matomo_tracking.fields import (
    MAX_ACTION_NAME_BYTES,
    MAX_HEADER_CHARS,
    MAX_PF_MS,
    MAX_REFERRER_CHARS,
    MAX_URL_BYTES,
    clean_text,
    truncate_bytes,
    truncate_chars,
    truncate_url,
)
from matomo_tracking.filters import Filters
from matomo_tracking.hooks import Hooks
from matomo_tracking.identity import Identity, RandomSource, new_page_view_id
from matomo_tracking.proxies import Origin, TrustedProxies, pin_host
from matomo_tracking.redaction import Redactor, redact_query, redact_url
from matomo_tracking.request import RequestView, ResponseView

# Also here (defined in their own modules), where callers have always found them.
__all__ = [
    "CLIENT_HINT_HEADERS",
    "Hit",
    "HitBuilder",
    "RandomSource",
    "new_page_view_id",
    "redact_query",
    "redact_url",
]

logger = logging.getLogger("matomo_tracking")

_SHARED = ("idsite", "rec", "apiv", "url", "ua", "lang", "uadata", "cip", "_id", "cid", "uid")
_SHARED_BOT = ("bots", "recMode", "source")
_SHARED_KEYS = (*_SHARED, *_SHARED_BOT, "pv_id")

T = TypeVar("T")


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see RequestView
class Hit:
    """One Tracking API request: its parameters (all strings) and when it happened
    (Unix seconds), from which ``cdo`` is computed when it is sent (treat it as immutable)."""

    params: Mapping[str, str]
    created: float


class HitBuilder:
    """Turns (request, response, context) into hits for one configuration.

    ``salt`` keys the per-visitor ids sent when there is no token (so no ``cip``); pass the
    configured ``visitor_salt`` or, without one, random bytes made once per process.
    """

    __slots__ = (
        "_base_prefix",
        "_has_dimensions",
        "_hints",
        "_hooks",
        "_identity",
        "_response_filters",
        "_site",
        "config",
        "filters",
        "proxies",
        "redactor",
    )

    def __init__(self, config: TrackingConfig, *, salt: bytes) -> None:
        self.config = config
        self.filters = Filters(config)
        self.proxies = TrustedProxies(config.trusted_proxies)
        self._hooks = Hooks()
        self.redactor = Redactor(config, self._hooks)
        self._identity = Identity(config, salt, self._hooks)
        self._hints = ClientHints()
        # Derived once: what every request would otherwise recompute.
        self._base_prefix = config.base_url.rstrip("/") if config.base_url is not None else None
        self._site = config.site_id if isinstance(config.site_id, int) else None
        self._response_filters = bool(config.ignore_status_codes) or config.ignore_html
        self._has_dimensions = configures_dimensions(config)

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
        return self._hooks.call(name, hook, request)

    def site_id(self, request: RequestView) -> int | None:
        """The site id for ``request`` (from a callable when configured), or None."""
        site = self.config.site_id
        if isinstance(site, int):
            return site
        value = self._hooks.call("site_id", site, request)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        return None

    def origin(self, request: RequestView) -> Origin:
        """Client IP, scheme and host after proxy resolution and host pinning."""
        origin = self.proxies.resolve(request)
        config = self.config
        if config.base_url is None and not config.allowed_hosts:
            return origin  # nothing to pin
        return pin_host(origin, config.base_url, config.allowed_hosts)

    def redacts(self, name: str) -> bool:
        """Whether the ``redact_query`` hook redacts parameter ``name`` (True if it raises)."""
        return self.redactor.redacts(name)

    def page_url(self, request: RequestView, origin: Origin) -> str:
        """The absolute URL the client asked for (query redacted, cut to 1024 bytes)."""
        query = self.redactor.query(request.query_string)
        prefix = self._base_prefix
        if prefix is None:
            prefix = f"{origin.scheme}://{origin.host.lower()}"
        url = prefix + request.url_path + ("?" + query if query else "")
        return truncate_url(url, MAX_URL_BYTES)

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
            truncate_url(self.redactor.url(url), MAX_URL_BYTES)
            if url
            else self.page_url(request, origin)
        )

        action = context.action_name if context is not None else None
        if action is None and config.action_name is not None:
            action = self._hooks.call("action_name", config.action_name, request)
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
            referrer = self.redactor.url(clean_text(referrer, 4096))
            params["urlref"] = truncate_chars(referrer, MAX_REFERRER_CHARS)
        if response.ttfb_ms is not None and math.isfinite(response.ttfb_ms):
            pf_srv = max(0, round(response.ttfb_ms))
            if pf_srv <= MAX_PF_MS:
                params["pf_srv"] = str(pf_srv)
        params["pv_id"] = new_page_view_id(rng)
        self._identity.assign(params, request, origin.client_ip, context, site, ua, now)
        uadata = self._hints.uadata(headers)
        if uadata:
            params["uadata"] = uadata
        if self._has_dimensions or (context is not None and context.dimensions):
            add_dimensions(params, config, request, response, context)
        if context is not None:
            limit = context.max_custom_variables
            if context.page_variables:
                params["cvar"] = custom_variables_json(context.page_variables, limit)
            if context.visit_variables:
                params["_cvar"] = custom_variables_json(context.visit_variables, limit)
            params.update(context.page_params)
            params.update(context.custom_parameters)
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
            custom = context.custom_parameters
            for extra in context.extra_hits:
                hit = dict(shared)
                hit.update(extra)
                if custom:
                    hit.update(custom)
                hits.append(Hit(hit, now))
        return hits
