"""The standard Matomo JavaScript tracking code, generated safely on the server.

``tracking_code(url=..., site_id=...)`` returns the ``<script>`` block Matomo's own
"Tracking code" page shows, with optional configuration pushes (user id, document title,
custom dimensions, ...) placed before ``trackPageView``. Every dynamic value is encoded as
JSON and then made safe inside ``<script>`` (``<``, ``>``, ``&``, U+2028 and U+2029 become
``\\uXXXX`` escapes), so a user name such as ``</script><script>alert(1)</script>`` stays a
string. The result is pure ASCII.

The tracker base URL keeps the scheme it is given: ``https://matomo.example.org`` loads
``matomo.js`` over TLS even from an ``http://`` page; pass ``//matomo.example.org`` for the
protocol-relative form Matomo itself prints. A full ``.../matomo.php`` or ``.../piwik.php``
URL is accepted too (its directory is used). ``token_auth`` is never an input and never
appears in the output: it must not reach browsers.

The result is a ``str`` subclass with ``__html__``, so Jinja2 (with autoescape), MarkupSafe
and Django templates insert it unescaped. ``install_jinja(env, ...)`` adds a
``matomo_tracking_code(...)`` global to a Jinja2 environment (Flask, Starlette, FastAPI);
Django has ``{% load matomo %}{% matomo_tracking_code %}`` in ``matomo_wsgi``.

Only the standard library is used; nothing is imported from Jinja2 or Django.
"""

from __future__ import annotations

import html
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from matomo_tracking.actions import custom_variables_json

if TYPE_CHECKING:
    from matomo_tracking.config import TrackingConfig

__all__ = [
    "JINJA_GLOBAL",
    "TrackingCode",
    "install_jinja",
    "tracker_base",
    "tracking_code",
    "tracking_code_for",
]

#: The name of the Jinja2 global registered by ``install_jinja``.
JINJA_GLOBAL = "matomo_tracking_code"

_ENDPOINT_NAMES = ("matomo.php", "piwik.php")
# Characters that must never appear in a tracker URL: they could end a quoted attribute or
# string, and a backslash is read as "/" by browsers (host confusion).
_URL_FORBIDDEN = frozenset("\"'`<>\\")
_NONCE = re.compile(r"[A-Za-z0-9+/_=-]{1,256}")
_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCRIPT_UNSAFE = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_SCRIPT_UNSAFE_RE = re.compile("[<>&\u2028\u2029]")


class TrackingCode(str):
    """HTML that templates must insert as is: a ``str`` with ``__html__`` (MarkupSafe,
    Jinja2 and Django treat such objects as already safe)."""

    __slots__ = ()

    def __html__(self) -> TrackingCode:
        """This HTML, unchanged (it is safe by construction)."""
        return self


def _fail(key: str, value: object, accepted: str) -> ValueError:
    shown = repr(value)
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return ValueError(f"{key}={shown} is invalid: expected {accepted}")


def _js(value: object) -> str:
    """``value`` as a JSON literal that is safe inside an HTML ``<script>`` element."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return _SCRIPT_UNSAFE_RE.sub(lambda m: _SCRIPT_UNSAFE[m.group()], text)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def tracker_base(url: str, key: str = "url") -> str:
    """The Matomo base URL (ending in ``/``) that ``matomo.js`` and ``matomo.php`` live under.

    Accepts ``http://``, ``https://`` and protocol-relative ``//`` URLs, either the Matomo
    base or its ``matomo.php``/``piwik.php`` endpoint. Raises ``ValueError`` naming ``key``
    for anything else: quotes, backticks, angle brackets, backslashes, whitespace, control or
    invisible format characters (bidi overrides, zero-width), credentials, a query or a fragment.
    """
    if not isinstance(url, str):
        raise _fail(key, url, "an http://, https:// or // URL of the Matomo server")
    if any(c in _URL_FORBIDDEN or c.isspace() or not c.isprintable() for c in url):
        raise _fail(
            key, url, "a URL without quotes, <, >, backslashes, whitespace or control characters"
        )
    lowered = url.lower()
    if not lowered.startswith(("http://", "https://", "//")):
        raise _fail(key, url, "an http://, https:// or // URL of the Matomo server")
    if "?" in url or "#" in url:
        raise _fail(key, url, "a URL without a query string or fragment")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError:
        raise _fail(key, url, "a URL with a valid port") from None
    if not parts.hostname:
        raise _fail(key, url, "a URL with a host name")
    if "@" in parts.netloc:
        raise _fail(key, url, "a URL without user:password@ (browsers would see it)")
    base = url
    if parts.path.rpartition("/")[2] in _ENDPOINT_NAMES:
        base = base.rpartition("/")[0]
    if not base.endswith("/"):
        base += "/"
    return base


def _optional_text(key: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _fail(key, value, "a string or None")
    return value


def _commands(extra_commands: object) -> list[list[object]]:
    accepted = "a list of tracker commands such as [['setDomains', ['*.example.org']]]"
    if isinstance(extra_commands, str | bytes) or not isinstance(extra_commands, Iterable):
        raise _fail("extra_commands", extra_commands, accepted)
    out: list[list[object]] = []
    for command in extra_commands:
        if (
            isinstance(command, str | bytes)
            or not isinstance(command, Sequence)
            or not command
            or not isinstance(command[0], str)
            or not _METHOD.fullmatch(command[0])
        ):
            raise _fail("extra_commands", command, accepted)
        try:
            encoded = json.dumps(list(command), allow_nan=False)
        except (TypeError, ValueError):
            raise _fail(
                "extra_commands",
                command,
                "arguments made of str, int, float, bool, None, list, dict",
            ) from None
        if "token_auth" in encoded:
            raise ValueError("extra_commands must not contain token_auth: it would reach browsers")
        out.append(list(command))
    return out


def tracking_code(
    *,
    url: str,
    site_id: int,
    user_id: str | None = None,
    dimensions: Mapping[int, str] | None = None,
    document_title: str | None = None,
    disable_cookies: bool = False,
    link_tracking: bool = True,
    nonce: str | None = None,
    noscript: bool = False,
    extra_commands: Iterable[Sequence[object]] = (),
    page_variables: Mapping[int, tuple[str, str]] | None = None,
    visit_variables: Mapping[int, tuple[str, str]] | None = None,
) -> TrackingCode:
    """The standard Matomo JavaScript tracking code for one page.

    - ``url``: the Matomo base URL (``https://matomo.example.org/``), its ``matomo.php``
      endpoint, or a protocol-relative ``//matomo.example.org/``. The scheme is kept as given.
    - ``site_id``: the Matomo site id, a positive int.
    - ``user_id``: pushed as ``setUserId`` (None or ``""``: not set).
    - ``dimensions``: ``{dimension id: value}`` pushed as ``setCustomDimension``.
    - ``document_title``: pushed as ``setDocumentTitle`` (None or ``""``: the page title).
    - ``disable_cookies``: push ``disableCookies`` (no tracking cookies are set).
    - ``link_tracking``: push ``enableLinkTracking`` (outlink and download clicks).
    - ``nonce``: the request's Content-Security-Policy nonce, put on the inline ``<script>``
      and on the ``matomo.js`` element it inserts (None or ``""``: no nonce).
    - ``noscript``: add a ``<noscript>`` tracking image for visitors without JavaScript.
    - ``extra_commands``: more ``[method, *args]`` commands, pushed after the ones above and
      before ``trackPageView`` (e.g. ``[["setDomains", ["*.example.org"]]]``).
    - ``page_variables`` / ``visit_variables``: legacy custom variables ``{slot: (name,
      value)}``, pushed as ``setCustomVariable`` in ``page`` / ``visit`` scope (and sent as
      ``cvar`` / ``_cvar`` by the ``<noscript>`` image).

    Every value is validated (``ValueError`` naming the argument) and encoded as JSON made
    safe for ``<script>``. Returns a ``TrackingCode`` (a safe-HTML ``str``).
    """
    base = tracker_base(url)
    if not _positive_int(site_id):
        raise _fail("site_id", site_id, "a positive int")
    user = _optional_text("user_id", user_id)
    title = _optional_text("document_title", document_title)
    dims: dict[int, str] = {}
    if dimensions is not None:
        if not isinstance(dimensions, Mapping):
            raise _fail("dimensions", dimensions, "a mapping of dimension id (int > 0) to str")
        for dim_id, dim_value in dimensions.items():
            if not _positive_int(dim_id) or not isinstance(dim_value, str):
                raise _fail("dimensions", dimensions, "a mapping of dimension id (int > 0) to str")
            dims[dim_id] = dim_value
    for key, flag in (
        ("disable_cookies", disable_cookies),
        ("link_tracking", link_tracking),
        ("noscript", noscript),
    ):
        if not isinstance(flag, bool):
            raise _fail(key, flag, "True or False")
    if nonce is not None and nonce != "":
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise _fail("nonce", nonce, "base64 characters (A-Z a-z 0-9 + / _ - =)")
    else:
        nonce = None
    extra = _commands(extra_commands)
    scoped = {
        "page": _custom_variables("page_variables", page_variables),
        "visit": _custom_variables("visit_variables", visit_variables),
    }

    commands: list[list[object]] = []
    if title is not None:
        commands.append(["setDocumentTitle", title])
    if user is not None:
        commands.append(["setUserId", user])
    commands.extend(["setCustomDimension", dim_id, value] for dim_id, value in sorted(dims.items()))
    for scope, variables in scoped.items():
        commands.extend(
            ["setCustomVariable", slot, name, value, scope]
            for slot, (name, value) in sorted(variables.items())
        )
    if disable_cookies:
        commands.append(["disableCookies"])
    commands.extend(extra)
    commands.append(["trackPageView"])
    if link_tracking:
        commands.append(["enableLinkTracking"])

    nonce_attr = "" if nonce is None else f' nonce="{html.escape(nonce, quote=True)}"'
    nonce_js = "" if nonce is None else f" g.nonce={_js(nonce)};"
    lines = [
        f"<script{nonce_attr}>",
        "  var _paq = window._paq = window._paq || [];",
        *(f"  _paq.push({_js(command)});" for command in commands),
        "  (function() {",
        f"    var u={_js(base)};",
        '    _paq.push(["setTrackerUrl", u+"matomo.php"]);',
        f'    _paq.push(["setSiteId", {_js(str(site_id))}]);',
        '    var d=document, g=d.createElement("script"), s=d.getElementsByTagName("script")[0];',
        f'    g.async=true; g.src=u+"matomo.js";{nonce_js} s.parentNode.insertBefore(g,s);',
        "  })();",
        "</script>",
    ]
    if noscript:
        lines.append(_noscript(base, site_id, user, title, dims, scoped))
    return TrackingCode("\n".join(lines) + "\n")


def _custom_variables(key: str, value: object) -> dict[int, tuple[str, str]]:
    if value is None:
        return {}
    accepted = "a mapping of slot (int > 0) to a (name, value) pair of strings"
    if not isinstance(value, Mapping):
        raise _fail(key, value, accepted)
    variables: dict[int, tuple[str, str]] = {}
    for slot, pair in value.items():
        if (
            not _positive_int(slot)
            or not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not all(isinstance(part, str) for part in pair)
        ):
            raise _fail(key, value, accepted)
        variables[slot] = (pair[0], pair[1])
    return variables


def _noscript(
    base: str,
    site_id: int,
    user: str | None,
    title: str | None,
    dims: Mapping[int, str],
    scoped: Mapping[str, Mapping[int, tuple[str, str]]],
) -> str:
    # What Matomo reads from an image request: the page URL and the visitor's user agent and
    # language come from the request itself (its Referer and headers), so they are not sent.
    params: list[tuple[str, str]] = [("idsite", str(site_id)), ("rec", "1")]
    if title is not None:
        params.append(("action_name", title))
    if user is not None:
        params.append(("uid", user))
    params.extend((f"dimension{dim_id}", value) for dim_id, value in sorted(dims.items()))
    for scope, key in (("page", "cvar"), ("visit", "_cvar")):
        variables = scoped[scope]
        if variables:
            params.append((key, custom_variables_json(variables, max(variables))))
    # Lone surrogates cannot be UTF-8 encoded; they become "?" (Matomo could not store them).
    query = "&".join(
        f"{name}={quote(value.encode('utf-8', 'replace'), safe='')}" for name, value in params
    )
    src = html.escape(f"{base}matomo.php?{query}", quote=True)
    return (
        '<noscript><img referrerpolicy="no-referrer-when-downgrade"'
        f' src="{src}" style="border:0" alt=""></noscript>'
    )


def tracking_code_for(config: TrackingConfig, **kwargs: Any) -> TrackingCode:
    """``tracking_code`` with ``url`` and ``site_id`` taken from a ``TrackingConfig``.

    Keyword arguments are those of ``tracking_code`` and win over the config. A config whose
    ``site_id`` is a callable (multi-site apps) needs an explicit ``site_id=``. Nothing else is
    read from the config; in particular its ``token_auth`` never reaches the output.
    """
    options: dict[str, Any] = {"url": config.url}
    if not callable(config.site_id):
        options["site_id"] = config.site_id
    elif "site_id" not in kwargs:
        raise ValueError(
            "site_id is required: the config's site_id is a callable of the request, "
            "pass site_id=<int> for the page"
        )
    options.update(kwargs)
    return tracking_code(**options)


_PARAMETERS = frozenset(inspect.signature(tracking_code).parameters)


def _check_keys(where: str, keys: Iterable[str]) -> None:
    unknown = sorted(set(keys) - _PARAMETERS)
    if unknown:
        raise TypeError(
            f"{where}: unknown argument(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(_PARAMETERS))}"
        )


def install_jinja(env: Any, **defaults: Any) -> Callable[..., TrackingCode]:
    """Register the ``matomo_tracking_code(**overrides)`` global in a Jinja2 environment.

    ``defaults`` are ``tracking_code`` arguments (usually ``url`` and ``site_id``); the
    arguments given in the template win. The result is marked safe, so autoescaping leaves
    it alone. Returns the registered function.

    Flask::

        from matomo_tracking.snippet import install_jinja
        install_jinja(app.jinja_env, url="https://matomo.example.org", site_id=1)

    Starlette / FastAPI::

        templates = Jinja2Templates(directory="templates")
        install_jinja(templates.env, url="https://matomo.example.org", site_id=1)

    In a template::

        {{ matomo_tracking_code(user_id=user.name, nonce=csp_nonce) }}
    """
    _check_keys("install_jinja", defaults)
    if "url" in defaults:
        tracker_base(defaults["url"])  # fail at start-up, not on the first page
    fixed = dict(defaults)

    def matomo_tracking_code(**overrides: Any) -> TrackingCode:
        """The Matomo JavaScript tracking code (see ``matomo_tracking.snippet.tracking_code``)."""
        _check_keys(JINJA_GLOBAL, overrides)
        return tracking_code(**{**fixed, **overrides})

    env.globals[JINJA_GLOBAL] = matomo_tracking_code
    return matomo_tracking_code
