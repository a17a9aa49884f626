"""The visitor's device as the browser describes it: header-style client hints copied into the
``uadata`` parameter (read by Matomo >= 4.12)."""

from __future__ import annotations

from collections.abc import Mapping
from json.encoder import encode_basestring

from matomo_tracking.fields import clean_text

__all__ = ["CLIENT_HINT_HEADERS", "ClientHints"]

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
# ``uadata`` is a JSON object of strings: written as json.dumps(ensure_ascii=False,
# separators=(",", ":")) writes it, without building an encoder per request.
_HINT_KEYS = tuple((name, encode_basestring(name) + ":") for name in CLIENT_HINT_HEADERS)
# uadata strings remembered, by the raw hint headers (bounded: huge headers are not kept).
_CACHE_SIZE = 1024
_CACHE_MAX_CHARS = 1024


class ClientHints:
    """``uadata`` from request headers, remembered: hints repeat across the visitors of one
    browser version."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[tuple[str | None, ...], str] = {}

    def uadata(self, headers: Mapping[str, str]) -> str | None:
        """The ``uadata`` JSON for ``headers``, or None when they carry no hint."""
        if "sec-ch-ua" not in headers and "x-requested-with" not in headers:
            return None
        key = tuple(map(headers.get, CLIENT_HINT_HEADERS))
        uadata = self._known.get(key)
        if uadata is None:
            members = [
                json_key + encode_basestring(clean_text(headers[name], 256))
                for name, json_key in _HINT_KEYS
                if name in headers
            ]
            uadata = "{" + ",".join(members) + "}"
            if sum(map(len, filter(None, key))) <= _CACHE_MAX_CHARS:
                if len(self._known) >= _CACHE_SIZE:
                    self._known.clear()  # atomic, unlike evicting one entry across threads
                self._known[key] = uadata
        return uadata
