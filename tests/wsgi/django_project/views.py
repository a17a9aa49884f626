"""Views of the test Django project."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)

from matomo_wsgi import get_context

#: The file the download view serves (this module: its size is known to the tests).
DATA_FILE = Path(__file__)


def clone(request: HttpRequest) -> HttpResponse:
    """Track an event with the standalone tracker the test put in ``META``, cloning the
    request (the side-by-side test of ``Tracker(request=...)``)."""
    request.META["tests.tracker"].track_event("clone", "django", request=request)
    return HttpResponse("ok")


def item(request: HttpRequest, pk: int) -> JsonResponse:
    get_context(request).set_dimension(2, str(os.getpid()))
    return JsonResponse({"pk": pk, "pid": os.getpid()})


async def async_item(request: HttpRequest, pk: int) -> JsonResponse:
    get_context(request).set_dimension(2, str(os.getpid()))
    return JsonResponse({"pk": pk, "pid": os.getpid()})


def event(request: HttpRequest) -> HttpResponse:
    context = get_context(request)
    context.set_action_name("Custom name")
    context.track_event("shop", "view", "item")
    return HttpResponse("ok", content_type="text/plain")


def skipped(request: HttpRequest) -> HttpResponse:
    get_context(request).skip()
    return HttpResponse("not tracked")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret failure detail")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse((b"x" * 100 for _ in range(10)), content_type="text/plain")


async def _chunks() -> AsyncIterator[bytes]:
    for _ in range(4):
        yield b"y" * 50


def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks(), content_type="text/plain")


def download(request: HttpRequest) -> FileResponse:
    return FileResponse(DATA_FILE.open("rb"), content_type="application/octet-stream")


def html(request: HttpRequest, **kwargs: str) -> HttpResponse:
    return HttpResponse("<html><title>t</title></html>")
