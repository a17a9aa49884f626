"""Which requests become hits: paths, patterns, methods, agents, bots, privacy signals and
sampling before the app runs; content type and status after it."""

from __future__ import annotations

from typing import Any

import pytest

from matomo_tracking import RequestView, ResponseView, request_from_asgi
from matomo_tracking.filters import Filters, path_is_ignored
from tests.core.builders import CHROME, config, scope

GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def request(
    path: str = "/", *, method: str = "GET", ua: str = CHROME, **headers: str
) -> RequestView:
    pairs = [(b"host", b"example.org"), (b"user-agent", ua.encode())]
    pairs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return request_from_asgi(scope(path, method=method, headers=pairs))


PATHS = [
    ("/health", ("/health",), True),
    ("/health/live", ("/health",), True),
    ("/healthy", ("/health",), False),
    ("/health-check", ("/health",), False),
    ("/api/health", ("/health",), False),
    ("/", ("/health",), False),
    ("/static/app.js", ("/static", "/media"), True),
    ("/media", ("/static", "/media"), True),
    ("/anything", ("/",), True),
    ("/", ("/",), True),
    ("/x", (), False),
]


@pytest.mark.parametrize(
    ("path", "prefixes", "ignored"), PATHS, ids=[f"{p} {list(x)}" for p, x, _ in PATHS]
)
def test_path_is_ignored_is_segment_aware(
    path: str, prefixes: tuple[str, ...], ignored: bool
) -> None:
    assert path_is_ignored(path, prefixes) is ignored


def test_ignore_paths_from_config_with_trailing_slash() -> None:
    filters = Filters(config(ignore_paths=["/health/"]))

    assert filters.skip_path("GET", "/health") is True
    assert filters.skip_path("GET", "/health/ready") is True
    assert filters.skip_path("GET", "/healthy") is False


PATTERNS = [
    (r"/api/v\d+/internal/.*", "/api/v2/internal/metrics", True),
    (r"/api/v\d+/internal/.*", "/public/api/v2/internal/x", False),  # full match, not search
    (r"/api/v\d+/internal/.*", "/api/v2/internal", False),
    (r".*\.(css|js|png)", "/static/app.js", True),
    (r".*\.(css|js|png)", "/static/app.json", False),
    (r"/users/\d+", "/users/42", True),
    (r"/users/\d+", "/users/42/edit", False),
]


@pytest.mark.parametrize(
    ("pattern", "path", "ignored"), PATTERNS, ids=[f"{p} {x}" for p, x, _ in PATTERNS]
)
def test_ignore_patterns_full_match(pattern: str, path: str, ignored: bool) -> None:
    filters = Filters(config(ignore_patterns=[pattern, r"/never"]))

    assert filters.skip_path("GET", path) is ignored
    assert (filters.skip_request(request(path), 0.0) == "path") is ignored


METHODS = [
    ({}, "OPTIONS", "path"),
    ({}, "HEAD", "path"),
    ({}, "GET", None),
    ({}, "POST", None),
    ({"ignore_methods": ["post", "put"]}, "POST", "path"),
    ({"ignore_methods": ["post", "put"]}, "HEAD", None),
    ({"ignore_methods": []}, "OPTIONS", None),
]


@pytest.mark.parametrize(
    ("kwargs", "method", "reason"), METHODS, ids=[f"{k}-{m}" for k, m, _ in METHODS]
)
def test_methods(kwargs: dict[str, Any], method: str, reason: str | None) -> None:
    assert Filters(config(**kwargs)).skip_request(request(method=method.lower()), 0.0) == reason


REQUESTS: list[tuple[str, dict[str, Any], RequestView, str | None]] = [
    ("ordinary", {}, request(), None),
    (
        "agent-pattern",
        {"ignore_user_agents": ["uptime", r"^curl/"]},
        request(ua="UptimeMonitor/1.0"),
        "user_agent",
    ),
    (
        "agent-pattern-case-insensitive",
        {"ignore_user_agents": ["^CURL/"]},
        request(ua="curl/8.5.0"),
        "user_agent",
    ),
    ("agent-pattern-not-matching", {"ignore_user_agents": ["^curl/"]}, request(ua="xcurl/1"), None),
    ("bots-ignored", {"ignore_bots": True}, request(ua=GOOGLEBOT), "bot"),
    ("bots-ignored-browser", {"ignore_bots": True}, request(), None),
    ("bots-tracked-by-default", {}, request(ua=GOOGLEBOT), None),
    ("dnt-respected", {"respect_dnt": True}, request(dnt="1"), "dnt"),
    ("dnt-zero", {"respect_dnt": True}, request(dnt="0"), None),
    ("dnt-not-respected", {}, request(dnt="1"), None),
    ("gpc-respected", {"respect_gpc": True}, request(sec_gpc=" 1 "), "gpc"),
    ("gpc-not-respected", {"respect_dnt": True}, request(sec_gpc="1"), None),
    (
        "path-before-agent",
        {"ignore_paths": ["/x"], "ignore_bots": True},
        request("/x", ua=GOOGLEBOT),
        "path",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "view", "reason"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_skip_request(kwargs: dict[str, Any], view: RequestView, reason: str | None) -> None:
    assert Filters(config(**kwargs)).skip_request(view, 0.0) == reason


SAMPLES = [
    (1.0, 0.999999, None),
    (0.25, 0.0, None),
    (0.25, 0.2499, None),
    (0.25, 0.25, "sampled"),
    (0.25, 0.9, "sampled"),
    (0.0, 0.0, "sampled"),
]


@pytest.mark.parametrize(
    ("rate", "draw", "reason"), SAMPLES, ids=[f"rate={r}-draw={d}" for r, d, _ in SAMPLES]
)
def test_sampling_from_injected_draws(rate: float, draw: float, reason: str | None) -> None:
    assert Filters(config(sample_rate=rate)).skip_request(request(), draw) == reason


def test_sampling_keeps_the_configured_share() -> None:
    filters = Filters(config(sample_rate=0.3))
    draws = [i / 1000 for i in range(1000)]

    kept = [d for d in draws if filters.skip_request(request(), d) is None]

    assert len(kept) == 300


RESPONSES = [
    ({}, ResponseView(200, "text/html"), None),
    ({"ignore_html": True}, ResponseView(200, "text/html"), "html"),
    ({"ignore_html": True}, ResponseView(200, "text/html; charset=utf-8"), "html"),
    ({"ignore_html": True}, ResponseView(200, "Text/HTML ;charset=UTF-8"), "html"),
    ({"ignore_html": True}, ResponseView(200, "application/json"), None),
    ({"ignore_html": True}, ResponseView(200, "application/xhtml+xml"), None),
    ({"ignore_html": True}, ResponseView(200, ""), None),
    ({"ignore_status_codes": [404, 401]}, ResponseView(404, "text/plain"), "status"),
    ({"ignore_status_codes": [404, 401]}, ResponseView(500, "text/plain"), None),
    ({"ignore_status_codes": [404], "ignore_html": True}, ResponseView(404, "text/html"), "status"),
]


@pytest.mark.parametrize(
    ("kwargs", "response", "reason"),
    RESPONSES,
    ids=[f"{k}-{r.status}-{r.content_type or 'none'}" for k, r, _ in RESPONSES],
)
def test_skip_response(kwargs: dict[str, Any], response: ResponseView, reason: str | None) -> None:
    assert Filters(config(**kwargs)).skip_response(response) == reason


BOT_CATEGORIES = [
    (["ai"], "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)", "bot"),
    (["ai"], GOOGLEBOT, None),
    (["search", "monitor"], GOOGLEBOT, "bot"),
    (["search"], CHROME, None),
]


@pytest.mark.parametrize(
    ("categories", "ua", "reason"),
    BOT_CATEGORIES,
    ids=["ai-skipped", "search-kept", "search-skipped", "browser"],
)
def test_ignore_bot_categories(categories: list[str], ua: str, reason: str | None) -> None:
    filters = Filters(config(ignore_bots=categories))

    assert filters.skip_request(request(ua=ua), 0.0) == reason


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"x_do_not_track": "1"}, "dnt"),
        ({"dnt": "0, 1"}, "dnt"),
        ({"dnt": "0,0"}, None),
        ({"sec_gpc": "0, 1"}, "gpc"),
        ({"dnt": ""}, None),
    ],
    ids=["x-do-not-track", "repeated-dnt", "repeated-zero", "repeated-gpc", "empty"],
)
def test_privacy_signals_in_repeated_headers(headers: dict[str, str], reason: str | None) -> None:
    filters = Filters(config(respect_dnt=True, respect_gpc=True))

    assert filters.skip_request(request(**headers), 0.0) == reason
