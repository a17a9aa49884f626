"""Who the visitor is, as far as trusted proxies say: client IP, scheme and host.

Forwarded headers are attacker-controlled unless the hop that added them is one we trust.
They are read from the right (the hop nearest to us) and every hop that is itself a trusted
proxy is skipped; the first untrusted address is the client. With no trusted proxies, no
forwarded header changes anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from matomo_tracking.request import RequestView

__all__ = ["Origin", "TrustedProxies", "anonymize_ip", "parse_ip"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:[]")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Origin:
    """The client address, scheme and host of a request after proxy resolution."""

    client_ip: str | None
    scheme: str
    host: str


def parse_ip(text: str | None) -> IPAddress | None:
    """Parse an address as a server or proxy writes it (``[v6]:port``, ``v4:port``, zone ids).

    Returns None for anything that is not an IP address.
    """
    if not text:
        return None
    value = text.strip().strip('"')
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    value = value.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def anonymize_ip(address: str, masked_bytes: int) -> str:
    """Mask the last ``masked_bytes`` (1-3) bytes of an IPv4 address; for IPv6, mask the last
    64, 80 or 104 bits (keep the first 64, 48 or 24), as Matomo's ``IPv6::anonymize`` does.
    """
    ip = ipaddress.ip_address(address)
    if masked_bytes <= 0:
        return str(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        prefix = 32 - 8 * masked_bytes
    else:
        prefix = {1: 64, 2: 48, 3: 24}[masked_bytes]
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


def _host_is_valid(host: str) -> bool:
    return 0 < len(host) <= 255 and all(c in _HOST_CHARS for c in host)


def _split_unquoted(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` where it is not inside a quoted string."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _forwarded_pairs(value: str) -> list[dict[str, str]]:
    """Parse an RFC 7239 ``Forwarded`` header into one parameter dict per hop (never raises:
    what is not a ``name=value`` pair is ignored)."""
    hops: list[dict[str, str]] = []
    for element in _split_unquoted(value, ","):
        params: dict[str, str] = {}
        for pair in _split_unquoted(element, ";"):
            key, sep, val = pair.partition("=")
            if not sep:
                continue
            val = val.strip()
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = _QUOTED_PAIR.sub(r"\1", val[1:-1])
            params[key.strip().lower()] = val
        hops.append(params)
    return hops


class TrustedProxies:
    """Resolve the origin of a request, believing forwarded headers only from trusted peers."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: IPAddress | None) -> bool:
        """Whether ``address`` belongs to a trusted proxy."""
        if address is None:
            return False
        return any(address.version == n.version and address in n for n in self._networks)

    def resolve(self, request: RequestView) -> Origin:
        """The client IP, scheme and host of ``request``."""
        peer = parse_ip(request.client)
        host = request.header("host") or _server_host(request)
        if not _host_is_valid(host):
            host = _server_host(request)
        scheme = request.scheme
        if not self._networks or not self.trusts(peer):
            return Origin(str(peer) if peer is not None else None, scheme, host)

        forwarded = request.header("forwarded")
        if forwarded:
            hops = _forwarded_pairs(forwarded)
            client, hop = self._walk([h.get("for", "") for h in hops], peer)
            params = hops[hop] if hop is not None else {}
            proto = params.get("proto", "").lower()
            fhost = params.get("host", "")
        else:
            xff = request.header("x-forwarded-for")
            client, _ = self._walk(xff.split(",") if xff else [], peer)
            # X-Forwarded-Proto/Host carry one value per hop in the same order; only the
            # value added by the nearest trusted proxy is believed.
            proto = request.header("x-forwarded-proto").rsplit(",", 1)[-1].strip().lower()
            fhost = request.header("x-forwarded-host").rsplit(",", 1)[-1].strip()
        if proto in ("http", "https"):
            scheme = proto
        if fhost and _host_is_valid(fhost):
            host = fhost
        return Origin(str(client) if client is not None else None, scheme, host)

    def _walk(
        self, entries: list[str], peer: IPAddress | None
    ) -> tuple[IPAddress | None, int | None]:
        client = peer
        index: int | None = None
        for i in range(len(entries) - 1, -1, -1):
            address = parse_ip(entries[i])
            if address is None:
                # Garbage or an obfuscated identifier: stop believing anything further left.
                break
            client, index = address, i
            if not self.trusts(address):
                break
        return client, index


def _server_host(request: RequestView) -> str:
    if request.server is None:
        return "localhost"
    name, port = request.server
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    default = 443 if request.scheme == "https" else 80
    return name if port is None or port == default else f"{name}:{port}"
