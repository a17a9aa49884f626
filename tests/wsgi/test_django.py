"""The Django middleware (``matomo_wsgi.django.MatomoMiddleware``): settings, routes, context,
errors, streamed and file responses, sync and async, through Django's test clients.

Django is configured for this module only (when nothing configured it before) and put back
unconfigured afterwards, so that other test modules can configure it their own way."""

from __future__ import annotations

import asyncio
import threading
from collections import ChainMap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

django = pytest.importorskip("django")

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

from matomo_tracking.request import RequestView  # noqa: E402
from matomo_tracking.testing import Collector  # noqa: E402
from matomo_wsgi import MatomoMiddleware as WSGIMiddleware  # noqa: E402
from matomo_wsgi import get_context  # noqa: E402
from matomo_wsgi.django import MatomoMiddleware, authenticated_user_id  # noqa: E402
from tests.tracker.test_clone_request import (  # noqa: E402
    BROWSER,
    CASES,
    assert_cloned_like_the_middleware,
    tracker_for,
)
from tests.wsgi.conftest import COLLECTOR_URL, RecordingDispatcher, client_for  # noqa: E402
from tests.wsgi.django_project import settings as project_settings  # noqa: E402
from tests.wsgi.django_project.views import DATA_FILE  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _django() -> Iterator[None]:
    from django.apps import apps
    from django.utils.functional import empty

    configured_here = not settings.configured
    if configured_here:
        settings.configure(**project_settings.BASE)
        django.setup(set_prefix=False)
    # What these tests need, on top of whatever configured Django (app and database
    # settings are left alone: overriding them reloads Django's registries).
    needed = ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "ROOT_URLCONF", "MIDDLEWARE", "USE_TZ")
    with override_settings(**{key: project_settings.BASE[key] for key in needed}):
        yield
    if configured_here:
        settings._wrapped = empty
        apps.app_configs = {}
        apps.apps_ready = apps.models_ready = apps.ready = apps.loading = False
        apps.clear_cache()


@pytest.fixture
def matomo(collector: Collector, collector_client: httpx.Client) -> Iterator[dict[str, Any]]:
    """MATOMO_API_TRACKING for a test: inline delivery to the in-process collector."""
    value: dict[str, Any] = {
        "url": COLLECTOR_URL,
        "site_id": 1,
        "visitor_salt": "test-salt",
        "sync_mode": True,
        "http_client": collector_client,
        "status_dimension": 1,
        "bytes_dimension": 3,
    }
    with override_settings(MATOMO_API_TRACKING=value):
        yield value


def test_routes_are_action_names_and_the_view_reaches_the_context(
    matomo: dict[str, Any], collector: Collector
) -> None:
    client = Client()
    assert client.get("/items/42/?a=%C3%A9").json()["pk"] == 42
    client.get("/legacy/2024/")
    client.get("/nowhere/", HTTP_USER_AGENT="UA/2")
    item, legacy, missing = collector.hits
    assert item["action_name"] == "/items/<int:pk>/"
    assert item["url"] == "http://testserver/items/42/?a=%C3%A9"
    assert item["dimension2"]  # set by the view through get_context(request)
    assert legacy["action_name"] == "/^legacy/(?P<year>[0-9]{4})/$"
    assert (missing["action_name"], missing["dimension1"], missing["ua"]) == (
        "/nowhere/",
        "404",
        "UA/2",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cloned_request_carries_the_middlewares_visitor_ids_and_hints(case: str) -> None:
    options, cookie = CASES[case]
    middleware_hits, tracker_hits = RecordingDispatcher(), RecordingDispatcher()
    meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in BROWSER.items()}
    if cookie is not None:
        meta["HTTP_COOKIE"] = cookie
    meta.update(REMOTE_ADDR="198.51.100.23", HTTP_HOST="shop.example")
    meta["tests.tracker"] = tracker_for(options, tracker_hits)
    setting = {"url": "https://matomo.example", "dispatcher": middleware_hits, **options}
    with override_settings(MATOMO_API_TRACKING=setting):
        assert Client().get("/clone/?x=1", **meta).status_code == 200

    (page,), (cloned,) = middleware_hits.hits, tracker_hits.hits
    assert_cloned_like_the_middleware(page, cloned, cookie)


def test_context_skip_and_events(matomo: dict[str, Any], collector: Collector) -> None:
    client = Client()
    client.get("/event/")
    client.get("/skipped/")
    page, event = collector.hits
    assert page["action_name"] == "Custom name"
    assert (event["e_c"], event["e_a"], event["e_n"]) == ("shop", "view", "item")
    assert page["pv_id"] == event["pv_id"]


def test_errors_are_tracked_as_500_and_reraised(
    matomo: dict[str, Any], collector: Collector
) -> None:
    with pytest.raises(RuntimeError, match="secret failure detail"):
        Client().get("/boom/")
    assert Client(raise_request_exception=False).get("/boom/").status_code == 500
    first, second = collector.hits
    assert first["dimension1"] == second["dimension1"] == "500"
    assert all("secret" not in v for hit in (first, second) for v in hit.params.values())


def test_streamed_and_file_responses_are_counted(
    matomo: dict[str, Any], collector: Collector
) -> None:
    client = Client()
    stream = client.get("/stream/")
    assert collector.hits == []  # the stream is not sent yet
    assert b"".join(stream.streaming_content) == b"x" * 1000  # type: ignore[attr-defined]
    stream.close()
    download = client.get("/download/")
    assert b"".join(download.streaming_content) == DATA_FILE.read_bytes()  # type: ignore[attr-defined]
    download.close()
    streamed, files = collector.hits
    assert (streamed["action_name"], streamed["dimension3"]) == ("/stream/", "1000")
    assert files["dimension3"] == str(DATA_FILE.stat().st_size)


def test_ignore_html_and_ignore_paths(matomo: dict[str, Any], collector: Collector) -> None:
    with override_settings(
        MATOMO_API_TRACKING={**matomo, "ignore_html": True, "ignore_paths": ["/event/"]}
    ):
        client = Client()
        client.get("/html/")
        client.get("/event/")
        client.get("/items/1/")
    [hit] = collector.hits
    assert hit["action_name"] == "/items/<int:pk>/"


# -- settings --------------------------------------------------------------------------
def _middleware() -> MatomoMiddleware:
    return MatomoMiddleware(lambda request: HttpResponse("ok"))


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"url": "not a url", "site_id": 1}, "url"),
        ({"url": COLLECTOR_URL, "site_id": 0}, "site_id"),
        ({"url": COLLECTOR_URL, "site_id": "one"}, "site_id"),
        ({"url": COLLECTOR_URL, "ignore_paths": ["no-slash"]}, "ignore_paths"),
        ({"url": COLLECTOR_URL, "sample_rat": 0.5}, "sample_rat"),
        ({"site_id": 1}, "url"),
        ({"url": COLLECTOR_URL, "dispatcher": "no.such.module.thing"}, "dispatcher"),
        ({"url": COLLECTOR_URL, "dispatcher": 42}, "dispatcher"),
        ({"url": COLLECTOR_URL, "http_client": "x"}, "http_client"),
        ({"url": COLLECTOR_URL, "timeout": "soon"}, "timeout='soon'"),
        ({"url": COLLECTOR_URL, "batch_max_hits": "1.5"}, "batch_max_hits"),
        ({"url": COLLECTOR_URL, "ignore_status_codes": ["redirect"]}, "ignore_status_codes"),
        ({"url": COLLECTOR_URL, "url_masks": "/id/"}, "url_masks"),
        ({"url": COLLECTOR_URL, "url_masks": [("/id/",)]}, "url_masks entry"),
        ({"url": COLLECTOR_URL, "url_masks": [("(", "x")]}, "url_masks pattern"),
        ("https://matomo.example.org", "MATOMO_API_TRACKING"),
        (None, "MATOMO_API_TRACKING"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_settings_are_improperly_configured_at_startup(value: Any, named: str) -> None:
    with (
        override_settings(MATOMO_API_TRACKING=value),
        pytest.raises(ImproperlyConfigured, match=named),
    ):
        _middleware()


def test_url_masks_collapse_ids_in_the_page_url_path(
    matomo: dict[str, Any], collector: Collector
) -> None:
    # django-matomo-api-tracking 0.4's url_masks: (pattern, replacement) pairs applied in
    # order with re.sub to the path of the URL sent to Matomo.
    masks = [(r"/items/\d+/", "/items/ID/"), (r"ID", "<id>"), (r"é", "e")]
    with override_settings(
        MATOMO_API_TRACKING={**matomo, "url_masks": masks, "ignore_paths": ["/items/7/"]}
    ):
        client = Client()
        client.get("/items/42/?a=%C3%A9")
        client.get("/items/7/")  # ignore_paths sees the real path
        client.get("/event/")

    item, event, _ = collector.hits
    assert item["url"] == "http://testserver/items/%3Cid%3E/?a=%C3%A9"  # as Django encodes it
    assert item["action_name"] == "/items/<int:pk>/"  # the route, as without masks
    assert event["url"] == "http://testserver/event/"


@pytest.mark.parametrize(
    ("mask", "path", "url"),
    [
        (
            (r"/api/hog/[^/]+/", "/api/hog/:hog_id/"),
            "/api/hog/HOG:F0014552.1b/",
            "/api/hog/:hog_id/",
        ),
        ((r"/api/hog/[^/]+", "/api/hog/:hog_id"), "/api/hog/HOG:F0014552.1b", "/api/hog/:hog_id"),
    ],
    ids=["trailing-slash", "no-trailing-slash"],
)
def test_url_masks_as_the_older_app_documents_them_in_a_chain_map(
    matomo: dict[str, Any], collector: Collector, mask: tuple[str, str], path: str, url: str
) -> None:
    # The older app's own tests layer settings with a ChainMap.
    with override_settings(MATOMO_API_TRACKING=ChainMap({"url_masks": [mask]}, matomo)):
        Client().get(path)

    (hit,) = collector.hits
    assert hit["url"] == "http://testserver" + url


def test_numbers_in_the_settings_dict_may_be_text_and_an_empty_token_is_none() -> None:
    text = {
        "url": COLLECTOR_URL,
        "site_id": "3",
        "timeout": "8",
        "batch_max_hits": "10",
        "sample_rate": "0.5",
        "status_dimension": "1",
        "bytes_dimension": "",
        "ignore_status_codes": ["404", 500],
        "token_auth": "",
        "visitor_salt": " ",
    }
    with override_settings(MATOMO_API_TRACKING=text):
        config = _middleware().config

    assert (config.site_id, config.timeout, config.batch_max_hits) == (3, 8.0, 10)
    assert (config.sample_rate, config.status_dimension, config.bytes_dimension) == (0.5, 1, None)
    assert config.ignore_status_codes == frozenset({404, 500})
    assert (config.token_auth, config.visitor_salt) == (None, None)


@pytest.mark.parametrize(
    ("key", "value"), [("timeout", "8"), ("token_auth", ""), ("batch_max_hits", "10")]
)
def test_constructor_keywords_stay_strict(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        WSGIMiddleware(lambda environ, start_response: [], url=COLLECTOR_URL, **{key: value})


def test_the_token_is_masked_in_setting_errors() -> None:
    token = "sentinel0token0auth0c0ffee0d00d0"
    with (
        override_settings(
            MATOMO_API_TRACKING={"url": COLLECTOR_URL, "token_auth": token, "site_id": -1}
        ),
        pytest.raises(ImproperlyConfigured) as raised,
    ):
        _middleware()
    assert token not in str(raised.value)


def test_the_older_apps_settings_work_and_its_other_keys_warn(
    matomo: dict[str, Any], collector: Collector
) -> None:
    legacy = {
        **matomo,
        "url": COLLECTOR_URL + "/matomo.php",
        "site_id": "1",
        "timeout": 8,
        "ignore_html": False,
        "backend": "matomo_api_tracking.backends.celery.CeleryTrackingBackend",
        "redis_url": "redis://localhost:6379/0",
        "redis_key": "matomo_events",
        "ignore_path": "/event/",
    }
    with override_settings(MATOMO_API_TRACKING=legacy, CUSTOM_UIP_HEADER="HTTP_X_REAL_IP"):
        with pytest.warns(UserWarning, match="MATOMO_API_TRACKING") as warned:
            middleware = _middleware()
        messages = " ".join(str(w.message) for w in warned)
        for key in ("'backend'", "'redis_url'", "'redis_key'", "'ignore_path'", "CUSTOM_UIP"):
            assert key in messages
        assert "dispatcher" in messages  # what replaces 'backend'
        assert "trusted_proxies" in messages  # what replaces CUSTOM_UIP_HEADER
        assert middleware.config.site_id == 1
        assert middleware.config.ignore_paths == ("/event",)
        assert middleware.config.timeout == 8
        client = Client()
        with pytest.warns(UserWarning, match="MATOMO_API_TRACKING"):
            client.get("/event/")  # the middleware is made on the first request
        client.get("/items/3/")
    [hit] = collector.hits
    assert hit["action_name"] == "/items/<int:pk>/"


def test_a_dispatcher_by_dotted_path_and_the_template_tags_key(collector: Collector) -> None:
    with override_settings(
        MATOMO_API_TRACKING={
            "url": COLLECTOR_URL,
            "js_url": "https://matomo.example.org",  # read by {% matomo_tracking_code %}
            "dispatcher": "tests.wsgi.test_django.SHARED_DISPATCHER",
        }
    ):
        assert _middleware().dispatcher is SHARED_DISPATCHER


SHARED_DISPATCHER = RecordingDispatcher()


def test_authenticated_user_id() -> None:
    class User:
        def __init__(self, pk: int, authenticated: bool) -> None:
            self.pk, self.is_authenticated = pk, authenticated

    class Request:
        def __init__(self, user: object) -> None:
            self.user = user

    def view(source: object) -> RequestView:
        return RequestView("GET", "http", "/", "/", "", {}, source=source)

    assert authenticated_user_id(view(Request(User(7, True)))) == "7"
    assert authenticated_user_id(view(Request(User(7, False)))) is None
    assert authenticated_user_id(view(object())) is None


def test_the_request_is_the_views_source() -> None:
    dispatcher = RecordingDispatcher()
    sources: list[object] = []

    def user_id(view: RequestView) -> str | None:
        sources.append(view.source)
        return None

    with override_settings(
        MATOMO_API_TRACKING={"url": COLLECTOR_URL, "dispatcher": dispatcher, "user_id": user_id}
    ):
        Client().get("/items/1/")
    assert isinstance(sources[0], HttpRequest)


# -- async ------------------------------------------------------------------------------
def test_async_django_runs_on_the_event_loop() -> None:
    dispatcher = RecordingDispatcher()

    async def get_response(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with override_settings(MATOMO_API_TRACKING={"url": COLLECTOR_URL, "dispatcher": dispatcher}):
        middleware = MatomoMiddleware(get_response)
        sync = MatomoMiddleware(lambda request: HttpResponse("ok"))
        assert iscoroutinefunction(middleware)
        assert not iscoroutinefunction(sync)

        async def run() -> list[dict[str, Any]]:
            client = AsyncClient()
            assert (await client.get("/async-items/5/")).json()["pk"] == 5
            response = await client.get("/async-stream/")
            assert dispatcher.hits[1:] == []  # sent once the stream is consumed
            chunks = [chunk async for chunk in response.streaming_content]  # type: ignore[attr-defined]
            assert b"".join(chunks) == b"y" * 200
            return dispatcher.calls

        loop_thread = threading.get_ident()
        calls = asyncio.run(run())
    # No thread hop: the middleware ran, and submitted, on the event loop's thread.
    assert calls[0] == {"thread": loop_thread, "on_loop": True}
    page, streamed = (dict(hit.params) for hit in dispatcher.hits)
    assert page["action_name"] == "/async-items/<int:pk>/"
    assert streamed["action_name"] == "/async-stream/"


# -- stacked with the WSGI middleware -------------------------------------------------------
def test_the_wsgi_middleware_around_django(matomo: dict[str, Any], collector: Collector) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    outer = RecordingDispatcher()
    inner = RecordingDispatcher()
    with override_settings(MATOMO_API_TRACKING={"url": COLLECTOR_URL, "dispatcher": inner}):
        app = WSGIMiddleware(WSGIHandler(), url=COLLECTOR_URL, dispatcher=outer)
        with client_for(app) as client:
            assert client.get("/items/9/").json()["pk"] == 9

    class StaticFiles:  # a wrapper in the way WhiteNoise wraps Django
        def __init__(self, application: Any) -> None:
            self.application = application

        def __call__(self, environ: Any, start_response: Any) -> Any:
            return self.application(environ, start_response)

    with override_settings(MIDDLEWARE=[]):
        bare = WSGIMiddleware(StaticFiles(WSGIHandler()), url=COLLECTOR_URL, dispatcher=outer)
        with client_for(bare) as client:
            client.get("/items/10/")
            client.get("/nowhere/")
    assert inner.hits == []  # the outer (WSGI) middleware tracked
    actions = [hit.params["action_name"] for hit in outer.hits]
    # Without the Django middleware, the route comes from Django's resolver.
    assert actions == ["/items/<int:pk>/", "/items/<int:pk>/", "/nowhere/"]


def test_get_context_from_a_django_request() -> None:
    request = HttpRequest()
    assert isinstance(get_context(request), type(get_context({})))
    context = get_context({})
    request.META["matomo"] = context
    assert get_context(request) is context
