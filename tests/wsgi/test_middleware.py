"""The WSGI middleware with plain WSGI apps: what is tracked, when, and that the response is
never changed (status, headers, body, exceptions, close(), file wrappers)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import FileWrapper as WsgirefFileWrapper

import pytest
from gunicorn.http.wsgi import FileWrapper as GunicornFileWrapper  # type: ignore[import-untyped]

from matomo_tracking.context import TrackingContext
from matomo_tracking.testing import Collector
from matomo_wsgi import MatomoMiddleware, ThreadDispatcher, get_context
from tests.wsgi.conftest import RecordingDispatcher, Track, client_for

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


def hello(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-App", "1")])
    return [b"hello ", b"world"]


def environ_for(path: str = "/", **extra: Any) -> Environ:
    """A minimal WSGI environ, for driving the middleware by hand like a server does."""
    environ: Environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_HOST": "testserver",
        "HTTP_USER_AGENT": "Tester/1.0",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
    }
    environ.update(extra)
    return environ


class Server:
    """Calls an app the way a WSGI server does, recording what it was given."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        self.status, self.headers = status, headers
        return self.written.append

    def run(self, app: Any, environ: Environ) -> bytes:
        result = app(environ, self.start_response)
        try:
            return b"".join(self.written) + b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


# -- the page view ----------------------------------------------------------------------
def test_a_request_becomes_one_page_view(track: Track, collector: Collector) -> None:
    app = track(hello)
    with client_for(app) as client:
        response = client.get(
            "/greet/you?a=%C3%A9&b=1",
            headers={
                "User-Agent": "Mozilla/5.0 Test",
                "Accept-Language": "fr-CH, en;q=0.5",
                "Referer": "https://example.org/from",
            },
        )
    assert response.status_code == 200
    assert response.text == "hello world"
    assert response.headers["x-app"] == "1"
    [hit] = collector.hits
    assert hit["url"] == "http://testserver/greet/you?a=%C3%A9&b=1"
    assert hit["action_name"] == "/greet/you"
    assert hit["ua"] == "Mozilla/5.0 Test"
    assert hit["lang"] == "fr-CH, en;q=0.5"
    assert hit["urlref"] == "https://example.org/from"
    assert int(hit["pf_srv"]) >= 0
    assert hit["idsite"] == "1"
    assert collector.invalid == []


def test_script_name_is_in_the_url_not_in_the_action(track: Track, collector: Collector) -> None:
    app = track(hello, ignore_paths=["/private"])
    Server().run(app, environ_for("/page", SCRIPT_NAME="/mount"))
    Server().run(app, environ_for("/private/x", SCRIPT_NAME="/mount"))
    [hit] = collector.hits
    assert hit["url"] == "http://testserver/mount/page"
    assert hit["action_name"] == "/page"


def test_pf_srv_is_the_time_to_the_first_byte(track: Track, collector: Collector) -> None:
    def slow_start(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        time.sleep(0.06)
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        time.sleep(0.2)  # after the first byte: not part of pf_srv
        yield b"second"

    with client_for(track(slow_start)) as client:
        client.get("/")
    [hit] = collector.hits
    assert 60 <= int(hit["pf_srv"]) < 200


def test_body_bytes_and_status_are_observed(track: Track, collector: Collector) -> None:
    def legacy_write(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"12345")
        return [b"678", b""]

    app = track(legacy_write, status_dimension=1, bytes_dimension=3)
    assert Server().run(app, environ_for("/w")) == b"12345678"
    [hit] = collector.hits
    assert hit["dimension1"] == "201"
    assert hit["dimension3"] == "8"


def test_filters_skip_before_the_app_and_leave_a_mark(track: Track, collector: Collector) -> None:
    seen: list[object] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen.append(environ["matomo"])
        seen.append(get_context(environ))
        return hello(environ, start_response)

    tracked = track(
        app, ignore_paths=["/health"], ignore_patterns=[r"/static/.*"], ignore_user_agents=["bot"]
    )
    with client_for(tracked) as client:
        client.get("/health")
        client.get("/health/deep")
        client.get("/static/app.js")
        client.get("/page", headers={"User-Agent": "somebot/1"})
        client.head("/page")
        client.get("/healthy")
    assert [h["action_name"] for h in collector.hits] == ["/healthy"]
    # Every request has a context, tracked or not, and get_context() finds it.
    assert all(isinstance(context, TrackingContext) for context in seen)
    assert seen[0] is seen[1]
    assert seen[-2] is seen[-1]
    assert get_context({}) is not get_context({})  # no middleware: a detached one


def test_non_ascii_paths_are_filtered_on_their_decoded_form(
    track: Track, collector: Collector
) -> None:
    tracked = track(hello, ignore_paths=["/café"])
    raw = "/café/menu".encode().decode("latin-1")  # how a WSGI server passes it
    Server().run(tracked, environ_for(raw))
    Server().run(tracked, environ_for("/cafe"))
    assert [h["action_name"] for h in collector.hits] == ["/cafe"]


def test_paths_without_a_leading_slash_are_filtered_as_the_view_roots_them(
    track: Track, collector: Collector
) -> None:
    # The early check sees PATH_INFO as given ("health"); the view's path is "/health".
    tracked = track(hello, ignore_paths=["/health"], ignore_patterns=[r"/static/.*"])
    Server().run(tracked, environ_for("health"))
    Server().run(tracked, environ_for("static/app.js"))
    Server().run(tracked, environ_for("healthy"))
    assert [h["action_name"] for h in collector.hits] == ["/healthy"]


# -- the per-request context --------------------------------------------------------------
def test_the_context_shapes_the_hits(track: Track, collector: Collector) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        context = get_context(environ)
        context.set_action_name("Checkout")
        context.set_user_id("user-7")
        context.set_dimension(4, "blue")
        context.track_event("cart", "add", "book", 3)
        context.track_goal(2, revenue=9.5)
        return hello(environ, start_response)

    with client_for(track(app)) as client:
        client.get("/checkout")
    page, event, goal = collector.hits
    assert page["action_name"] == "Checkout"
    assert page["uid"] == "user-7"
    assert page["dimension4"] == "blue"
    assert (event["e_c"], event["e_a"], event["e_n"], event["e_v"]) == ("cart", "add", "book", "3")
    assert goal["idgoal"] == "2"
    assert event["pv_id"] == goal["pv_id"] == page["pv_id"]


def test_skip_drops_the_request_and_its_hits(track: Track, collector: Collector) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        get_context(environ).track_event("a", "b")
        get_context(environ).skip()
        return hello(environ, start_response)

    with client_for(track(app)) as client:
        assert client.get("/").text == "hello world"
    assert collector.hits == []


def test_get_context_rejects_what_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="WSGI environ"):
        get_context(42)


# -- the response is never changed ------------------------------------------------------
class ClosingBody:
    """An app iterable that records its close()."""

    def __init__(self, chunks: list[bytes], events: list[str]) -> None:
        self.chunks = chunks
        self.events = events

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.events.append("app close")


def test_close_is_forwarded_and_hits_go_after_the_body(collector: Collector) -> None:
    events: list[str] = []
    dispatcher = RecordingDispatcher()

    def app(environ: Environ, start_response: StartResponse) -> ClosingBody:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody([b"a", b"b"], events)

    tracked = MatomoMiddleware(app, url="http://collector.test", dispatcher=dispatcher)
    server = Server()
    result = tracked(environ_for("/"), server.start_response)
    assert b"".join(result) == b"ab"
    assert dispatcher.hits == []  # the body is sent; close() not called yet
    result.close()  # type: ignore[attr-defined]
    assert events == ["app close"]
    assert len(dispatcher.hits) == 1
    result.close()  # type: ignore[attr-defined]
    assert events == ["app close", "app close"]
    assert len(dispatcher.hits) == 1  # tracked once


def test_exceptions_are_reraised_unchanged_and_tracked_as_500(
    track: Track, collector: Collector
) -> None:
    error = RuntimeError("secret failure detail")

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise error

    tracked = track(app, status_dimension=1)
    with pytest.raises(RuntimeError) as raised:
        tracked(environ_for("/fail"), Server().start_response)
    assert raised.value is error
    [hit] = collector.hits
    assert hit["dimension1"] == "500"
    assert all("secret" not in value for value in hit.params.values())


def test_an_exception_before_the_first_byte_is_a_500(track: Track, collector: Collector) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise ValueError("late")
        yield b""

    tracked = track(app, status_dimension=1)
    with pytest.raises(ValueError, match="late"):
        Server().run(tracked, environ_for("/"))
    [hit] = collector.hits
    assert hit["dimension1"] == "500"


def test_an_exception_after_the_headers_went_out_keeps_their_status(
    track: Track, collector: Collector
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise ValueError("mid-stream")

    tracked = track(app, status_dimension=1, bytes_dimension=3)
    with pytest.raises(ValueError, match="mid-stream"):
        Server().run(tracked, environ_for("/"))
    [hit] = collector.hits
    assert (hit["dimension1"], hit["dimension3"]) == ("200", "7")


def test_a_body_that_cannot_be_iterated_is_a_500(track: Track, collector: Collector) -> None:
    events: list[str] = []

    class Broken(ClosingBody):
        def __iter__(self) -> Iterator[bytes]:
            raise OSError("cannot read")

    def app(environ: Environ, start_response: StartResponse) -> ClosingBody:
        start_response("200 OK", [])
        return Broken([], events)

    tracked = track(app, status_dimension=1)
    with pytest.raises(OSError, match="cannot read"):
        tracked(environ_for("/"), Server().start_response)
    assert events == ["app close"]
    [hit] = collector.hits
    assert hit["dimension1"] == "500"


def test_a_failing_dispatcher_never_reaches_the_request() -> None:
    class Broken(RecordingDispatcher):
        def submit(self, hit: Any) -> bool:
            raise RuntimeError("dispatcher bug")

    tracked = MatomoMiddleware(hello, url="http://collector.test", dispatcher=Broken())
    assert Server().run(tracked, environ_for("/")) == b"hello world"


def test_status_headers_and_body_are_the_apps(track: Track) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("418 I'm a teapot", [("Content-Type", "text/x-tea"), ("Set-Cookie", "a=1")])
        return iter([b"short ", b"and stout"])

    plain, tracked = Server(), Server()
    assert plain.run(app, environ_for("/")) == tracked.run(track(app), environ_for("/"))
    assert (plain.status, plain.headers) == (tracked.status, tracked.headers)


# -- wsgi.file_wrapper ------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrapper", [WsgirefFileWrapper, GunicornFileWrapper], ids=["wsgiref", "gunicorn"]
)
def test_file_wrapper_is_passed_through_and_counted(
    tmp_path: Path, track: Track, collector: Collector, wrapper: type
) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"z" * 5000)
    opened: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        handle = data.open("rb")
        opened.append(handle)
        return environ["wsgi.file_wrapper"](handle, 1024)

    tracked = track(app, bytes_dimension=3)
    environ = environ_for("/file", **{"wsgi.file_wrapper": wrapper})
    result = tracked(environ, Server().start_response)
    # The server's own object, so its isinstance check (and sendfile) still works.
    assert isinstance(result, wrapper)
    assert collector.hits == []
    assert b"".join(result) == data.read_bytes()
    result.close()  # type: ignore[attr-defined]
    assert opened[0].closed
    [hit] = collector.hits
    assert hit["dimension3"] == "5000"


def test_file_wrapper_respects_content_length_and_offset(
    tmp_path: Path, track: Track, collector: Collector
) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"z" * 5000)

    def app(environ: Environ, start_response: StartResponse) -> Any:
        handle = data.open("rb")
        handle.seek(1000)
        start_response("206 Partial Content", [("Content-Length", "1500")])
        return environ["wsgi.file_wrapper"](handle)

    tracked = track(app, bytes_dimension=3)
    result = tracked(
        environ_for("/", **{"wsgi.file_wrapper": GunicornFileWrapper}), Server().start_response
    )
    result.close()  # type: ignore[attr-defined]
    [hit] = collector.hits
    assert hit["dimension3"] == "1500"


def test_a_file_wrapper_without_a_file_descriptor_is_counted_by_iteration(
    track: Track, collector: Collector
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"q" * 300), 64)

    tracked = track(app, bytes_dimension=3)
    body = Server().run(tracked, environ_for("/", **{"wsgi.file_wrapper": WsgirefFileWrapper}))
    assert body == b"q" * 300
    [hit] = collector.hits
    assert hit["dimension3"] == "300"


# -- stacking and configuration ---------------------------------------------------------
def test_stacked_twice_only_the_outer_tracks() -> None:
    outer, inner = RecordingDispatcher(), RecordingDispatcher()
    app = MatomoMiddleware(
        MatomoMiddleware(hello, url="http://inner.test", dispatcher=inner),
        url="http://outer.test",
        dispatcher=outer,
        ignore_paths=["/outer-ignores"],
    )
    Server().run(app, environ_for("/page"))
    Server().run(app, environ_for("/outer-ignores"))
    assert len(outer.hits) == 1
    assert inner.hits == []  # the outer one decided both times


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValueError, match="site_id"):
        MatomoMiddleware(hello, url="http://m.test", site_id=0)
    with pytest.raises(ValueError, match="ignore_pahts"):
        MatomoMiddleware(hello, url="http://m.test", ignore_pahts=["/x"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="url"):
        MatomoMiddleware(hello, url="ftp://m.test")
    with pytest.raises(ValueError, match="http_client"):
        MatomoMiddleware(
            hello,
            url="http://m.test",
            dispatcher=RecordingDispatcher(),
            http_client=object(),  # type: ignore[arg-type]
        )
    with pytest.raises(TypeError, match="dispatcher"):
        MatomoMiddleware(hello, url="http://m.test", dispatcher=object())  # type: ignore[arg-type]


def test_the_default_dispatcher_is_a_thread_dispatcher() -> None:
    middleware = MatomoMiddleware(hello, url="http://m.test")
    dispatcher = middleware.dispatcher
    assert isinstance(dispatcher, ThreadDispatcher)
    assert dispatcher.config is middleware.config
    dispatcher.close(0.1)
