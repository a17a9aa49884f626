"""Visitor identity: the JavaScript tracker's ``_pk_id`` cookie, and a keyed per-visitor id
for servers that cannot send the visitor's IP."""

from __future__ import annotations

import hashlib
import hmac
import re
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote

__all__ = ["pk_visitor_id", "salted_visitor_id", "valid_visitor_id"]

_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_MAX_COOKIE_HEADER = 8192


def valid_visitor_id(value: str) -> bool:
    """Whether ``value`` is a Matomo visitor id: exactly 16 hexadecimal characters."""
    return _HEX16.fullmatch(value) is not None


def pk_visitor_id(cookie_header: str, site_id: int) -> str | None:
    """The visitor id in the ``_pk_id.<site_id>.<hash>`` cookie, lower-cased, or None.

    Malformed, oversized or non-hex values are ignored; this never raises.
    """
    if "_pk_id" not in cookie_header or len(cookie_header) > _MAX_COOKIE_HEADER:
        return None
    prefix = f"_pk_id.{site_id}."
    start = cookie_header.find(prefix)
    if start == -1:
        return None
    if cookie_header.find(prefix, start + 1) == -1 and _plain(cookie_header):
        # The common case, without SimpleCookie (6 µs more, bench/micro.py "tricks"): one
        # candidate, and nothing on which SimpleCookie and the pair scan below could
        # disagree, so reading that one pair gives the answer both would.
        pair_start = cookie_header.rfind(";", 0, start) + 1
        if cookie_header[pair_start:start].strip():
            return None  # the prefix is inside another cookie's value
        end = cookie_header.find(";", start)
        pair = cookie_header[start:] if end == -1 else cookie_header[start:end]
        value = pair.strip().partition("=")[2]
        visitor = (unquote(value) if "%" in value else value).split(".", 1)[0]
        return visitor.lower() if _HEX16.fullmatch(visitor) is not None else None
    return _pk_visitor_id_slow(cookie_header, prefix)


def _plain(cookie_header: str) -> bool:
    """No quotes, escapes or commas (gunicorn joins repeated headers with them), and no white
    space but the one after each ``;`` (SimpleCookie also splits at white space)."""
    text = cookie_header.replace("; ", ";").strip()
    return (
        '"' not in text and "," not in text and "\\" not in text and len(text.split(None, 1)) == 1
    )


def _pk_visitor_id_slow(cookie_header: str, prefix: str) -> str | None:
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except CookieError:  # e.g. "$Foo=1" after a cookie: read the pairs directly below
        cookies.clear()
    for name, morsel in cookies.items():
        if name.startswith(prefix):
            visitor = unquote(morsel.value).split(".", 1)[0]
            if valid_visitor_id(visitor):
                return visitor.lower()
    # SimpleCookie stops at the first cookie it cannot parse; look at the pairs directly.
    # Cookie values never contain ",", so split there too: gunicorn joins repeated Cookie
    # headers with ",".
    for pair in cookie_header.replace(",", ";").split(";"):
        name, _, value = pair.strip().partition("=")
        if name.startswith(prefix):
            visitor = unquote(value.strip('"')).split(".", 1)[0]
            if valid_visitor_id(visitor):
                return visitor.lower()
    return None


def salted_visitor_id(salt: bytes, client_ip: str, user_agent: str, site_id: int, day: str) -> str:
    """16 hex characters of HMAC-SHA256 over (client IP, user agent, site, day) keyed with
    ``salt``: stable for one person on one day, meaningless without the salt, and the IP never
    leaves the process."""
    message = "\x1f".join((client_ip, user_agent, str(site_id), day)).encode("utf-8", "replace")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:16]
