"""The standalone tracker's logic, shared by ``matomo_wsgi.Tracker`` (threads) and
``matomo_asgi.AsyncTracker`` (asyncio): tracking variables set once or per call, optionally
copied from a real request, and one method per kind of hit.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict

from matomo_tracking import actions
from matomo_tracking.actions import (
    Category,
    EcommerceItem,
    Number,
    absolute_url,
    custom_parameter,
    custom_variables_json,
)
from matomo_tracking.client_hints import ClientHints
from matomo_tracking.config import TrackingConfig, masked_url
from matomo_tracking.delivery import DispatchStats
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.fields import (
    MAX_ACTION_NAME_BYTES,
    MAX_DIMENSION_CHARS,
    MAX_HEADER_CHARS,
    MAX_REFERRER_CHARS,
    MAX_USER_ID_CHARS,
    clean_text,
    truncate_bytes,
    truncate_chars,
)
from matomo_tracking.hits import Hit, HitBuilder, RandomSource, new_page_view_id
from matomo_tracking.hooks import Hooks
from matomo_tracking.identity import Identity
from matomo_tracking.proxies import anonymize_ip, parse_ip
from matomo_tracking.request import RequestView, request_from_asgi, request_from_wsgi
from matomo_tracking.visitor import valid_visitor_id

__all__ = ["SCRIPT_USER_AGENT", "BaseTracker", "TrackingVariables", "request_view_of"]

Items = Iterable[EcommerceItem | Mapping[str, object]]


class TrackingVariables(TypedDict, total=False):
    """Variables every tracker call accepts (and ``set()`` stores for later calls)."""

    url: str
    user_agent: str
    language: str
    referrer: str
    ip: str
    user_id: str
    visitor_id: str
    dimensions: Mapping[int, str]
    page_variables: Mapping[int, tuple[str, str]]
    visit_variables: Mapping[int, tuple[str, str]]
    new_visit: bool
    timestamp: float
    request: object
    client_hints: Mapping[str, object]
    performance: Mapping[str, int]
    country: str
    region: str
    city: str
    latitude: float
    longitude: float
    local_time: tuple[int, int, int]
    resolution: str
    charset: str
    attribution: tuple[str, str, int, str]
    page_view_id: str
    parameters: Mapping[str, object]


#: The ``ua`` of a tracker hit given no user agent (no ``user_agent=``, no ``request=`` with
#: one): Matomo then records an unknown browser on an unknown device, and counts the visit,
#: instead of taking the HTTP client's own ``python-httpx/...`` (a "library", which
#: TrackingSpamPrevention can exclude). It names no bot word (bot, crawl, spider, checker...)
#: and no URL, so Matomo's bot detection (DeviceDetector) does not exclude it.
SCRIPT_USER_AGENT = "matomo-middleware (server-side tracker)"
# Page views remembered per visitor for linking later hits (pv_id): the oldest is forgotten
# first beyond this many visitors.
_PAGE_VIEWS_REMEMBERED = 10_000
# What tells one visitor's hits from another's (Matomo's visitor id comes from these).
_VISITOR_KEYS = ("uid", "cid", "_id", "cip", "ua")


_VARIABLES = frozenset(TrackingVariables.__annotations__)
_PERFORMANCE = ("pf_net", "pf_srv", "pf_tfr", "pf_dm1", "pf_dm2", "pf_onl")


def _plain_float(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r} is invalid: expected a number")
    return repr(float(value))


def request_view_of(request: object) -> RequestView:
    """A view of a Starlette/FastAPI ``Request``, a Flask/Werkzeug request, a Django
    ``HttpRequest``, a raw ASGI scope or a WSGI environ."""
    if isinstance(request, RequestView):
        return request
    if isinstance(request, Mapping):
        if request.get("type") in ("http", "websocket") and "headers" in request:
            return request_from_asgi(request)
        return request_from_wsgi(request)
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping) and "headers" in scope:
        return request_from_asgi(scope)
    environ = getattr(request, "environ", None)
    if isinstance(environ, Mapping):
        return request_from_wsgi(environ)
    meta = getattr(request, "META", None)
    if isinstance(meta, Mapping):
        return request_from_wsgi(meta)
    raise TypeError(
        f"request={type(request).__name__} is not supported: pass a Starlette, Flask or Django "
        "request, an ASGI scope or a WSGI environ"
    )


class BaseTracker:
    """Builds hits for the standalone trackers; subclasses deliver them (``_submit``).

    Tracking variables (``url``, ``user_agent``, ``language``, ``referrer``, ``ip``, ``user_id``,
    ``visitor_id``, ``dimensions``, custom variables, ``new_visit``, ``timestamp``,
    ``parameters`` (custom tracking parameters), and ``request`` to copy what the middleware
    would send for a real request: URL, user agent, language, referrer, IP, client hints and
    visitor id) may be given per call or set once with ``set()``.

    Each visitor's last page view is remembered (``track_page_view`` returns its id) and its
    ``pv_id`` sent with that visitor's later hits, as Matomo's PHP client does.

    ``salt`` keys the visitor ids of cloned requests without a token, as the middleware's
    ``visitor_salt`` does (the configured ``visitor_salt`` wins); without either, no such id is
    sent.
    """

    def __init__(
        self,
        config: TrackingConfig,
        *,
        clock: Callable[[], float],
        rng: RandomSource,
        dispatcher: Dispatcher | None = None,
        salt: bytes | None = None,
    ) -> None:
        self.config = config
        self._dispatcher = dispatcher
        self._clock = clock
        self._rng = rng
        # The middleware's rules for what is sent for a request (trusted proxies, host
        # pinning, redaction, client hints, visitor ids): cloning a request gives its hits.
        if config.visitor_salt is not None:
            salt = config.visitor_salt.encode("utf-8")
        self._salted = salt is not None
        self._urls = HitBuilder(config, salt=b"")
        self._identity = Identity(config, salt or b"", Hooks())
        self._hints = ClientHints()
        self._defaults: dict[str, Any] = {}
        self._page_views: dict[tuple[str, ...], str] = {}
        if not isinstance(config.site_id, int):
            raise ValueError("site_id: a standalone tracker needs a fixed positive int site id")
        self._site = config.site_id

    def __repr__(self) -> str:
        url = masked_url(self.config.url)
        return f"{type(self).__name__}(url={url!r}, site_id={self.config.site_id!r})"

    def _submit(self, hit: Hit) -> bool:
        if self._dispatcher is None:
            raise NotImplementedError("pass a dispatcher or override _submit")
        return self._dispatcher.submit(hit)

    def stats(self) -> DispatchStats:
        """What was queued, sent, retried and dropped."""
        return self._dispatcher.stats() if self._dispatcher is not None else DispatchStats()

    def set(self, **variables: Any) -> None:
        """Store tracking variables for every later call (None removes one)."""
        for key, value in variables.items():
            if key not in _VARIABLES:
                raise ValueError(
                    f"{key} is not a tracking variable; accepted: {', '.join(sorted(_VARIABLES))}"
                )
            if key == "parameters" and value is not None:
                value = _custom_parameters(value)
            if value is None:
                self._defaults.pop(key, None)
            else:
                self._defaults[key] = value

    def set_custom_tracking_parameter(self, name: str, value: object) -> None:
        """Send parameter ``name`` with every later hit (None stops it), for Matomo plugins and
        parameters without a method here (PHP: ``setCustomTrackingParameter``). Refused, naming
        the right method: ``token_auth``, ``send_image`` and the parameters set here."""
        parameters = dict(self._defaults.get("parameters", {}))
        if value is None:
            custom_parameter(name, "")  # the same check, so a typo is not silently ignored
            parameters.pop(name, None)
        else:
            parameters[name] = custom_parameter(name, value)
        self.set(parameters=parameters or None)

    def build(
        self, params: Mapping[str, str], variables: Mapping[str, Any], *, page_view: bool = False
    ) -> Hit:
        """The hit for action ``params`` with the tracker's and the call's variables: a page
        view gets a new ``pv_id`` (unless ``page_view_id`` is given), any other hit the
        ``pv_id`` of its visitor's last page view."""
        unknown = set(variables) - _VARIABLES
        if unknown:
            raise ValueError(f"unknown tracking variable(s): {', '.join(sorted(unknown))}")
        merged = {**self._defaults, **{k: v for k, v in variables.items() if v is not None}}
        if variables.get("parameters") is not None:
            merged["parameters"] = {
                **self._defaults.get("parameters", {}),
                **_custom_parameters(variables["parameters"]),
            }
        config = self.config
        hit: dict[str, str] = {
            "idsite": str(config.site_id),
            "rec": "1",
            "apiv": "1",
            "rand": str(self._rng.getrandbits(31)),
        }
        request = merged.get("request")
        view: RequestView | None = None
        client_ip: str | None = None
        if request is not None:
            view = request_view_of(request)
            origin = self._urls.origin(view)
            merged.setdefault("url", self._urls.page_url(view, origin))
            for key, header in (
                ("user_agent", "user-agent"),
                ("language", "accept-language"),
                ("referrer", "referer"),
            ):
                if view.header(header):
                    merged.setdefault(key, view.header(header))
            client_ip = origin.client_ip
            if client_ip is not None:
                merged.setdefault("ip", client_ip)
            if "client_hints" not in merged:
                uadata = self._hints.uadata(view.headers)
                if uadata:
                    hit["uadata"] = uadata
        url = merged.get("url")
        if url is None:
            raise ValueError(
                "url is required: pass url=... (the page where this happened) or request=..."
            )
        if isinstance(url, str):
            url = self._urls.redactor.url(url)
        hit["url"] = absolute_url("url", url)
        hit["ua"] = clean_text(str(merged.get("user_agent", "")), MAX_HEADER_CHARS)
        if not hit["ua"]:
            hit["ua"] = SCRIPT_USER_AGENT
        if "language" in merged:
            hit["lang"] = clean_text(str(merged["language"]), 256)
        if "referrer" in merged:
            referrer = self._urls.redactor.url(clean_text(str(merged["referrer"]), 4096))
            hit["urlref"] = truncate_chars(referrer, MAX_REFERRER_CHARS)
        if "ip" in merged and config.token_auth is not None:
            hit["cip"] = str(merged["ip"])
            if config.anonymize_ip:
                address = parse_ip(hit["cip"])
                if address is None:
                    raise ValueError(f"ip={merged['ip']!r} is invalid: expected an IP address")
                hit["cip"] = anonymize_ip(str(address), config.anonymize_ip)
        forced = None
        if "visitor_id" in merged:
            forced = str(merged["visitor_id"])
            if not valid_visitor_id(forced):
                raise ValueError(f"visitor_id={forced!r} is invalid: expected 16 hex characters")
            forced = forced.lower()
        if view is not None:
            # The visitor ids the middleware's hits for this request carry.
            if client_ip is not None and config.anonymize_ip:
                client_ip = anonymize_ip(client_ip, config.anonymize_ip)
            self._identity.visitor_ids(
                hit,
                view,
                client_ip if self._salted else None,
                self._site,
                clean_text(view.header("user-agent") or "", MAX_HEADER_CHARS),
                self._clock(),
                forced=forced,
            )
        elif forced is not None:
            hit["cid"] = forced
        if "user_id" in merged:
            hit["uid"] = clean_text(str(merged["user_id"]), MAX_USER_ID_CHARS)
        for dim, value in {**config.dimensions, **merged.get("dimensions", {})}.items():
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"dimensions: id {dim!r} is invalid: expected an int >= 1")
            hit[f"dimension{dim}"] = clean_text(str(value), MAX_DIMENSION_CHARS)
        if merged.get("page_variables"):
            hit["cvar"] = custom_variables_json(
                merged["page_variables"], config.max_custom_variables
            )
        if merged.get("visit_variables"):
            hit["_cvar"] = custom_variables_json(
                merged["visit_variables"], config.max_custom_variables
            )
        if merged.get("new_visit"):
            hit["new_visit"] = "1"
        if config.bots == "visits":
            hit["bots"] = "1"
        self._advanced(hit, merged)
        hit.update(params)
        if page_view:
            if "pv_id" not in hit:
                hit["pv_id"] = new_page_view_id(self._rng)
        elif "pv_id" not in hit and self._page_views:
            last = self._page_views.get(_visitor_key(hit))
            if last is not None:
                hit["pv_id"] = last
        hit.update(merged.get("parameters", {}))
        created = merged.get("timestamp")
        now = self._clock()
        return Hit(hit, float(created) if created is not None else now)

    def _remember_page_view(self, hit: Hit) -> None:
        key = _visitor_key(hit.params)
        pages = self._page_views
        # Plain dict steps, each atomic under the GIL: trackers are shared between threads.
        pages.pop(key, None)
        if len(pages) >= _PAGE_VIEWS_REMEMBERED:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del pages[next(iter(pages))]  # unless another thread got there first
        pages[key] = hit.params["pv_id"]

    def _advanced(self, hit: dict[str, str], merged: Mapping[str, Any]) -> None:
        config = self.config
        hints = merged.get("client_hints")
        if hints:
            hit["uadata"] = json.dumps(dict(hints), ensure_ascii=False, separators=(",", ":"))
        geo = [k for k in ("country", "region", "city", "latitude", "longitude") if k in merged]
        if geo and config.token_auth is None:
            raise ValueError(f"{geo[0]}: Matomo accepts location overrides only with token_auth")
        if "country" in merged:
            hit["country"] = clean_text(str(merged["country"]), 3).lower()
        if "region" in merged:
            hit["region"] = clean_text(str(merged["region"]), 3)
        if "city" in merged:
            hit["city"] = clean_text(str(merged["city"]), 255)
        if "latitude" in merged:
            hit["lat"] = _plain_float("latitude", merged["latitude"])
        if "longitude" in merged:
            hit["long"] = _plain_float("longitude", merged["longitude"])
        if "local_time" in merged:
            h, m, sec = merged["local_time"]
            hit.update(h=str(int(h)), m=str(int(m)), s=str(int(sec)))
        if "resolution" in merged:
            hit["res"] = clean_text(str(merged["resolution"]), 9)
        if "charset" in merged:
            hit["cs"] = clean_text(str(merged["charset"]), 32)
        if "attribution" in merged:
            name, keyword, ts, ref = merged["attribution"]
            hit.update(_rcn=str(name), _rck=str(keyword), _refts=str(int(ts)), _ref=str(ref))
        if "page_view_id" in merged:
            hit["pv_id"] = str(merged["page_view_id"])[:6]
        timings = merged.get("performance")
        if timings:
            for key, value in timings.items():
                if (
                    key not in _PERFORMANCE
                    or isinstance(value, bool)
                    or not isinstance(value, int)
                    or value < 0
                ):
                    raise ValueError(
                        f"performance: {key}={value!r} is invalid: expected keys "
                        f"{', '.join(_PERFORMANCE)} with int milliseconds >= 0"
                    )
                hit[key] = str(value)

    def _track(self, params: Mapping[str, str], variables: Mapping[str, Any]) -> bool:
        return self._submit(self.build(params, variables))

    # -- one method per kind of hit -------------------------------------------------------
    def track_page_view(
        self,
        action_name: str | None = None,
        *,
        product: Mapping[str, Any] | None = None,
        **variables: Any,
    ) -> str | None:
        """A page view (``action_name`` is the title); ``product`` adds product-view fields
        (keys ``sku``, ``name``, ``category``, ``price``). Returns the page view's id
        (``pv_id``: ``page_view_id`` if given, else a new one), which this visitor's later hits
        carry, or None if the hit was dropped."""
        params: dict[str, str] = {}
        if action_name is not None:
            params["action_name"] = truncate_bytes(
                clean_text(action_name, 4096), MAX_ACTION_NAME_BYTES
            )
        if product:
            params.update(actions.product_view_params(**product))
        hit = self.build(params, variables, page_view=True)
        if not self._submit(hit):
            return None
        self._remember_page_view(hit)
        return hit.params["pv_id"]

    def track_event(
        self,
        category: str,
        action: str,
        name: str | None = None,
        value: Number | None = None,
        **variables: Any,
    ) -> bool:
        """An event."""
        return self._track(actions.event_params(category, action, name, value), variables)

    def track_site_search(
        self, keyword: str, category: str | None = None, count: int | None = None, **variables: Any
    ) -> bool:
        """A site search."""
        return self._track(actions.site_search_params(keyword, category, count), variables)

    def track_goal(self, goal_id: int, revenue: Number | None = None, **variables: Any) -> bool:
        """A goal conversion."""
        return self._track(actions.goal_params(goal_id, revenue), variables)

    def track_ecommerce_order(
        self,
        order_id: str,
        revenue: Number,
        *,
        items: Items = (),
        subtotal: Number | None = None,
        tax: Number | None = None,
        shipping: Number | None = None,
        discount: Number | None = None,
        **variables: Any,
    ) -> bool:
        """An ecommerce order."""
        params = actions.order_params(
            order_id,
            revenue,
            items=items,
            subtotal=subtotal,
            tax=tax,
            shipping=shipping,
            discount=discount,
        )
        return self._track(params, variables)

    def track_ecommerce_cart_update(
        self, revenue: Number, *, items: Items = (), **variables: Any
    ) -> bool:
        """A cart update (send the whole cart)."""
        return self._track(actions.cart_update_params(revenue, items=items), variables)

    def track_product_view(
        self,
        *,
        sku: str | None = None,
        name: str | None = None,
        category: Category | None = None,
        price: Number | None = None,
        action_name: str | None = None,
        **variables: Any,
    ) -> str | None:
        """A page view of a product (or category) page (returns as ``track_page_view``)."""
        product = {"sku": sku, "name": name, "category": category, "price": price}
        return self.track_page_view(action_name, product=product, **variables)

    def track_content_impression(
        self, name: str, piece: str | None = None, target: str | None = None, **variables: Any
    ) -> bool:
        """A content impression."""
        return self._track(actions.content_impression_params(name, piece, target), variables)

    def track_content_interaction(
        self,
        interaction: str,
        name: str,
        piece: str | None = None,
        target: str | None = None,
        **variables: Any,
    ) -> bool:
        """A content interaction."""
        return self._track(
            actions.content_interaction_params(interaction, name, piece, target), variables
        )

    def track_link(self, link: str, **variables: Any) -> bool:
        """An outlink click."""
        return self._track(actions.link_params(link), variables)

    def track_download(self, download: str, **variables: Any) -> bool:
        """A download click."""
        return self._track(actions.download_params(download), variables)

    def ping(self, **variables: Any) -> bool:
        """A heartbeat that keeps the visit alive."""
        return self._track(actions.ping_params(), variables)

    def track_crash(
        self,
        message: str,
        *,
        type: str | None = None,
        category: str | None = None,
        stack: str | None = None,
        location: tuple[str, int | None, int | None] | None = None,
        **variables: Any,
    ) -> bool:
        """A crash for Matomo's (premium) Crash Analytics plugin: ``ca=1``, ``cra`` and the
        optional ``cra_tp``, ``cra_ct``, ``cra_st``, ``cra_ru``, ``cra_rl``, ``cra_rc``."""
        params = {"ca": "1", "cra": clean_text(message, 4096)}
        for key, value in (("cra_tp", type), ("cra_ct", category), ("cra_st", stack)):
            if value:
                params[key] = value[:65536]
        if location is not None:
            file, line, column = location
            params["cra_ru"] = file
            if line is not None:
                params["cra_rl"] = str(int(line))
            if column is not None:
                params["cra_rc"] = str(int(column))
        return self._track(params, variables)

    def track_bot_request(
        self,
        *,
        status: int,
        response_bytes: int | None = None,
        server_time_ms: int | None = None,
        source: str | None = None,
        **variables: Any,
    ) -> bool:
        """A request by a bot or AI agent for Matomo >= 5.7's bot reports: ``recMode=1`` with
        ``http_status``, ``bw_bytes``, ``pf_srv`` and ``source`` (pass ``user_agent``)."""
        params = {"recMode": "1", "http_status": str(int(status))}
        if response_bytes is not None:
            params["bw_bytes"] = str(int(response_bytes))
        if server_time_ms is not None:
            params["pf_srv"] = str(max(0, int(server_time_ms)))
        src = source or self.config.bot_source
        if src:
            params["source"] = src[:50]
        return self._track(params, variables)


def _visitor_key(params: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(params.get(key, "") for key in _VISITOR_KEYS)


def _custom_parameters(parameters: object) -> dict[str, str]:
    if not isinstance(parameters, Mapping):
        raise ValueError(f"parameters={parameters!r} is invalid: expected a mapping")
    return {name: custom_parameter(name, value) for name, value in parameters.items()}
