"""The bulk wire format: each hit a JSON object of string values, encoded once when it is
queued; ``token_auth`` at the top level of the POST body, never in a URL.

No ``send_image`` goes into a bulk body: with a top-level ``send_image: 0`` Matomo answers
204 with an empty body, and the ``tracked``/``invalid`` counts delivery relies on never
arrive (verified on Matomo 5.0.2).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from urllib.parse import unquote, urlsplit

from matomo_tracking.hits import Hit

__all__ = ["BULK_HEADERS", "EncodedHit", "bulk_body", "bulk_headers", "encode_hit", "visitor_key"]

#: Headers of every bulk POST.
BULK_HEADERS = {"Content-Type": "application/json"}


def _httpx_user_agent() -> str:
    try:
        return f"python-httpx/{metadata.version('httpx')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - httpx is a dependency
        return "python-httpx"


def bulk_headers(endpoint: str) -> dict[str, str]:
    """The headers of a bulk POST to ``endpoint`` as a lean poster sends them, the same as
    httpx's: ``BULK_HEADERS``, httpx's ``User-Agent`` (Matomo records a hit without ``ua``
    with the bulk request's own User-Agent, so what it records stays the same whichever
    poster sends) and, when the URL holds credentials (a Matomo behind HTTP basic auth),
    their ``Authorization`` (user and password percent-decoded, UTF-8)."""
    headers = {**BULK_HEADERS, "User-Agent": _httpx_user_agent()}
    parts = urlsplit(endpoint)
    if parts.username is not None or parts.password is not None:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return headers


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# Not frozen (treat it as immutable): one is made per hit, and a frozen dataclass's __init__
# costs three times as much (bench/micro.py ``tricks``: "per-hit dataclass").
@dataclass(slots=True, unsafe_hash=True)
class EncodedHit:
    """A hit as it travels: its JSON object bytes, when it happened, and its visitor key (a
    hash of its visitor id, which keeps a visitor's hits in one delivery lane, in order).
    Treat it as immutable."""

    data: bytes
    created: float
    visitor: int = field(default=0, compare=False)  # derived from data: not part of equality

    @property
    def size(self) -> int:
        """Bytes this hit adds to a bulk body."""
        return len(self.data) + 1


def encode_hit(hit: Hit) -> EncodedHit:
    """Encode a hit's parameters as one JSON object (valid UTF-8 whatever the input)."""
    params = hit.params
    text = _dumps(params if params.__class__ is dict else dict(params))
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a hand-made scope
        data = text.encode("utf-8", "replace")
    return EncodedHit(data, hit.created, visitor_key(params))


def visitor_key(params: Mapping[str, str]) -> int:
    """A stable hash of the hit's visitor (``cid``, else ``_id``, else ``uid``, else its IP
    and user agent; 0 for none),
    the same in every process (as Matomo's QueuedTracking plugin picks a visitor's queue)."""
    visitor = params.get("cid") or params.get("_id") or params.get("uid")
    if not visitor:  # Matomo then tells visitors apart by IP and user agent
        visitor = (params.get("cip") or "") + (params.get("ua") or "")
        if not visitor:
            return 0
    return zlib.crc32(visitor.encode("utf-8", "replace"))


def _with_cdo(data: bytes, age: int) -> bytes:
    # The hit's age at send time, so Matomo records it when it happened (Matomo >= 4.0).
    if age < 1:
        return data
    return b'{"cdo":"%d",' % age + data[1:] if len(data) > 2 else b'{"cdo":"%d"}' % age


def bulk_body(hits: list[EncodedHit], *, token_auth: str | None, now: float) -> bytes:
    """The POST body of one bulk request; ``now`` (Unix seconds) gives each hit's ``cdo``,
    its age rounded to the nearest second (Matomo records it within half a second, plus the
    time the request takes, of when it happened)."""
    entries = b",".join(_with_cdo(h.data, round(now - h.created)) for h in hits)
    tail = b""
    if token_auth is not None:
        tail = b',"token_auth":' + json.dumps(token_auth).encode("ascii")
    return b'{"requests":[' + entries + b"]" + tail + b"}"
