"""Tracking API parameters for every kind of hit besides the automatic page view.

Each function validates its arguments (``ValueError`` naming the argument) and returns the
parameters of that hit type, per the Matomo Tracking API. They are shared by the per-request
``TrackingContext`` and the standalone trackers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from matomo_tracking.fields import (
    MAX_CUSTOM_VARIABLE_CHARS,
    MAX_EVENT_CHARS,
    MAX_ORDER_ID_CHARS,
    MAX_URL_BYTES,
    clean_text,
    truncate_bytes,
)

__all__ = [
    "EcommerceItem",
    "absolute_url",
    "cart_update_params",
    "content_impression_params",
    "content_interaction_params",
    "custom_parameter",
    "custom_variables_json",
    "download_params",
    "event_params",
    "goal_params",
    "link_params",
    "number_text",
    "order_params",
    "ping_params",
    "product_view_params",
    "site_search_params",
]

#: An amount or value: given as a number or as decimal text, sent exactly as given.
Number = int | float | Decimal | str
Category = str | Sequence[str]


_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def number_text(name: str, value: object, *, minimum: float | None = 0.0) -> str:
    """A finite number (int, float, ``Decimal`` or decimal text) as plain decimal text, exactly
    as given: no exponent, no rounding (Matomo rounds amounts itself, the PHP way)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise ValueError(f"{name}={value!r} is invalid: expected a number")
    if isinstance(value, int):
        exact = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r} is invalid: expected a finite number")
        exact = Decimal(repr(value))  # the shortest text that reads back as this float
    elif isinstance(value, str):
        if _DECIMAL_TEXT.fullmatch(value.strip()) is None:
            raise ValueError(f"{name}={value!r} is invalid: expected a number")
        exact = Decimal(value.strip())
    else:
        exact = value
    if not exact.is_finite():
        raise ValueError(f"{name}={value!r} is invalid: expected a finite number")
    if minimum is not None and exact < Decimal(repr(minimum)):
        raise ValueError(f"{name}={value!r} is invalid: expected a number >= {minimum:g}")
    text = format(exact, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _required(name: str, value: object, limit: int = MAX_EVENT_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r} is invalid: expected a non-blank string")
    return clean_text(value, limit)


def _optional(params: dict[str, str], key: str, name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is invalid: expected a string or None")
    if value.strip():
        params[key] = clean_text(value, MAX_EVENT_CHARS)


def absolute_url(name: str, value: object) -> str:
    """An absolute http(s) URL (Matomo discards relative ones), cut to 1024 bytes."""
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is invalid: expected an absolute http(s) URL")
    try:
        parts = urlsplit(value.strip())
    except ValueError:  # e.g. "http://[::1": an unclosed IPv6 host
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name}={value!r} is invalid: expected an absolute http(s) URL")
    return truncate_bytes(value.strip(), MAX_URL_BYTES)


def event_params(
    category: str, action: str, name: str | None = None, value: Number | None = None
) -> dict[str, str]:
    """An event: ``e_c``, ``e_a``, ``ca=1``, optional ``e_n`` and ``e_v``."""
    params = {"e_c": _required("category", category), "e_a": _required("action", action), "ca": "1"}
    _optional(params, "e_n", "name", name)
    if value is not None:
        params["e_v"] = number_text("value", value, minimum=None)
    return params


def site_search_params(
    keyword: str, category: str | None = None, count: int | None = None
) -> dict[str, str]:
    """A site search: ``search``, optional ``search_cat`` and ``search_count``."""
    # A blank keyword would read as "no search" to Matomo: the hit would become a page view.
    params = {"search": _required("keyword", keyword)}
    if category is not None:
        if not isinstance(category, str):
            raise ValueError(f"category={category!r} is invalid: expected a string or None")
        params["search_cat"] = clean_text(category, 200)
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count={count!r} is invalid: expected an int >= 0 or None")
        params["search_count"] = str(count)
    return params


def goal_params(goal_id: int, revenue: Number | None = None) -> dict[str, str]:
    """A manual goal conversion: ``idgoal`` (> 0), optional ``revenue``."""
    if isinstance(goal_id, bool) or not isinstance(goal_id, int) or goal_id <= 0:
        raise ValueError(f"goal_id={goal_id!r} is invalid: expected an int > 0")
    params = {"idgoal": str(goal_id)}
    if revenue is not None:
        params["revenue"] = number_text("revenue", revenue)
    return params


def _category(name: str, value: Category | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value, 200)
    items = list(value) if isinstance(value, Iterable) else []
    if not 1 <= len(items) <= 5 or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{name}={value!r} is invalid: expected a string or 1 to 5 strings")
    return json.dumps([clean_text(i, 200) for i in items], ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class EcommerceItem:
    """One line of a cart or an order. ``sku`` is required; ``category`` is a string or up to
    five strings; ``price`` a number >= 0; ``quantity`` an int >= 1."""

    sku: str
    name: str = ""
    category: Category | None = None
    price: Number = 0
    quantity: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.sku, str) or not self.sku.strip():
            raise ValueError(f"sku={self.sku!r} is invalid: expected a non-blank string")
        if not isinstance(self.name, str):
            raise ValueError(f"name={self.name!r} is invalid: expected a string")
        _category("category", self.category)
        number_text("price", self.price)
        q = self.quantity
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValueError(f"quantity={q!r} is invalid: expected an int >= 1")

    def as_json(self) -> str:
        """The item as Matomo's JSON ``[sku, name, category, price, quantity]``, the price
        written exactly as given (never through a binary float)."""
        category: object = ""
        if isinstance(self.category, str):
            category = self.category
        elif self.category is not None:
            category = list(self.category)
        head = json.dumps(
            [self.sku.strip(), self.name, category], ensure_ascii=False, separators=(",", ":")
        )
        return f"{head[:-1]},{number_text('price', self.price)},{self.quantity}]"


def _items(items: Iterable[EcommerceItem | Mapping[str, object]]) -> str:
    rows: list[str] = []
    for item in items:
        if isinstance(item, Mapping):
            fields = dict(item)
            try:
                item = EcommerceItem(**fields)  # type: ignore[arg-type]
            except TypeError as exc:  # a key EcommerceItem does not have
                raise ValueError(f"items: {fields!r} is invalid: {exc}") from None
        if not isinstance(item, EcommerceItem):
            raise ValueError(f"items: {item!r} is invalid: expected an EcommerceItem or a mapping")
        rows.append(item.as_json())
    return "[" + ",".join(rows) + "]"


def order_params(
    order_id: str,
    revenue: Number,
    *,
    items: Iterable[EcommerceItem | Mapping[str, object]] = (),
    subtotal: Number | None = None,
    tax: Number | None = None,
    shipping: Number | None = None,
    discount: Number | None = None,
) -> dict[str, str]:
    """An ecommerce order: ``idgoal=0``, ``ec_id``, ``revenue`` (grand total), optional
    ``ec_st``, ``ec_tx``, ``ec_sh``, ``ec_dt`` and ``ec_items``."""
    if not isinstance(order_id, str) or not order_id.strip():
        raise ValueError(f"order_id={order_id!r} is invalid: expected a non-blank string")
    if len(order_id) > MAX_ORDER_ID_CHARS:
        raise ValueError(f"order_id is invalid: expected at most {MAX_ORDER_ID_CHARS} characters")
    params = {"idgoal": "0", "ec_id": order_id.strip(), "revenue": number_text("revenue", revenue)}
    for key, name, value in (
        ("ec_st", "subtotal", subtotal),
        ("ec_tx", "tax", tax),
        ("ec_sh", "shipping", shipping),
        ("ec_dt", "discount", discount),
    ):
        if value is not None:
            params[key] = number_text(name, value)
    encoded = _items(items)
    if encoded != "[]":
        params["ec_items"] = encoded
    return params


def cart_update_params(
    revenue: Number, *, items: Iterable[EcommerceItem | Mapping[str, object]] = ()
) -> dict[str, str]:
    """A cart update: ``idgoal=0``, ``revenue`` (cart total), ``ec_items`` (the whole cart)."""
    return {"idgoal": "0", "revenue": number_text("revenue", revenue), "ec_items": _items(items)}


def product_view_params(
    *,
    sku: str | None = None,
    name: str | None = None,
    category: Category | None = None,
    price: Number | None = None,
) -> dict[str, str]:
    """Product or category view fields (``_pks``, ``_pkn``, ``_pkc``, ``_pkp``) that ride on
    a page view. A category page sends only ``category``."""
    params: dict[str, str] = {}
    if sku is not None:
        params["_pks"] = _required("sku", sku, 255)
    if name is not None:
        params["_pkn"] = _required("name", name, 255)
    cat = _category("category", category)
    if cat is not None:
        params["_pkc"] = cat
    if price is not None:
        params["_pkp"] = number_text("price", price)
    if not params:
        raise ValueError("a product view needs at least one of sku, name, category, price")
    return params


def content_impression_params(
    name: str, piece: str | None = None, target: str | None = None
) -> dict[str, str]:
    """A content impression: ``c_n``, ``ca=1``, ``c_p`` (``Unknown`` without a piece, as the
    JavaScript and PHP trackers send), optional ``c_t``."""
    params = {"c_n": _required("name", name), "ca": "1", "c_p": "Unknown"}
    _optional(params, "c_p", "piece", piece)
    _optional(params, "c_t", "target", target)
    return params


def content_interaction_params(
    interaction: str, name: str, piece: str | None = None, target: str | None = None
) -> dict[str, str]:
    """A content interaction: ``c_i``, ``c_n``, ``ca=1``, ``c_p`` (``Unknown`` without a
    piece), optional ``c_t``."""
    params = {"c_i": _required("interaction", interaction)}
    params.update(content_impression_params(name, piece, target))
    return params


def link_params(url: str) -> dict[str, str]:
    """An outlink click: ``link`` (absolute URL)."""
    return {"link": absolute_url("url", url)}


def download_params(url: str) -> dict[str, str]:
    """A download click: ``download`` (absolute URL)."""
    return {"download": absolute_url("url", url)}


def ping_params() -> dict[str, str]:
    """A heartbeat that extends the visit: ``ping=1``."""
    return {"ping": "1"}


def custom_variables_json(variables: Mapping[int, tuple[str, str]], max_slots: int) -> str:
    """Custom variables in Matomo's ``{"1": [name, value]}`` form.

    Slots run from 1 to ``max_slots``; names and values are cut to 200 characters.
    """
    out: dict[str, list[str]] = {}
    for slot, pair in sorted(variables.items()):
        if isinstance(slot, bool) or not isinstance(slot, int) or not 1 <= slot <= max_slots:
            raise ValueError(
                f"custom variable slot {slot!r} is invalid: expected 1 to {max_slots}"
                " (max_custom_variables)"
            )
        name, value = pair
        out[str(slot)] = [
            clean_text(str(name), MAX_CUSTOM_VARIABLE_CHARS),
            clean_text(str(value), MAX_CUSTOM_VARIABLE_CHARS),
        ]
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


# Parameters matomo-middleware sets itself, with the way to set each: a custom tracking
# parameter of that name is refused (it would fight with ours). Everything else goes through.
_OWN_PARAMETERS: dict[str, str] = {
    "token_auth": "the token_auth setting (sent in the request body, never in a hit)",
    "send_image": "nothing: bulk requests must not carry it (Matomo would not confirm the hits)",
    "idsite": "the site_id setting",
    "rec": "nothing: every hit carries rec=1",
    "apiv": "nothing: every hit carries apiv=1",
    "rand": "nothing: every hit carries its own rand",
    "url": "url= (trackers) or TrackingContext.url",
    "action_name": "track_page_view(action_name) or TrackingContext.set_action_name()",
    "ua": "user_agent= (trackers; the middleware sends the request's User-Agent)",
    "lang": "language= (trackers; the middleware sends the request's Accept-Language)",
    "urlref": "referrer= (trackers) or TrackingContext.referrer",
    "uadata": "client_hints= (trackers; the middleware sends the request's client hints)",
    "cip": "ip= (trackers; the middleware sends the client address)",
    "_id": "visitor_id= (trackers) or TrackingContext.set_visitor_id()",
    "cid": "visitor_id= (trackers) or TrackingContext.set_visitor_id()",
    "uid": "user_id= (trackers) or TrackingContext.set_user_id()",
    "pv_id": "page_view_id= (trackers; hits are linked to their page view already)",
    "cdt": "timestamp= (trackers; hits carry cdo when they are sent)",
    "cdo": "timestamp= (trackers; hits carry cdo when they are sent)",
    "new_visit": "new_visit= (trackers)",
    "bots": "the bots setting",
    "cvar": "page_variables= (trackers) or TrackingContext.set_custom_variable()",
    "_cvar": "visit_variables= (trackers) or TrackingContext.set_custom_variable()",
    "country": "country= (trackers)",
    "region": "region= (trackers)",
    "city": "city= (trackers)",
    "lat": "latitude= (trackers)",
    "long": "longitude= (trackers)",
    "h": "local_time= (trackers)",
    "m": "local_time= (trackers)",
    "s": "local_time= (trackers)",
    "res": "resolution= (trackers)",
    "cs": "charset= (trackers)",
    "_rcn": "attribution= (trackers)",
    "_rck": "attribution= (trackers)",
    "_refts": "attribution= (trackers)",
    "_ref": "attribution= (trackers)",
    "ca": "the track_* method of that kind of hit (it sets ca=1)",
    "e_c": "track_event()",
    "e_a": "track_event()",
    "e_n": "track_event()",
    "e_v": "track_event()",
    "search": "track_site_search()",
    "search_cat": "track_site_search()",
    "search_count": "track_site_search()",
    "idgoal": "track_goal() or track_ecommerce_order()",
    "revenue": "track_goal() or track_ecommerce_order()",
    "ec_id": "track_ecommerce_order()",
    "ec_st": "track_ecommerce_order(subtotal=)",
    "ec_tx": "track_ecommerce_order(tax=)",
    "ec_sh": "track_ecommerce_order(shipping=)",
    "ec_dt": "track_ecommerce_order(discount=)",
    "ec_items": "items= of track_ecommerce_order() or track_ecommerce_cart_update()",
    "_pks": "track_product_view()",
    "_pkn": "track_product_view()",
    "_pkc": "track_product_view()",
    "_pkp": "track_product_view()",
    "c_n": "track_content_impression() or track_content_interaction()",
    "c_p": "track_content_impression() or track_content_interaction()",
    "c_t": "track_content_impression() or track_content_interaction()",
    "c_i": "track_content_interaction()",
    "link": "track_link()",
    "download": "track_download()",
    "ping": "ping()",
    "cra": "track_crash()",
    "cra_tp": "track_crash()",
    "cra_ct": "track_crash()",
    "cra_st": "track_crash()",
    "cra_ru": "track_crash()",
    "cra_rl": "track_crash()",
    "cra_rc": "track_crash()",
    "recMode": "track_bot_request() or the bots setting",
    "http_status": "track_bot_request() or the bots setting",
    "bw_bytes": "track_bot_request() or the bots setting",
    "source": "track_bot_request(source=) or the bot_source setting",
}
_OWN_PREFIXES = (
    ("dimension", "dimensions= (trackers) or TrackingContext.set_dimension()"),
    ("pf_", "performance= (trackers; the middleware measures pf_srv)"),
)


def custom_parameter(name: object, value: object) -> str:
    """Check a custom tracking parameter (PHP: ``setCustomTrackingParameter``) and return its
    value as sent: text as given, numbers as plain decimal text, bools as ``1``/``0``.

    Any name is accepted except ``token_auth``, ``send_image`` and the parameters
    matomo-middleware sets itself; refusing those names the way to set them."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"custom parameter name {name!r} is invalid: expected a non-blank name")
    hint = _OWN_PARAMETERS.get(name)
    if hint is None:
        for prefix, prefix_hint in _OWN_PREFIXES:
            rest = name[len(prefix) :]
            if name.startswith(prefix) and (prefix == "pf_" or (rest.isascii() and rest.isdigit())):
                hint = prefix_hint
    if hint is not None:
        raise ValueError(f"custom parameter {name!r} is set by matomo-middleware: use {hint}")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return number_text(name, value, minimum=None)
    raise ValueError(f"custom parameter {name}={value!r} is invalid: expected a string or number")
