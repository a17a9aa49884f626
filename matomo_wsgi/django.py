"""Django middleware, configured by ``settings.MATOMO_API_TRACKING``.

```python
MATOMO_API_TRACKING = {"url": "https://matomo.example.org", "site_id": 1}
MIDDLEWARE = ["matomo_wsgi.django.MatomoMiddleware", ...]
```

It reads the keys of the older ``django-matomo-api-tracking`` app (``url``, ``site_id``,
``ignore_paths``, ``token_auth``, ``ignore_html``, ``ignore_status_codes``, ``timeout``,
``url_masks``) and every ``TrackingConfig`` option, plus ``dispatcher`` (an object or a dotted
path to one) and ``http_client`` (an ``httpx.Client``); ``js_url`` belongs to the
``{% matomo_tracking_code %}`` tag. The older app's other keys are accepted with a warning
naming what replaces them. As settings often come from the environment, numeric keys also take
their value as text (``"timeout": "8"``) and an empty ``token_auth`` or ``visitor_salt`` means
none. Sync and async: under Django's ASGI handler it runs on the event loop, no thread hop.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote

import httpx
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from matomo_tracking.config import TrackingConfig
from matomo_tracking.dispatcher import Dispatcher
from matomo_tracking.flow import Pending
from matomo_tracking.request import (
    RequestView,
    request_from_asgi,
    request_from_wsgi,
    wsgi_app_path,
)
from matomo_wsgi.dispatcher import ThreadDispatcher
from matomo_wsgi.middleware import wsgi_flow
from matomo_wsgi.routes import django_route

__all__ = ["SETTING", "MatomoMiddleware", "authenticated_user_id", "config_from_settings"]

#: The name of the Django setting.
SETTING = "MATOMO_API_TRACKING"

# Keys of django-matomo-api-tracking that mean nothing here, and what replaces them.
_LEGACY_KEYS = {
    "backend": (
        "hits are delivered in bulk by a background thread in each process; to deliver them "
        "some other way set 'dispatcher'"
    ),
    "redis_url": (
        "batching is built in (batch_max_hits, batch_max_bytes, batch_max_age): no Redis and "
        "no periodic Celery task are needed"
    ),
    "redis_key": (
        "batching is built in (batch_max_hits, batch_max_bytes, batch_max_age): no Redis and "
        "no periodic Celery task are needed"
    ),
}
# Keys of the same dict read by others: the template tag's base URL for browsers.
_OTHER_KEYS = ("js_url",)
# Options whose value may be given as text here (settings filled from the environment).
_NUMBER_TYPES = {"int": int, "float": float, "int | None": int}
_NUMERIC_KEYS = {
    f.name: _NUMBER_TYPES[str(f.type)]
    for f in dataclasses.fields(TrackingConfig)
    if str(f.type) in _NUMBER_TYPES
}
_EMPTY_MEANS_NONE = ("token_auth", "visitor_salt", "base_url", "bot_source")
# What an encoded URL path keeps as is when a masked path is encoded again.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"

_UrlMasks = tuple[tuple["re.Pattern[str]", str], ...]


def _legacy(message: str) -> None:
    warnings.warn(f"{SETTING}: {message}", UserWarning, stacklevel=4)


def config_from_settings(
    value: object,
) -> tuple[TrackingConfig, Dispatcher | None, httpx.Client | None]:
    """The config, dispatcher and HTTP client that a ``MATOMO_API_TRACKING`` dict describes.

    Raises ``ImproperlyConfigured`` naming the first bad key; warns (``UserWarning``) about
    the older app's keys that have no meaning here.
    """
    if value is None:
        raise ImproperlyConfigured(
            f"{SETTING} is not set: add {SETTING} = {{'url': 'https://matomo.example.org', "
            "'site_id': 1}} to your settings"
        )
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"{SETTING} must be a dict of options, got {type(value).__name__}"
        )
    options: dict[str, Any] = {k: v for k, v in value.items() if k not in _OTHER_KEYS}
    for key, replacement in _LEGACY_KEYS.items():
        if key in options:
            del options[key]
            _legacy(f"'{key}' is ignored: {replacement}")
    if "ignore_path" in options:
        extra = options.pop("ignore_path")
        _legacy("'ignore_path' is read as 'ignore_paths'; rename it")
        extra_paths = [extra] if isinstance(extra, str) else list(extra or ())
        options["ignore_paths"] = [*options.get("ignore_paths", ()), *extra_paths]
    if getattr(settings, "CUSTOM_UIP_HEADER", None):
        _legacy(
            "settings.CUSTOM_UIP_HEADER is ignored: list your proxies in 'trusted_proxies' and "
            "the client address is read from X-Forwarded-For / Forwarded when they send it"
        )
    site_id = options.get("site_id")
    if isinstance(site_id, str) and site_id.strip().isdigit():
        options["site_id"] = int(site_id)  # the older app passed it through as text
    _from_text(options)
    options.pop("url_masks", None)  # applied by the middleware to the page URL's path
    _url_masks(value)  # a bad one is named at startup
    dispatcher = options.pop("dispatcher", None)
    if isinstance(dispatcher, str):
        try:
            dispatcher = import_string(dispatcher)
        except ImportError as exc:
            raise ImproperlyConfigured(f"{SETTING}: dispatcher={dispatcher!r}: {exc}") from None
    if dispatcher is not None and not isinstance(dispatcher, Dispatcher):
        raise ImproperlyConfigured(
            f"{SETTING}: dispatcher={dispatcher!r} is invalid: expected a Dispatcher "
            "with submit(hit), stats() and the lifecycle (start, flush, close, aflush, aclose; "
            "matomo_tracking.dispatcher.DispatcherBase has them), or its dotted path"
        )
    http_client = options.pop("http_client", None)
    if http_client is not None and not isinstance(http_client, httpx.Client):
        raise ImproperlyConfigured(
            f"{SETTING}: http_client is invalid: expected an httpx.Client, "
            f"got {type(http_client).__name__}"
        )
    if dispatcher is not None and http_client is not None:
        raise ImproperlyConfigured(
            f"{SETTING}: http_client is used only by the default dispatcher; pass it to "
            "your dispatcher instead"
        )
    try:
        config = TrackingConfig.from_kwargs(options)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from None
    return config, dispatcher, http_client


def _from_text(options: dict[str, Any]) -> None:
    """Numbers given as text, as settings read from the environment are: ``"8"`` for a
    timeout, ``["404", "500"]`` for ``ignore_status_codes``; an empty ``token_auth`` (and the
    like) or an empty number means unset. Constructor keywords stay strict."""
    for key in _EMPTY_MEANS_NONE:
        if isinstance(options.get(key), str) and not options[key].strip():
            del options[key]
    for key, kind in _NUMERIC_KEYS.items():
        value = options.get(key)
        if not isinstance(value, str):
            continue
        if not value.strip():
            del options[key]
            continue
        try:
            options[key] = kind(value.strip())
        except ValueError:
            raise ImproperlyConfigured(
                f"{SETTING}: {key}={value!r} is invalid: expected a number"
            ) from None
    codes = options.get("ignore_status_codes")
    if isinstance(codes, list | tuple | set | frozenset):
        options["ignore_status_codes"] = [
            int(c) if isinstance(c, str) and c.strip().isascii() and c.strip().isdigit() else c
            for c in codes
        ]


def _url_masks(value: object) -> _UrlMasks:
    """The ``url_masks`` of a ``MATOMO_API_TRACKING`` dict (as django-matomo-api-tracking
    0.4 reads it): ``(pattern, replacement)`` pairs, applied in order with ``re.sub`` to the
    path of the page URL sent to Matomo, so that ids in paths collapse to one placeholder.
    Raises ``ImproperlyConfigured`` naming a bad one."""
    masks = value.get("url_masks", ()) if isinstance(value, Mapping) else ()
    if masks is None:
        return ()
    if isinstance(masks, str | bytes) or not isinstance(masks, list | tuple):
        raise ImproperlyConfigured(
            f"{SETTING}: url_masks={masks!r} is invalid: expected a list of "
            "(pattern, replacement) pairs"
        )
    compiled: list[tuple[re.Pattern[str], str]] = []
    for mask in masks:
        if (
            not isinstance(mask, list | tuple)
            or len(mask) != 2
            or not all(isinstance(part, str) for part in mask)
        ):
            raise ImproperlyConfigured(
                f"{SETTING}: url_masks entry {mask!r} is invalid: expected a "
                "(pattern, replacement) pair of strings"
            )
        try:
            compiled.append((re.compile(mask[0]), mask[1]))
        except re.error as exc:
            raise ImproperlyConfigured(
                f"{SETTING}: url_masks pattern {mask[0]!r} is invalid: {exc}"
            ) from None
    return tuple(compiled)


def _masked(view: RequestView, masks: _UrlMasks) -> RequestView:
    """``view`` with its URL path masked (filters and routes still see the real path)."""
    path = unquote(view.url_path)
    masked = path
    for pattern, replacement in masks:
        masked = pattern.sub(replacement, masked)
    if masked == path:
        return view
    return replace(view, url_path=quote(masked, safe=_PATH_SAFE))


def authenticated_user_id(view: RequestView) -> str | None:
    """A ``user_id`` hook: the primary key of Django's authenticated user (what the older app
    sent as ``uid``), or None. ``{"user_id": matomo_wsgi.django.authenticated_user_id}``."""
    user = getattr(view.source, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


def _view(request: Any, masks: _UrlMasks = ()) -> RequestView:
    scope = getattr(request, "scope", None)
    if isinstance(scope, Mapping) and scope.get("type") == "http":
        # Django's ASGIRequest: the scope has the scheme and the raw path that META lacks.
        view = request_from_asgi(scope)
    else:
        view = request_from_wsgi(request.META)
    view = replace(view, source=request)
    return _masked(view, masks) if masks else view


class MatomoMiddleware:
    """Track every request of a Django project (``MIDDLEWARE`` entry
    ``"matomo_wsgi.django.MatomoMiddleware"``, configured by ``settings.MATOMO_API_TRACKING``).

    Put it first in ``MIDDLEWARE`` to time the whole stack. The request's ``TrackingContext``
    is ``request.META["matomo"]`` (``matomo_wsgi.get_context(request)``); the resolved URL
    route (``request.resolver_match.route``) is the action name. Works under WSGI and ASGI
    (async, on the event loop); hits go to a ``ThreadDispatcher`` unless ``dispatcher`` is set.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        if get_response is None:
            raise ImproperlyConfigured("MatomoMiddleware needs get_response (Django passes it)")
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        value = getattr(settings, SETTING, None)
        config, dispatcher, http_client = config_from_settings(value)
        self._masks = _url_masks(value)
        if dispatcher is None:
            dispatcher = ThreadDispatcher(config, http_client=http_client)
        self.config = config
        self.dispatcher = dispatcher
        self._flow = wsgi_flow(config, dispatcher)

    def __repr__(self) -> str:
        return f"MatomoMiddleware(url={self.config.url!r}, async_mode={self.async_mode})"

    def __call__(self, request: Any) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        pending = self._begin(request)
        if pending is None:  # not tracked, or an outer Matomo middleware tracks it
            return self.get_response(request)
        try:
            response = self.get_response(request)
        except BaseException:
            self._failed(pending, request)
            raise
        self._track(pending, request, response, self._flow.timer())
        return response

    async def __acall__(self, request: Any) -> Any:
        pending = self._begin(request)
        if pending is None:
            return await self.get_response(request)
        try:
            response = await self.get_response(request)
        except BaseException:
            self._failed(pending, request)
            raise
        self._track(pending, request, response, self._flow.timer())
        return response

    def _begin(self, request: Any) -> Pending | None:
        meta = request.META
        return self._flow.begin(
            meta,
            meta.get("REQUEST_METHOD"),
            wsgi_app_path(meta),
            lambda: _view(request, self._masks),
        )

    def _failed(self, pending: Pending, request: Any) -> None:
        pending.route = django_route(request)
        self._flow.finish(
            pending, status=500, content_type="", ttfb=None, body_bytes=0, failed=True
        )

    def _track(self, pending: Pending, request: Any, response: Any, ttfb: float) -> None:
        """Submit now when the body size is known; for a streamed body, once it is sent."""
        try:
            pending.route = django_route(request)
            status = int(response.status_code)
            content_type = str(response.get("Content-Type", ""))
            if not response.streaming:
                size = 0 if request.method == "HEAD" else len(response.content)
            elif getattr(response, "file_to_stream", None) is not None:
                # A FileResponse that may go out through wsgi.file_wrapper (sendfile): left
                # untouched, its size read from Content-Length or the file.
                size = _file_size(response)
            else:
                if response.is_async:
                    response.streaming_content = self._count_async(
                        pending, response.streaming_content, status, content_type, ttfb
                    )
                else:
                    response.streaming_content = self._count(
                        pending, response.streaming_content, status, content_type, ttfb
                    )
                return
        except Exception:
            self._flow.internal_error("observing the response")
            return
        self._flow.finish(
            pending,
            status=status,
            content_type=content_type,
            ttfb=ttfb,
            body_bytes=size,
            failed=False,
        )

    def _count(
        self,
        pending: Pending,
        content: Iterator[bytes],
        status: int,
        content_type: str,
        ttfb: float,
    ) -> Iterator[bytes]:
        size = 0
        failed = False
        try:
            for chunk in content:
                size += len(chunk)
                yield chunk
        except GeneratorExit:  # closed early (the client went away): not an app failure
            raise
        except BaseException:
            failed = True
            raise
        finally:
            self._flow.finish(
                pending,
                status=status,
                content_type=content_type,
                ttfb=ttfb,
                body_bytes=size,
                failed=failed,
            )

    async def _count_async(
        self,
        pending: Pending,
        content: AsyncIterator[bytes],
        status: int,
        content_type: str,
        ttfb: float,
    ) -> AsyncIterator[bytes]:
        size = 0
        failed = False
        try:
            async for chunk in content:
                size += len(chunk)
                yield chunk
        except GeneratorExit:  # closed early (the client went away): not an app failure
            raise
        except BaseException:
            failed = True
            raise
        finally:
            self._flow.finish(
                pending,
                status=status,
                content_type=content_type,
                ttfb=ttfb,
                body_bytes=size,
                failed=failed,
            )


def _file_size(response: Any) -> int:
    length = str(response.get("Content-Length", "")).strip()
    if length.isdigit():
        return int(length)
    try:
        fd = response.file_to_stream.fileno()
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            return max(0, info.st_size - os.lseek(fd, 0, os.SEEK_CUR))
    except Exception:  # noqa: S110 - a size we cannot read is reported as 0
        pass
    return 0
