"""Scopes, environs, a fixed random source and the collector check shared by the core tests."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from typing import Any

from matomo_tracking import Hit, HitBuilder, TrackingConfig, bulk_body, encode_hit
from matomo_tracking.testing import Collector
from tests.sentinel import SENTINEL_TOKEN

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
DAY = "2023-11-14"
SALT = b"test-salt"
TOKEN = SENTINEL_TOKEN
MATOMO = "https://matomo.example.org"

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
PEER = "203.0.113.7"


class FixedRandom:
    """A ``RandomSource`` that always draws the same numbers: ``rand`` is ``"12345"`` and
    ``pv_id`` is ``"7d3000"`` in every hit it helps build."""

    def __init__(self, draw: float = 0.5, bits: int = 12345) -> None:
        self.draw = draw
        self.bits = bits

    def random(self) -> float:
        return self.draw

    def getrandbits(self, k: int, /) -> int:
        return self.bits & ((1 << k) - 1)


def keyed_visitor_id(ip: str, ua: str, site: int = 1, salt: bytes = SALT, day: str = DAY) -> str:
    """The documented per-visitor id: HMAC-SHA256(salt, ip US ua US site US day)[:16]."""
    message = "\x1f".join((ip, ua, str(site), day)).encode("utf-8")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:16]


def scope(
    path: str = "/",
    *,
    query: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] | None = None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
    client: Any = (PEER, 50123),
    server: Any = ("example.org", 80),
    scheme: str = "http",
    method: str = "GET",
    root_path: str | None = None,
    raw_path: bytes | None = None,
) -> dict[str, Any]:
    """An ASGI http scope; ``None`` for ``client``/``server`` leaves the key out."""
    if headers is None:
        headers = [
            (b"host", b"example.org"),
            (b"user-agent", FIREFOX.encode()),
            (b"accept-language", b"fr-CH, fr;q=0.9"),
        ]
    result: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "query_string": query,
        "headers": [*headers, *extra_headers],
    }
    if client is not None:
        result["client"] = client
    if server is not None:
        result["server"] = server
    if root_path is not None:
        result["root_path"] = root_path
    if raw_path is not None:
        result["raw_path"] = raw_path
    return result


def environ(
    path_info: str = "/",
    *,
    script_name: str = "",
    query: str = "",
    headers: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
    remote_addr: str | None = PEER,
    server: tuple[str, str] | None = ("example.org", "80"),
    scheme: str = "http",
    method: str = "GET",
) -> dict[str, Any]:
    """A WSGI environ (strings are latin-1 decodings of the bytes, as PEP 3333 says)."""
    if headers is None:
        headers = {
            "HTTP_HOST": "example.org",
            "HTTP_USER_AGENT": FIREFOX,
            "HTTP_ACCEPT_LANGUAGE": "fr-CH, fr;q=0.9",
        }
    result: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": scheme,
        "wsgi.input": None,
        **headers,
        **(extra or {}),
    }
    if remote_addr is not None:
        result["REMOTE_ADDR"] = remote_addr
    if server is not None:
        result["SERVER_NAME"], result["SERVER_PORT"] = server
    return result


def wsgi_str(raw: bytes) -> str:
    """How a WSGI server hands over raw bytes: as a latin-1 string."""
    return raw.decode("latin-1")


def config(**overrides: Any) -> TrackingConfig:
    """A config for the tests: Matomo at ``MATOMO``, site 1, anything else overridden."""
    return TrackingConfig(**{"url": MATOMO, **overrides})


def builder(**overrides: Any) -> HitBuilder:
    """A hit builder with the test salt."""
    return HitBuilder(config(**overrides), salt=SALT)


def collector_answer(
    hits: Sequence[Hit],
    *,
    token_auth: str | None = None,
    site_ids: Iterable[int] = (1,),
    now: float = NOW,
) -> tuple[Collector, dict[str, Any]]:
    """Post ``hits`` as one bulk body to a fresh collector (which knows ``TOKEN``); return it
    and its JSON answer."""
    collector = Collector(site_ids=site_ids, token_auth=TOKEN, clock=lambda: now)
    body = bulk_body([encode_hit(h) for h in hits], token_auth=token_auth, now=now)
    status, _, payload = collector.handle("POST", "/matomo.php", "", body)
    assert status == 200, payload
    return collector, json.loads(payload)


def assert_accepted(
    hits: Sequence[Hit], *, token_auth: str | None = None, site_ids: Iterable[int] = (1,)
) -> Collector:
    """Every hit is tracked by the collector, none is invalid."""
    collector, answer = collector_answer(hits, token_auth=token_auth, site_ids=site_ids)
    assert answer["tracked"] == len(hits), collector.invalid
    assert answer["invalid"] == 0, collector.invalid
    return collector
