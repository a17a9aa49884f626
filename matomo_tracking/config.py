"""Validated, frozen configuration shared by every adapter, tracker and dispatcher."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal, TypedDict
from urllib.parse import parse_qsl, urlsplit, urlunsplit

if TYPE_CHECKING:
    from typing_extensions import Required

    from matomo_tracking.request import RequestView

__all__ = [
    "DEFAULT_REDACTED_QUERY_PARAMS",
    "BotMode",
    "Sender",
    "TrackingConfig",
    "TrackingOptions",
    "endpoint_url",
    "masked_url",
]

BotMode = Literal["exclude", "visits", "bot-reports"]
Sender = Literal["app", "external"]

#: Query-string parameter names whose values are replaced by ``REDACTED`` in tracked URLs.
DEFAULT_REDACTED_QUERY_PARAMS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth",
        "auth_token",
        "token_auth",
        "api_key",
        "apikey",
        "key",
        "secret",
        "client_secret",
        "session",
        "sessionid",
        "signature",
        "sig",
        "code",
    }
)

_ENDPOINT_NAMES = ("matomo.php", "piwik.php", "proxy-matomo.php")
_BOT_MODES = ("exclude", "visits", "bot-reports")


def endpoint_url(url: str) -> str:
    """Return the tracking endpoint for a Matomo base URL or a full ``matomo.php`` URL."""
    parts = urlsplit(url)
    path = parts.path
    if any(path.endswith("/" + name) or path == name for name in _ENDPOINT_NAMES):
        return url
    base = url.split("?", 1)[0].split("#", 1)[0]
    if not base.endswith("/"):
        base += "/"
    return base + "matomo.php"


def masked_url(url: str) -> str:
    """``url`` as reprs and logs show it: the password of credentials in it as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.netloc.rpartition("@")[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}"))


def _fail(key: str, value: object, accepted: str, *, hidden: bool = False) -> ValueError:
    if isinstance(value, str) and key in ("url", "base_url"):
        value = masked_url(value)
    shown = "'***'" if hidden or key in ("token_auth", "visitor_salt") else repr(value)
    return ValueError(f"{key}={shown} is invalid: expected {accepted}")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackingConfig:
    """Everything the middleware, trackers and dispatchers are configured with.

    Every value is checked at construction; a bad one raises ``ValueError`` naming the key,
    the value and what is accepted. ``token_auth`` is left out of ``repr``, and a password in
    ``url`` masked.
    """

    url: str
    site_id: int | Callable[[RequestView], int] = 1
    token_auth: str | None = field(default=None, repr=False)
    # request filters
    ignore_paths: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()
    ignore_methods: frozenset[str] = frozenset({"OPTIONS", "HEAD"})
    ignore_html: bool = False
    ignore_status_codes: frozenset[int] = frozenset()
    ignore_user_agents: tuple[str, ...] = ()
    ignore_bots: bool | frozenset[str] = False
    sample_rate: float = 1.0
    # origin
    trusted_proxies: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    base_url: str | None = None
    # identity and privacy
    visitor_salt: str | None = field(default=None, repr=False)
    respect_dnt: bool = False
    respect_gpc: bool = False
    anonymize_ip: int = 0
    redact_query_params: frozenset[str] = DEFAULT_REDACTED_QUERY_PARAMS
    redact_query: Callable[[str], bool] | None = None
    # content of the hit
    dimensions: Mapping[int, str] = field(default_factory=dict)
    status_dimension: int | None = None
    method_dimension: int | None = None
    bytes_dimension: int | None = None
    max_custom_variables: int = 5
    bots: BotMode = "exclude"
    bot_source: str | None = None
    user_id: Callable[[RequestView], str | None] | None = None
    action_name: Callable[[RequestView], str | None] | None = None
    # delivery
    batch_max_hits: int = 100
    batch_max_bytes: int = 512 * 1024
    batch_max_age: float = 1.0
    queue_max_hits: int = 10_000
    queue_max_bytes: int = 32 * 1024 * 1024
    connect_timeout: float = 2.0
    timeout: float = 30.0
    probe_interval: float = 2.0
    shutdown_timeout: float = 5.0
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    max_hit_age: float = 23 * 3600.0
    sync_mode: bool = False
    max_concurrent_batches: int = 64
    # durable journal and the sender outside the app
    spool: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    sender: Sender = "app"

    def __post_init__(self) -> None:
        _check_url("url", self.url)
        if self.base_url is not None:
            _check_url("base_url", self.base_url)
        if isinstance(self.site_id, bool) or not (
            callable(self.site_id) or (isinstance(self.site_id, int) and self.site_id > 0)
        ):
            raise _fail("site_id", self.site_id, "a positive int or a callable of the request view")
        if self.token_auth is not None and (
            not isinstance(self.token_auth, str) or not self.token_auth.strip()
        ):
            raise _fail("token_auth", self.token_auth, "a non-empty string or None")
        if self.visitor_salt is not None and (
            not isinstance(self.visitor_salt, str) or not self.visitor_salt
        ):
            raise _fail("visitor_salt", self.visitor_salt, "a non-empty string or None")
        object.__setattr__(self, "ignore_paths", _paths(self.ignore_paths))
        object.__setattr__(self, "ignore_patterns", _patterns(self.ignore_patterns))
        methods = _strs("ignore_methods", self.ignore_methods)
        object.__setattr__(self, "ignore_methods", frozenset(m.upper() for m in methods))
        object.__setattr__(self, "ignore_status_codes", _status_codes(self.ignore_status_codes))
        object.__setattr__(
            self, "ignore_user_agents", _patterns(self.ignore_user_agents, key="ignore_user_agents")
        )
        object.__setattr__(self, "trusted_proxies", _networks(self.trusted_proxies))
        hosts = _strs("allowed_hosts", self.allowed_hosts)
        object.__setattr__(self, "allowed_hosts", tuple(h.lower() for h in hosts))
        object.__setattr__(
            self,
            "redact_query_params",
            frozenset(p.lower() for p in _strs("redact_query_params", self.redact_query_params)),
        )
        for key in ("ignore_html", "respect_dnt", "respect_gpc", "sync_mode"):
            if not isinstance(getattr(self, key), bool):
                raise _fail(key, getattr(self, key), "True or False")
        object.__setattr__(self, "ignore_bots", _bot_categories(self.ignore_bots))
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise _fail("sample_rate", rate, "a number from 0 to 1")
        if type(self.anonymize_ip) is not int or self.anonymize_ip not in (0, 1, 2, 3):
            raise _fail("anonymize_ip", self.anonymize_ip, "0 (off), 1, 2 or 3 bytes to mask")
        object.__setattr__(self, "dimensions", _dimensions(self.dimensions))
        for key in ("status_dimension", "method_dimension", "bytes_dimension"):
            value = getattr(self, key)
            if value is not None and not _positive_int(value):
                raise _fail(key, value, "a positive custom dimension id or None")
        if not _positive_int(self.max_custom_variables):
            raise _fail("max_custom_variables", self.max_custom_variables, "a positive int")
        if self.bots not in _BOT_MODES:
            raise _fail("bots", self.bots, "'exclude', 'visits' or 'bot-reports'")
        if self.bot_source is not None and (
            not isinstance(self.bot_source, str) or not 0 < len(self.bot_source) <= 50
        ):
            raise _fail("bot_source", self.bot_source, "a string of 1 to 50 characters")
        for key in ("user_id", "action_name"):
            value = getattr(self, key)
            if value is not None and not callable(value):
                raise _fail(key, value, "a callable of the request view, or None")
        if self.redact_query is not None and not callable(self.redact_query):
            raise _fail(
                "redact_query",
                self.redact_query,
                "a callable of a parameter name returning a bool, or None",
            )
        for key in (
            "batch_max_hits",
            "batch_max_bytes",
            "queue_max_hits",
            "queue_max_bytes",
            "max_concurrent_batches",
        ):
            if not _positive_int(getattr(self, key)):
                raise _fail(key, getattr(self, key), "a positive int")
        for key in (
            "batch_max_age",
            "connect_timeout",
            "timeout",
            "probe_interval",
            "shutdown_timeout",
            "backoff_base",
            "backoff_max",
            "max_hit_age",
        ):
            value = getattr(self, key)
            # ``not value > 0`` also refuses NaN
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise _fail(key, value, "a positive number of seconds")
        if self.batch_max_hits > self.queue_max_hits:
            raise _fail("batch_max_hits", self.batch_max_hits, "at most queue_max_hits")
        self._check_spool()

    def _check_spool(self) -> None:
        spool = self.spool
        if isinstance(spool, PurePath):
            spool = str(spool)
            object.__setattr__(self, "spool", spool)
        if spool is not None and (
            not isinstance(spool, str)
            or not spool.strip()
            or "\x00" in spool
            or spool == ":memory:"
        ):
            raise _fail("spool", spool, "a file path (str or pathlib.Path) or None")
        if not _positive_int(self.spool_max_bytes):
            raise _fail("spool_max_bytes", self.spool_max_bytes, "a positive int")
        if self.sender not in ("app", "external"):
            raise _fail("sender", self.sender, "'app' or 'external'")
        if self.sender == "external" and spool is None:
            raise ValueError(
                "sender='external' needs spool=...: the app then only writes hits to that "
                "journal, which `matomo-middleware send --spool PATH` delivers"
            )
        if spool is not None and self.sync_mode:
            raise ValueError(
                "spool=... and sync_mode=True contradict each other: sync_mode sends each hit "
                "inline, a journal keeps hits for the background (or an external sender)"
            )

    def __repr__(self) -> str:  # the dataclass's own, with a password in ``url`` masked
        shown = (
            f"{f.name}={masked_url(self.url) if f.name == 'url' else getattr(self, f.name)!r}"
            for f in fields(self)
            if f.repr
        )
        return f"TrackingConfig({', '.join(shown)})"

    @property
    def endpoint(self) -> str:
        """The ``matomo.php`` URL hits are posted to."""
        return endpoint_url(self.url)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> TrackingConfig:
        """Build a config from keyword arguments, naming any unknown key in the error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(
                f"unknown configuration key(s): {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(known))}"
            )
        if "url" not in kwargs:
            raise ValueError("url is required: the Matomo base URL or its matomo.php endpoint")
        return cls(**kwargs)  # validation converts iterables and names any bad key


_BOT_CATEGORIES = frozenset({"ai", "search", "preview", "monitor", "seo", "library", "other"})


def _bot_categories(value: object) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    accepted = "True, False, or bot categories to skip: " + ", ".join(sorted(_BOT_CATEGORIES))
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _fail("ignore_bots", value, accepted)
    categories = frozenset(value)
    if not categories <= _BOT_CATEGORIES:
        raise _fail("ignore_bots", value, accepted)
    return categories


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_url(key: str, value: object) -> None:
    if not isinstance(value, str):
        raise _fail(key, value, "an http:// or https:// URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(key, value, "an http:// or https:// URL with a host")
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise _fail(key, value, "a URL without whitespace or control characters")
    names = (name for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    if any(name.strip().lower() == "token_auth" for name in names):
        # A token in a URL travels in every request line and lands in access logs.
        raise _fail(key, value, "a URL without token_auth: pass it as token_auth=...", hidden=True)


def _strs(key: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise _fail(key, values, "a list of strings")
    out = tuple(values)
    for item in out:
        if not isinstance(item, str):
            raise _fail(key, values, "a list of strings")
    return out


def _paths(values: object) -> tuple[str, ...]:
    paths = _strs("ignore_paths", values)
    for path in paths:
        if not path.startswith("/"):
            raise _fail("ignore_paths", values, "path prefixes starting with '/'")
    return tuple(p.rstrip("/") or "/" for p in paths)


def _patterns(values: object, key: str = "ignore_patterns") -> tuple[str, ...]:
    patterns = _strs(key, values)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _fail(key, pattern, f"valid regular expressions ({exc})") from None
    return patterns


def _status_codes(values: object) -> frozenset[int]:
    if not isinstance(values, Iterable) or isinstance(values, str):
        raise _fail("ignore_status_codes", values, "a set of HTTP status codes (100-599)")
    out = frozenset(values)
    for code in out:
        if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
            raise _fail("ignore_status_codes", values, "a set of HTTP status codes (100-599)")
    return out


def _networks(values: object) -> tuple[str, ...]:
    items = _strs("trusted_proxies", values)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise _fail("trusted_proxies", item, "IP addresses or CIDR networks") from None
    return items


def _dimensions(values: object) -> Mapping[int, str]:
    if not isinstance(values, Mapping):
        raise _fail("dimensions", values, "a mapping of dimension id (int > 0) to value (str)")
    for key, value in values.items():
        if not _positive_int(key) or not isinstance(value, str):
            raise _fail("dimensions", values, "a mapping of dimension id (int > 0) to value (str)")
    return dict(values)


class TrackingOptions(TypedDict, total=False):
    """The keyword arguments of every ``MatomoMiddleware`` and tracker (see ``TrackingConfig``)."""

    url: Required[str]
    site_id: int | Callable[[RequestView], int]
    token_auth: str | None
    ignore_paths: Iterable[str]
    ignore_patterns: Iterable[str]
    ignore_methods: Iterable[str]
    ignore_html: bool
    ignore_status_codes: Iterable[int]
    ignore_user_agents: Iterable[str]
    ignore_bots: bool | Iterable[str]
    sample_rate: float
    trusted_proxies: Iterable[str]
    allowed_hosts: Iterable[str]
    base_url: str | None
    visitor_salt: str | None
    respect_dnt: bool
    respect_gpc: bool
    anonymize_ip: int
    redact_query_params: Iterable[str]
    redact_query: Callable[[str], bool] | None
    dimensions: Mapping[int, str]
    status_dimension: int | None
    method_dimension: int | None
    bytes_dimension: int | None
    max_custom_variables: int
    bots: BotMode
    bot_source: str | None
    user_id: Callable[[RequestView], str | None] | None
    action_name: Callable[[RequestView], str | None] | None
    batch_max_hits: int
    batch_max_bytes: int
    batch_max_age: float
    queue_max_hits: int
    queue_max_bytes: int
    connect_timeout: float
    timeout: float
    probe_interval: float
    shutdown_timeout: float
    backoff_base: float
    backoff_max: float
    max_hit_age: float
    sync_mode: bool
    max_concurrent_batches: int
    spool: str | PurePath | None
    spool_max_bytes: int
    sender: Sender
