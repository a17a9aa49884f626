"""One request flow on every side (DESIGN "One request flow"): the ASGI middleware, the WSGI
middleware and the Django middleware run the core's ``RequestFlow``, so the hit's time (the
request's arrival), ``get_context()`` outside a request, the dispatcher checks and what
happens when tracking fails are the same on each. One parametrised suite over the adapters."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

django = pytest.importorskip("django")

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402
from starlette.requests import Request  # noqa: E402

import matomo_asgi  # noqa: E402
import matomo_wsgi  # noqa: E402
from matomo_tracking.context import TrackingContext  # noqa: E402
from matomo_tracking.hits import Hit  # noqa: E402
from matomo_wsgi import django as django_middleware  # noqa: E402
from tests.security.harness import (  # noqa: E402
    RecordingDispatcher,
    asgi_scope,
    run_asgi,
    run_wsgi,
    wsgi_environ,
)
from tests.wsgi.test_django import _django  # noqa: E402, F401 - configures Django here too

ADAPTERS = ("asgi", "wsgi", "django")
MATOMO = "http://matomo.test"
#: What a handler does inside the request: given its context.
Handler = Callable[[TrackingContext], None]


def served(adapter: str, handler: Handler, dispatcher: Any, **options: Any) -> Callable[[str], int]:
    """``adapter``'s middleware around an app that calls ``handler`` with the request's context
    (found with that side's ``get_context``): a function that GETs a path, giving the status."""
    options = {"url": MATOMO, "site_id": 1, "visitor_salt": "flow", **options}
    if adapter == "asgi":

        async def app(scope: Any, receive: Any, send: Any) -> None:
            handler(matomo_asgi.get_context(Request(scope)))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        asgi = matomo_asgi.MatomoMiddleware(app, dispatcher=dispatcher, **options)

        def get_asgi(path: str) -> int:
            outcome = run_asgi(asgi, asgi_scope(path=path))
            assert outcome.error is None
            return int(outcome.response[0]["status"])

        return get_asgi
    if adapter == "wsgi":

        def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            handler(matomo_wsgi.get_context(environ))
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]

        wsgi = matomo_wsgi.MatomoMiddleware(wsgi_app, dispatcher=dispatcher, **options)

        def get_wsgi(path: str) -> int:
            outcome = run_wsgi(wsgi, wsgi_environ(path=path))
            assert outcome.error is None
            return int(outcome.response[0][0].split()[0])

        return get_wsgi

    def view(request: HttpRequest) -> HttpResponse:
        handler(matomo_wsgi.get_context(request))
        return HttpResponse(b"ok")

    with override_settings(MATOMO_API_TRACKING={**options, "dispatcher": dispatcher}):
        middleware = django_middleware.MatomoMiddleware(view)
    return lambda path: int(middleware(RequestFactory().get(path)).status_code)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_hit_happened_when_the_request_arrived(adapter: str) -> None:
    dispatcher = RecordingDispatcher()
    before = time.time()
    served(adapter, lambda context: time.sleep(0.3), dispatcher)("/page")
    after = time.time()
    [hit] = dispatcher.take()
    assert before <= hit.created <= before + 0.2  # not when the slow response ended
    assert after - hit.created >= 0.3


def _get_context_outside_a_request(adapter: str) -> TrackingContext:
    if adapter == "asgi":
        return matomo_asgi.get_context(Request(asgi_scope()))
    if adapter == "wsgi":
        return matomo_wsgi.get_context(wsgi_environ())
    return matomo_wsgi.get_context(HttpRequest())


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_get_context_without_the_middleware_is_a_detached_context(adapter: str) -> None:
    first = _get_context_outside_a_request(adapter)
    second = _get_context_outside_a_request(adapter)
    assert isinstance(first, TrackingContext)
    assert first is not second  # nothing is shared, nothing is sent
    first.set_action_name("ignored")  # and using it never fails


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_untracked_request_still_has_a_context_and_it_says_skipped(adapter: str) -> None:
    dispatcher = RecordingDispatcher()
    seen: list[TrackingContext] = []
    served(adapter, seen.append, dispatcher, ignore_paths=["/health"])("/health")
    assert dispatcher.take() == []
    assert [context.skipped for context in seen] == [True]


def _construct(adapter: str, **options: Any) -> None:
    options = {"url": MATOMO, "site_id": 1, **options}
    if adapter == "asgi":
        matomo_asgi.MatomoMiddleware(lambda *a: None, **options)  # type: ignore[arg-type]
    elif adapter == "wsgi":
        matomo_wsgi.MatomoMiddleware(lambda e, s: [], **options)
    else:
        with override_settings(MATOMO_API_TRACKING=options):
            django_middleware.MatomoMiddleware(lambda request: HttpResponse())


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_dispatcher_checks_are_the_same(adapter: str) -> None:
    # Django reports configuration errors its own way (ImproperlyConfigured), naming the key.
    not_a_dispatcher = ImproperlyConfigured if adapter == "django" else TypeError
    with pytest.raises(not_a_dispatcher, match="dispatcher"):
        _construct(adapter, dispatcher=object())
    both = ImproperlyConfigured if adapter == "django" else ValueError
    with pytest.raises(both, match="http_client"):
        _construct(adapter, dispatcher=RecordingDispatcher(), http_client=_client(adapter))


def _client(adapter: str) -> Any:
    return httpx.AsyncClient() if adapter == "asgi" else httpx.Client()


class _Unfinished(RecordingDispatcher):
    """Its flush and close report that something was left undelivered."""

    def flush(self, timeout: float | None = None) -> bool:
        return False

    async def aflush(self, timeout: float | None = None) -> bool:
        return False

    close, aclose = flush, aflush


@pytest.mark.parametrize("tracker", ["Tracker", "AsyncTracker"])
def test_the_trackers_check_and_drive_a_dispatcher_as_the_middlewares_do(tracker: str) -> None:
    make = matomo_wsgi.Tracker if tracker == "Tracker" else matomo_asgi.AsyncTracker
    with pytest.raises(TypeError, match="dispatcher"):
        make(url=MATOMO, site_id=1, dispatcher=object())  # type: ignore[arg-type]
    with httpx.Client() as client, pytest.raises(ValueError, match="http_client"):
        make(url=MATOMO, site_id=1, dispatcher=RecordingDispatcher(), http_client=client)  # type: ignore[arg-type]
    unfinished = make(url=MATOMO, site_id=1, dispatcher=_Unfinished())
    if isinstance(unfinished, matomo_wsgi.Tracker):
        assert (unfinished.flush(1.0), unfinished.close(1.0)) == (False, False)
    else:
        assert (asyncio.run(unfinished.aflush(1.0)), asyncio.run(unfinished.aclose(1.0))) == (
            False,
            False,
        )


class BrokenDispatcher(RecordingDispatcher):
    """A dispatcher whose ``submit`` raises (a bug in a custom dispatcher)."""

    def submit(self, hit: Hit) -> bool:
        raise RuntimeError("submit is broken")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_failure_while_tracking_never_reaches_the_request_and_is_logged_once(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = BrokenDispatcher()
    with caplog.at_level(logging.WARNING, logger="matomo_tracking"):
        get = served(adapter, lambda context: None, dispatcher)
        statuses = [get("/page") for _ in range(3)]
    assert statuses == [200, 200, 200]
    logged = [r for r in caplog.records if "building the hits failed" in r.getMessage()]
    assert len(logged) == 1  # rate-limited, with the count so far and the traceback
    assert logged[0].name == "matomo_tracking"
    assert "1 such error(s)" in logged[0].getMessage()
    assert logged[0].exc_info is not None


@pytest.fixture(autouse=True)
def _no_event_loop_left() -> Iterator[None]:
    yield
    asyncio.set_event_loop(None)
