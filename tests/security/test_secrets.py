"""Secrets: one test per rule. ``token_auth`` never travels in a URL, never appears in a log
record (at any level, httpx and httpcore included), an exception, a traceback, a repr,
``stats()``, the CLI's output or generated JavaScript; redirects are never followed; the
configured URL must be http(s).

The session-wide handler of ``tests/conftest.py`` watches every log record of the whole run;
the tests here also look at what each scenario logged, so that a leak is pinned to its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from matomo_asgi import AsyncioDispatcher, AsyncTracker
from matomo_asgi import MatomoMiddleware as AsgiMiddleware
from matomo_tracking.config import TrackingConfig
from matomo_tracking.context import TrackingContext
from matomo_tracking.delivery import BatchDelivery, DispatchStats, Send, StatsRecorder
from matomo_tracking.hits import Hit, HitBuilder
from matomo_tracking.snippet import tracking_code, tracking_code_for
from matomo_tracking.testing import CollectorServer
from matomo_tracking.wire import encode_hit
from matomo_wsgi import MatomoMiddleware as WsgiMiddleware
from matomo_wsgi import ThreadDispatcher, Tracker
from matomo_wsgi.cli import check, main
from tests.security.harness import (
    AsgiApp,
    TargetRecordingCollector,
    WsgiApp,
    arun_asgi,
    asgi_scope,
    run_wsgi,
    wsgi_environ,
)
from tests.sentinel import SENTINEL_TOKEN

FAST: dict[str, Any] = {
    "timeout": 0.3,
    "backoff_base": 0.01,
    "backoff_max": 0.02,
    "batch_max_age": 0.01,
    "shutdown_timeout": 1.0,
    "visitor_salt": "security-tests",
}


def page_view(n: int = 0) -> Hit:
    return Hit(
        {"idsite": "1", "rec": "1", "url": f"https://shop.test/{n}", "action_name": "x"}, 0.0
    )


@contextlib.contextmanager
def serving(**collector: Any) -> Iterator[CollectorServer]:
    collector.setdefault("token_auth", SENTINEL_TOKEN)
    with CollectorServer(TargetRecordingCollector(**collector)) as server:
        yield server


def targets(server: CollectorServer) -> list[tuple[str, str, str]]:
    collector = server.collector
    assert isinstance(collector, TargetRecordingCollector)
    return collector.targets


def assert_token_only_in_bodies(server: CollectorServer) -> None:
    """Every request carried the token in its POST body, none in its request line."""
    collector = server.collector
    assert isinstance(collector, TargetRecordingCollector)
    assert collector.targets, "nothing was posted"
    for (method, path, query), body in zip(collector.targets, collector.bodies, strict=True):
        assert method == "POST"
        assert SENTINEL_TOKEN not in path + "?" + query
        assert json.loads(body)["token_auth"] == SENTINEL_TOKEN


def deliver_with_threads(
    config: TrackingConfig, hits: int = 3, client: httpx.Client | None = None
) -> DispatchStats:
    dispatcher = ThreadDispatcher(config, http_client=client)
    try:
        for n in range(hits):
            dispatcher.submit(page_view(n))
        dispatcher.flush(0.6)
    finally:
        dispatcher.close(0.3)
    return dispatcher.stats()


def deliver_with_asyncio(
    config: TrackingConfig, hits: int = 3, follow_redirects: bool = False
) -> DispatchStats:
    async def run() -> DispatchStats:
        client = httpx.AsyncClient(follow_redirects=follow_redirects) if follow_redirects else None
        dispatcher = AsyncioDispatcher(config, http_client=client)
        try:
            for n in range(hits):
                dispatcher.submit(page_view(n))
            await dispatcher.aflush(0.6)
        finally:
            await dispatcher.aclose(0.3)
            if client is not None:
                await client.aclose()
        return dispatcher.stats()

    return asyncio.run(run())


Deliver = Callable[[TrackingConfig], DispatchStats]
DISPATCHERS: dict[str, Deliver] = {"thread": deliver_with_threads, "asyncio": deliver_with_asyncio}


def logged_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(
        formatter.format(record) + repr(record.args) + repr(record.__dict__.get("extra"))
        for record in caplog.records
    )


# -- token_auth never travels in a URL ------------------------------------------------------------


@pytest.mark.parametrize("dispatcher", DISPATCHERS)
def test_dispatchers_post_the_token_in_the_body_never_in_the_url(dispatcher: str) -> None:
    with serving() as server:
        config = TrackingConfig(url=server.base_url, token_auth=SENTINEL_TOKEN, **FAST)
        stats = DISPATCHERS[dispatcher](config)

    assert stats.sent == 3
    assert_token_only_in_bodies(server)
    assert {path for _, path, _ in targets(server)} == {"/matomo.php"}


def test_a_query_of_the_configured_url_is_kept_and_the_token_not_added_to_it() -> None:
    with serving() as server:
        config = TrackingConfig(
            url=server.url + "?queuedtracking=0", token_auth=SENTINEL_TOKEN, **FAST
        )
        deliver_with_threads(config)

    assert {query for _, _, query in targets(server)} == {"queuedtracking=0"}
    assert_token_only_in_bodies(server)


def test_middlewares_and_trackers_post_the_token_in_the_body_never_in_the_url() -> None:
    with serving() as server:
        options: dict[str, Any] = {"url": server.base_url, "token_auth": SENTINEL_TOKEN, **FAST}

        async def asgi_side() -> None:
            middleware = AsgiMiddleware(AsgiApp(), **options)
            await arun_asgi(middleware, asgi_scope(query="token_auth=" + SENTINEL_TOKEN))
            await middleware.aclose(2.0)
            tracker = AsyncTracker(**options)
            tracker.track_event("c", "a", url="https://shop.test/")
            await tracker.aclose(2.0)

        asyncio.run(asgi_side())
        middleware = WsgiMiddleware(WsgiApp(), **options)
        run_wsgi(middleware, wsgi_environ(query="token_auth=" + SENTINEL_TOKEN))
        assert isinstance(middleware.dispatcher, ThreadDispatcher)
        middleware.dispatcher.close(2.0)
        with Tracker(**options) as tracker:
            tracker.track_event("c", "a", url="https://shop.test/")

    assert len(server.collector.hits) == 4
    assert_token_only_in_bodies(server)
    # The visitor's own token_auth parameter (another system's secret) is redacted too.
    for body in server.collector.requests:
        assert body["token"]
    urls = [hit["url"] for hit in server.collector.hits]
    assert all(SENTINEL_TOKEN not in url for url in urls)


@pytest.mark.parametrize(
    "url",
    [
        "https://matomo.test/matomo.php?token_auth=" + SENTINEL_TOKEN,
        "https://matomo.test/?TOKEN_AUTH=" + SENTINEL_TOKEN,
        "https://matomo.test/matomo.php?a=1&token_auth=" + SENTINEL_TOKEN,
    ],
)
def test_a_url_carrying_token_auth_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(ValueError, match="token_auth") as caught:
        TrackingConfig(url=url)

    assert SENTINEL_TOKEN not in str(caught.value)
    assert SENTINEL_TOKEN not in "".join(traceback.format_exception(caught.value))


# -- only http(s) ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://matomo.test/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "data:text/plain,x",
        "gopher://matomo.test/",
        "//matomo.test/",
        "matomo.test",
        "http:///matomo.php",
    ],
)
@pytest.mark.parametrize("key", ["url", "base_url"])
def test_only_http_and_https_urls_are_accepted(key: str, url: str) -> None:
    options: dict[str, Any] = {"url": "https://matomo.test", key: url, "token_auth": SENTINEL_TOKEN}

    with pytest.raises(ValueError, match=f"^{key}=") as caught:
        TrackingConfig(**options)

    assert SENTINEL_TOKEN not in str(caught.value)


# -- never in an exception or traceback -----------------------------------------------------------


def _constructors() -> dict[str, Callable[..., object]]:
    return {
        "config": lambda **o: TrackingConfig(**o),
        "asgi-middleware": lambda **o: AsgiMiddleware(AsgiApp(), **o),
        "wsgi-middleware": lambda **o: WsgiMiddleware(WsgiApp(), **o),
        "tracker": lambda **o: Tracker(**o),
        "async-tracker": lambda **o: AsyncTracker(**o),
    }


@pytest.mark.parametrize("made_by", sorted(_constructors()))
@pytest.mark.parametrize(
    "bad",
    [
        {"url": "ftp://x", "token_auth": SENTINEL_TOKEN},
        {"url": "https://matomo.test", "token_auth": [SENTINEL_TOKEN]},
        {"url": "https://matomo.test", "token_auth": SENTINEL_TOKEN.encode()},
        {"url": "https://matomo.test", "token_auth": {"token": SENTINEL_TOKEN}},
        {"url": "https://matomo.test", "token_auth": SENTINEL_TOKEN, "site_id": 0},
        {"url": "https://matomo.test", "token_auth": SENTINEL_TOKEN, "timeout": -1},
        {"url": "https://matomo.test", "token_auth": SENTINEL_TOKEN, "no_such_key": 1},
        {"url": "https://matomo.test", "visitor_salt": [SENTINEL_TOKEN]},
    ],
    ids=[
        "bad-url",
        "token-list",
        "token-bytes",
        "token-dict",
        "bad-site",
        "bad-timeout",
        "unknown-key",
        "salt-list",
    ],
)
def test_configuration_errors_never_show_the_token(made_by: str, bad: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)) as caught:
        _constructors()[made_by](**bad)

    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value)
    assert SENTINEL_TOKEN not in text
    assert caught.value.__cause__ is None or SENTINEL_TOKEN not in repr(caught.value.__cause__)


# -- never in a repr or in stats() ----------------------------------------------------------------


def test_no_repr_shows_the_token() -> None:
    url = "https://shop:pw-0xbeef@matomo.test"  # a Matomo behind HTTP basic auth
    config = TrackingConfig(url=url, token_auth=SENTINEL_TOKEN, visitor_salt="salt-0xdead")
    options: dict[str, Any] = {"url": url, "token_auth": SENTINEL_TOKEN}
    threads = ThreadDispatcher(config)
    wsgi = WsgiMiddleware(WsgiApp(), **options)
    tracker = Tracker(**options)
    stats = StatsRecorder(secret=SENTINEL_TOKEN)
    stats.error(f"an error naming {SENTINEL_TOKEN}")
    objects: list[object] = [
        config,
        AsgiMiddleware(AsgiApp(), **options),
        wsgi,
        threads,
        AsyncioDispatcher(config),
        tracker,
        AsyncTracker(**options),
        TrackingContext(),
        HitBuilder(config, salt=b"salt"),
        stats.snapshot(),
    ]
    try:
        for item in objects:
            assert SENTINEL_TOKEN not in repr(item), type(item).__name__
            assert SENTINEL_TOKEN not in str(item), type(item).__name__
            assert "salt-0xdead" not in repr(item), type(item).__name__
            assert "pw-0xbeef" not in repr(item), type(item).__name__
    finally:
        threads.close(0.1)
        assert isinstance(wsgi.dispatcher, ThreadDispatcher)
        wsgi.dispatcher.close(0.1)
        tracker.close(0.1)


def test_a_send_step_does_not_show_its_body() -> None:
    config = TrackingConfig(url="https://matomo.test", token_auth=SENTINEL_TOKEN)
    step = BatchDelivery([encode_hit(page_view())], config, StatsRecorder()).next_step(1.0, 0.5)

    assert isinstance(step, Send)
    assert SENTINEL_TOKEN.encode() in step.body  # it is there, to be posted
    assert SENTINEL_TOKEN not in repr(step)


# -- never in a log record or stats(), whatever goes wrong ---------------------------------------

FAILURES: dict[str, Callable[[TargetRecordingCollector], None]] = {
    "401": lambda c: c.fail_with(401),
    "403": lambda c: c.fail_with(403),
    "404": lambda c: c.fail_with(404),
    "500": lambda c: c.fail_with(500),
    "503-retry-after": lambda c: c.fail_with(503, retry_after="0"),
    "400-echoing-the-body": lambda c: setattr(c, "echo_status", 400),
    "200-echoing-the-body": lambda c: setattr(c, "echo_status", 200),
    "timeout": lambda c: c.slow(1.0),
}
EXPECTED_IN_LOG = {
    "401": "401",
    "403": "403",
    "404": "404",
    "500": "500",
    "503-retry-after": "503",
    "400-echoing-the-body": "400",
    "200-echoing-the-body": "confirmed 0 of",  # the echo is no Matomo answer
    "timeout": "timeout",
}


@pytest.mark.parametrize("dispatcher", DISPATCHERS)
@pytest.mark.parametrize("failure", FAILURES)
def test_failures_never_log_the_token(
    dispatcher: str, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serving() as server:
        collector = server.collector
        assert isinstance(collector, TargetRecordingCollector)
        FAILURES[failure](collector)
        config = TrackingConfig(url=server.base_url, token_auth=SENTINEL_TOKEN, **FAST)
        stats = DISPATCHERS[dispatcher](config)

    logged = logged_text(caplog)
    assert EXPECTED_IN_LOG[failure] in logged  # the failure was logged ...
    assert SENTINEL_TOKEN not in logged  # ... without the token
    assert SENTINEL_TOKEN not in repr(stats)
    if failure != "timeout":  # a slow collector records the request only once it answers
        assert_token_only_in_bodies(server)


@pytest.mark.parametrize("dispatcher", DISPATCHERS)
def test_a_refused_connection_never_logs_the_token(
    dispatcher: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serving() as server:
        url = server.base_url
    config = TrackingConfig(url=url, token_auth=SENTINEL_TOKEN, **FAST)

    stats = DISPATCHERS[dispatcher](config)

    assert stats.sent == 0
    assert "could not reach" in (stats.last_error or "")
    assert SENTINEL_TOKEN not in repr(stats) + logged_text(caplog)


# -- redirects are never followed ------------------------------------------------------------------


@pytest.mark.parametrize("dispatcher", DISPATCHERS)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(
    dispatcher: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        serving() as elsewhere,
        serving(redirect_to=elsewhere.url, redirect_status=status) as server,
    ):
        config = TrackingConfig(url=server.base_url, token_auth=SENTINEL_TOKEN, **FAST)
        stats = DISPATCHERS[dispatcher](config)

    assert targets(elsewhere) == []  # nothing arrived at the other address
    assert len(targets(server)) == 1  # one POST, refused, never resent
    assert (stats.sent, stats.failed) == (0, 3)
    assert "redirect" in (stats.last_error or "")
    assert SENTINEL_TOKEN not in repr(stats) + logged_text(caplog)


def test_redirects_are_not_followed_even_by_a_client_that_follows_them() -> None:
    with serving() as elsewhere, serving(redirect_to=elsewhere.url, redirect_status=307) as server:
        config = TrackingConfig(url=server.base_url, token_auth=SENTINEL_TOKEN, **FAST)
        with httpx.Client(follow_redirects=True) as client:
            threads = deliver_with_threads(config, client=client)
        asyncs = deliver_with_asyncio(config, follow_redirects=True)

    assert targets(elsewhere) == []
    assert threads.failed == asyncs.failed == 3


# -- never in the CLI's output -------------------------------------------------------------------


def _run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args, "--timeout", "0.3"])
    out, err = capsys.readouterr()
    return code, out + err


CLI_OUTCOMES: dict[str, tuple[Callable[[TargetRecordingCollector], None], list[str], int, str]] = {
    "ok": (lambda c: None, [], 0, "OK"),
    "unknown-site": (lambda c: None, ["--site-id", "99"], 1, "invalid"),
    "401": (lambda c: c.fail_with(401), [], 1, "401"),
    "403": (lambda c: c.fail_with(403), [], 1, "403"),
    "500": (lambda c: c.fail_with(500), [], 1, "500"),
    "200-echoing-the-body": (lambda c: setattr(c, "echo_status", 200), [], 1, ""),
    "timeout": (lambda c: c.slow(1.0), [], 1, "Timeout"),
}


@pytest.mark.parametrize("token_from", ["env", "argv"])
@pytest.mark.parametrize("outcome", CLI_OUTCOMES)
def test_cli_check_never_prints_the_token(
    outcome: str,
    token_from: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prepare, args, expected_code, expected_text = CLI_OUTCOMES[outcome]
    token_args = ["--token-auth", SENTINEL_TOKEN] if token_from == "argv" else []
    if token_from == "env":
        monkeypatch.setenv("MATOMO_TOKEN_AUTH", SENTINEL_TOKEN)
    with serving() as server:
        collector = server.collector
        assert isinstance(collector, TargetRecordingCollector)
        prepare(collector)
        code, output = _run_cli(capsys, "--url", server.base_url, *token_args, *args)

    assert (code, expected_text in output) == (expected_code, True), output
    assert SENTINEL_TOKEN not in output
    if outcome != "timeout":
        assert_token_only_in_bodies(server)


def test_cli_check_never_prints_the_token_when_refused_redirected_or_misconfigured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATOMO_TOKEN_AUTH", SENTINEL_TOKEN)
    with serving() as closed:
        refused_url = closed.base_url
    outputs = [_run_cli(capsys, "--url", refused_url)]
    with serving() as elsewhere, serving(redirect_to=elsewhere.url) as server:
        outputs.append(_run_cli(capsys, "--url", server.base_url))
    assert targets(elsewhere) == []
    outputs.append(_run_cli(capsys, "--url", "ftp://matomo.test", "--token-auth", SENTINEL_TOKEN))
    outputs.append(
        _run_cli(capsys, "--url", "https://m.test/matomo.php?token_auth=" + SENTINEL_TOKEN)
    )

    assert [code for code, _ in outputs] == [1, 1, 2, 2]
    assert "refused" in outputs[0][1]
    assert "redirect" in outputs[1][1]
    for _, output in outputs:
        assert SENTINEL_TOKEN not in output


def test_cli_check_masks_a_token_that_a_server_echoes(capsys: pytest.CaptureFixture[str]) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        token = json.loads(request.content)["token_auth"]
        if request.url.path.endswith("/redirect/matomo.php"):
            return httpx.Response(302, headers={"location": f"https://x.test/?token_auth={token}"})
        return httpx.Response(
            200, json={"status": "success", "tracked": 0, "invalid": 0, "echo": token}
        )

    with httpx.Client(transport=httpx.MockTransport(echo)) as client:
        codes = [
            check(f"https://m.test/{where}", 1, SENTINEL_TOKEN, client=client)
            for where in ("redirect", "echo")
        ]
    output = capsys.readouterr().out

    assert codes == [1, 1]
    assert "HTTP 302" in output
    assert "tracked" in output
    assert SENTINEL_TOKEN not in output


# -- never in generated JavaScript ---------------------------------------------------------------


def test_generated_javascript_never_contains_the_token() -> None:
    config = TrackingConfig(url="https://matomo.test", site_id=3, token_auth=SENTINEL_TOKEN)
    codes = [
        tracking_code_for(config),
        tracking_code_for(
            config, noscript=True, user_id="u", document_title="t", dimensions={1: "d"}
        ),
        tracking_code(url=config.url, site_id=1, noscript=True),
    ]

    for code in codes:
        assert "matomo.test" in code
        assert SENTINEL_TOKEN not in code
