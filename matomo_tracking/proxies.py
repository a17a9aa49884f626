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

__all__ = ["Origin", "TrustedProxies", "anonymize_ip", "host_allowed", "parse_ip", "pin_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A host as it may appear in a tracked URL: a name or an IPv4 address, or an IPv6 address in
# brackets, with an optional port. Anything else (``a@evil/x?``, spaces) is refused.
_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+|\[(?P<v6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[0-9]{1,5}))?")
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_PEER_CACHE_SIZE = 4096
# A canonical IPv4 address (what servers report), which is its own text once parsed.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"  # no leading zero, as ipaddress
_DOTTED_QUAD = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_MAX_CACHED_PEER = 64  # "[v6%zone]:port" fits; longer is not an address a server reports


@dataclass(slots=True, unsafe_hash=True)  # not frozen, one per request: see RequestView
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
    match = _HOST.fullmatch(host) if 0 < len(host) <= 255 else None
    if match is None:
        return False
    port = match["port"]
    if port is not None and int(port) > 65535:
        return False
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            return False
    return True


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

    __slots__ = ("_networks", "_peers")

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )
        # Peer addresses repeat (keep-alive, proxies, returning visitors) and parsing one is
        # most of the cost of resolve(): remember the last few thousand.
        self._peers: dict[str, tuple[IPAddress | None, str | None]] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: IPAddress | None) -> bool:
        """Whether ``address`` belongs to a trusted proxy."""
        if address is None:
            return False
        return any(address.version == n.version and address in n for n in self._networks)

    def resolve(self, request: RequestView) -> Origin:
        """The client IP, scheme and host of ``request``."""
        peer, peer_text = self._peer(request.client)
        host = request.header("host") or _server_host(request)
        if not _host_is_valid(host):
            host = _server_host(request)
        scheme = request.scheme
        if not self._networks or not self.trusts(peer):
            return Origin(peer_text, scheme, host)

        xff = request.header("x-forwarded-for")
        client, _ = self._walk(xff.split(",") if xff else [], peer)
        # X-Forwarded-Proto/Host carry one value per hop in the same order; only the value
        # added by the nearest trusted proxy is believed.
        proto = request.header("x-forwarded-proto").rsplit(",", 1)[-1].strip().lower()
        fhost = request.header("x-forwarded-host").rsplit(",", 1)[-1].strip()
        forwarded = request.header("forwarded")
        if forwarded:
            hops = _forwarded_pairs(forwarded)
            f_client, hop = self._walk([h.get("for", "") for h in hops], peer)
            params = hops[hop] if hop is not None else {}
            f_proto = params.get("proto", "").lower()
            f_host = params.get("host", "")
            # A proxy usually adds one kind of header and passes the other on as the client
            # sent it (nginx appends X-Forwarded-For and forwards any Forwarded header), so
            # Forwarded wins, but where the X-Forwarded-* headers name the same value
            # differently, neither is believed.
            client = f_client if not xff or client == f_client else peer
            proto = f_proto if not proto or proto == f_proto else ""
            fhost = f_host if not fhost or fhost.lower() == f_host.lower() else ""
        if proto in ("http", "https"):
            scheme = proto
        if fhost and _host_is_valid(fhost):
            host = fhost
        return Origin(str(client) if client is not None else None, scheme, host)

    def _peer(self, client: str | None) -> tuple[IPAddress | None, str | None]:
        """``parse_ip(client)`` and its text, remembered for short addresses. Without trusted
        proxies only the text is ever used, and a canonical IPv4 address is not parsed (the
        address is then None)."""
        if client is None:
            return None, None
        known = self._peers.get(client)
        if known is not None:
            return known
        if not self._networks and _DOTTED_QUAD.fullmatch(client) is not None:
            known = (None, client)
        else:
            peer = parse_ip(client)
            known = (peer, str(peer) if peer is not None else None)
        if len(client) <= _MAX_CACHED_PEER:
            if len(self._peers) >= _PEER_CACHE_SIZE:
                self._peers.clear()  # atomic, unlike evicting one entry across threads
            self._peers[client] = known
        return known

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


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``host`` (port ignored) matches one of ``allowed`` (lower-case names, or
    ``*.example.org`` for the domain and its subdomains)."""
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


def pin_host(origin: Origin, base_url: str | None, allowed_hosts: tuple[str, ...]) -> Origin:
    """``origin`` with its host pinned: no scheme or host with a ``base_url`` (the URL is made
    from it), the first allowed host when the request's is not in ``allowed_hosts``."""
    if base_url is not None:
        return Origin(origin.client_ip, "", "")
    if allowed_hosts and not host_allowed(origin.host, allowed_hosts):
        return Origin(origin.client_ip, origin.scheme, allowed_hosts[0].lstrip("*."))
    return origin


def _server_host(request: RequestView) -> str:
    # Some servers make the server address from the Host header (gunicorn on a unix socket
    # sets SERVER_NAME from it), so it is checked like one: "localhost" if it is not a host.
    if request.server is None:
        return "localhost"
    name, port = request.server
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    default = 443 if request.scheme == "https" else 80
    host = name if port is None or port == default else f"{name}:{port}"
    return host if _host_is_valid(host) else "localhost"
