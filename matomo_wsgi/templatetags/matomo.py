"""``{% load matomo %}{% matomo_tracking_code %}``: the Matomo JavaScript tracking code in
Django templates.

The Matomo URL and site id come from ``settings.MATOMO_API_TRACKING`` (the dict the Django
middleware reads): ``url`` and ``site_id``, and optionally ``js_url``, the base URL browsers
load ``matomo.js`` from when it differs from the one the server posts hits to (an internal
address, for instance). Keyword arguments of the tag::

    {% matomo_tracking_code user_id=request.user.get_username title=page.title nonce=csp_nonce %}
    {% matomo_tracking_code dimension1=plan dimension2="beta" noscript=True %}

``site_id``, ``user_id``, ``title`` (or ``document_title``), ``dimensions`` (a mapping) or
``dimension<N>``, ``disable_cookies``, ``link_tracking``, ``nonce``, ``noscript``,
``extra_commands``, ``page_variables`` and ``visit_variables`` are those of
``matomo_tracking.snippet.tracking_code``. Template values
are loosely typed, so ``user_id``, ``title``, ``nonce`` and dimension values are turned into
strings (an anonymous user's empty name sets no user id). ``token_auth`` is never used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django import template
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.safestring import SafeString

from matomo_tracking.snippet import TrackingCode, tracker_base, tracking_code

__all__ = ["matomo_tracking_code", "register", "tracking_code_from_settings"]

register = template.Library()

_SETTING = "MATOMO_API_TRACKING"
_DIMENSION = re.compile(r"dimension([1-9][0-9]{0,5})")
_PASSED = frozenset(
    {
        "site_id",
        "disable_cookies",
        "link_tracking",
        "noscript",
        "extra_commands",
        "dimensions",
        "page_variables",
        "visit_variables",
    }
)
_TEXT = {"user_id": "user_id", "title": "document_title", "document_title": "document_title"}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def tracking_code_from_settings(options: Mapping[str, Any] | None, **kwargs: Any) -> TrackingCode:
    """The tracking code for ``options`` (the ``MATOMO_API_TRACKING`` dict) and the tag's
    keyword arguments. Raises ``ImproperlyConfigured`` when the setting is missing or has no
    URL, ``ValueError`` for invalid values and ``TypeError`` for unknown arguments."""
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(
            f"settings.{_SETTING} must be a dict with at least 'url' (and 'site_id') "
            "to render {% matomo_tracking_code %}"
        )
    key = "js_url" if options.get("js_url") else "url"
    url = options.get(key)
    if not url:
        raise ImproperlyConfigured(f"settings.{_SETTING}['url'] is required (the Matomo base URL)")
    arguments: dict[str, Any] = {"url": tracker_base(url, key=f"{_SETTING}[{key!r}]")}
    site_id = options.get("site_id", 1)
    if not callable(site_id):
        arguments["site_id"] = site_id
    elif "site_id" not in kwargs:
        raise ValueError(
            f"settings.{_SETTING}['site_id'] is a callable of the request: "
            "pass site_id=... to {% matomo_tracking_code %}"
        )
    dimensions: dict[int, str] = {}
    for name, value in kwargs.items():
        match = _DIMENSION.fullmatch(name)
        if match:
            if value is not None and value != "":
                dimensions[int(match.group(1))] = str(value)
        elif name in _TEXT:
            arguments[_TEXT[name]] = _text(value)
        elif name == "nonce":
            arguments["nonce"] = _text(value)
        elif name in _PASSED:
            arguments[name] = value
        else:
            raise TypeError(
                f"matomo_tracking_code: unknown argument {name!r}; accepted: dimension<N>, "
                f"{', '.join(sorted(_PASSED | set(_TEXT) | {'nonce'}))}"
            )
    if dimensions:
        given = arguments.get("dimensions")
        if given is not None and not isinstance(given, Mapping):
            raise ValueError(f"dimensions={given!r} is invalid: expected a mapping")
        arguments["dimensions"] = {**(given or {}), **dimensions}
    return tracking_code(**arguments)


@register.simple_tag
def matomo_tracking_code(**kwargs: Any) -> SafeString:
    """The Matomo JavaScript tracking code, configured by ``settings.MATOMO_API_TRACKING``."""
    code = tracking_code_from_settings(getattr(settings, _SETTING, None), **kwargs)
    # A SafeString, not just __html__: Django's string filters (|escape, |upper, ...) keep it
    # safe only then.
    return SafeString(code)
