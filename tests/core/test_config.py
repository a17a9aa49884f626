"""Configuration: every key's bad values are refused with a ValueError naming the key and the
value; the token is never shown; the endpoint is derived from any form of the URL."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from matomo_tracking import DEFAULT_REDACTED_QUERY_PARAMS, TrackingConfig
from matomo_tracking.config import TrackingOptions, endpoint_url
from tests.core.builders import MATOMO, TOKEN

NAN = float("nan")

# (key, bad value, how the value must appear in the message)
BAD_VALUES: list[tuple[str, Any, str]] = [
    ("url", 123, "123"),
    ("url", "ftp://matomo.example.org", "'ftp://matomo.example.org'"),
    ("url", "matomo.example.org", "'matomo.example.org'"),
    ("url", "https://", "'https://'"),
    ("url", "https://matomo.example.org/a b", "'https://matomo.example.org/a b'"),
    ("url", "https://matomo.example.org/\x00", "'https://matomo.example.org/\\x00'"),
    ("base_url", "www.example.org", "'www.example.org'"),
    ("base_url", b"https://x", "b'https://x'"),
    ("site_id", 0, "0"),
    ("site_id", -1, "-1"),
    ("site_id", True, "True"),
    ("site_id", "1", "'1'"),
    ("site_id", 1.5, "1.5"),
    ("ignore_paths", "/health", "'/health'"),
    ("ignore_paths", ["health"], "['health']"),
    ("ignore_paths", [1], "[1]"),
    ("ignore_patterns", ["(unclosed"], "'(unclosed'"),
    ("ignore_patterns", "/x", "'/x'"),
    ("ignore_methods", "GET", "'GET'"),
    ("ignore_methods", [1], "[1]"),
    ("ignore_html", "yes", "'yes'"),
    ("ignore_html", 1, "1"),
    ("ignore_status_codes", [99], "[99]"),
    ("ignore_status_codes", [600], "[600]"),
    ("ignore_status_codes", ["404"], "['404']"),
    ("ignore_status_codes", [True], "[True]"),
    ("ignore_status_codes", "404", "'404'"),
    ("ignore_status_codes", 404, "404"),
    ("ignore_user_agents", ["[bad"], "'[bad'"),
    ("ignore_bots", None, "None"),
    ("sample_rate", -0.1, "-0.1"),
    ("sample_rate", 1.5, "1.5"),
    ("sample_rate", NAN, "nan"),
    ("sample_rate", "0.5", "'0.5'"),
    ("sample_rate", True, "True"),
    ("trusted_proxies", "10.0.0.1", "'10.0.0.1'"),
    ("trusted_proxies", ["10.0.0.300"], "'10.0.0.300'"),
    ("trusted_proxies", ["proxy.local"], "'proxy.local'"),
    ("allowed_hosts", "example.org", "'example.org'"),
    ("allowed_hosts", [None], "[None]"),
    ("respect_dnt", "true", "'true'"),
    ("respect_gpc", 0, "0"),
    ("anonymize_ip", 4, "4"),
    ("anonymize_ip", -1, "-1"),
    ("anonymize_ip", True, "True"),
    ("anonymize_ip", 2.0, "2.0"),
    ("anonymize_ip", "1", "'1'"),
    ("redact_query_params", "password", "'password'"),
    ("redact_query_params", [1], "[1]"),
    ("redact_query", "password", "'password'"),
    ("dimensions", [(1, "x")], "[(1, 'x')]"),
    ("dimensions", {0: "x"}, "{0: 'x'}"),
    ("dimensions", {1: 2}, "{1: 2}"),
    ("dimensions", {"1": "x"}, "{'1': 'x'}"),
    ("dimensions", {True: "x"}, "{True: 'x'}"),
    ("status_dimension", 0, "0"),
    ("method_dimension", "1", "'1'"),
    ("bytes_dimension", True, "True"),
    ("max_custom_variables", 0, "0"),
    ("max_custom_variables", True, "True"),
    ("bots", "all", "'all'"),
    ("bots", None, "None"),
    ("bot_source", "", "''"),
    ("bot_source", "x" * 51, "'" + "x" * 51 + "'"),
    ("bot_source", 5, "5"),
    ("user_id", "not callable", "'not callable'"),
    ("action_name", 42, "42"),
    ("batch_max_hits", 0, "0"),
    ("batch_max_bytes", -1, "-1"),
    ("queue_max_hits", 1.5, "1.5"),
    ("queue_max_bytes", True, "True"),
    ("batch_max_age", 0, "0"),
    ("timeout", -1.0, "-1.0"),
    ("connect_timeout", 0, "0"),
    ("probe_interval", "2", "'2'"),
    ("timeout", NAN, "nan"),
    ("shutdown_timeout", "5", "'5'"),
    ("backoff_base", True, "True"),
    ("backoff_max", 0.0, "0.0"),
    ("max_hit_age", NAN, "nan"),
    ("sync_mode", "no", "'no'"),
    ("max_concurrent_batches", 0, "0"),
    ("max_concurrent_batches", 2.0, "2.0"),
    ("batch_max_hits", 20_000, "20000"),  # more than queue_max_hits
    ("spool", "", "''"),
    ("spool", ":memory:", "':memory:'"),
    ("spool", "a\x00b", "'a\\x00b'"),
    ("spool", 3, "3"),
    ("spool_max_bytes", 0, "0"),
    ("spool_max_bytes", 1.5, "1.5"),
    ("sender", "celery", "'celery'"),
    ("sender", None, "None"),
]


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    BAD_VALUES,
    ids=[f"{key}={value!r}"[:60] for key, value, _ in BAD_VALUES],
)
def test_bad_value_names_key_and_value(key: str, value: Any, shown: str) -> None:
    kwargs: dict[str, Any] = {"url": MATOMO, "token_auth": TOKEN, key: value}

    with pytest.raises(ValueError, match="is invalid: expected") as caught:
        TrackingConfig(**kwargs)

    message = str(caught.value)
    assert message.startswith(f"{key}={shown} is invalid: expected ")
    assert TOKEN not in message


def test_every_key_has_bad_values() -> None:
    tested = {key for key, _, _ in BAD_VALUES}
    secrets = {"token_auth", "visitor_salt"}  # tested below: their values are never shown
    assert tested | secrets == {f.name for f in dataclasses.fields(TrackingConfig)}


@pytest.mark.parametrize("key", ["token_auth", "visitor_salt"])
@pytest.mark.parametrize("value", ["", 12345, b"secret-bytes"], ids=["empty", "int", "bytes"])
def test_secret_values_are_masked_in_errors(key: str, value: Any) -> None:
    with pytest.raises(ValueError, match="is invalid") as caught:
        TrackingConfig(url=MATOMO, **{key: value})

    assert str(caught.value).startswith(f"{key}='***' is invalid: expected a non-empty string")
    assert "12345" not in str(caught.value)
    assert "secret-bytes" not in str(caught.value)


def test_blank_token_is_refused_and_masked() -> None:
    with pytest.raises(ValueError, match=r"token_auth='\*\*\*' is invalid"):
        TrackingConfig(url=MATOMO, token_auth="   ")


def test_secrets_are_not_in_repr() -> None:
    config = TrackingConfig(url=MATOMO, token_auth=TOKEN, visitor_salt="salt-value-42")

    assert TOKEN not in repr(config)
    assert "salt-value-42" not in repr(config)
    assert "url='https://matomo.example.org'" in repr(config)


def test_the_journal_and_the_sender() -> None:
    default = TrackingConfig(url=MATOMO)
    assert (default.spool, default.spool_max_bytes, default.sender) == (None, 256 << 20, "app")
    # a pathlib path is kept as its string
    assert TrackingConfig(url=MATOMO, spool=Path("/var/spool/m.sqlite3")).spool == (
        "/var/spool/m.sqlite3"
    )
    external = TrackingConfig(url=MATOMO, spool="m.sqlite3", sender="external")
    assert external.sender == "external"


def test_an_external_sender_needs_a_journal() -> None:
    with pytest.raises(ValueError, match=r"^sender='external' needs spool=\.\.\.") as caught:
        TrackingConfig(url=MATOMO, sender="external")
    assert "spool" in str(caught.value)
    assert "sender" in str(caught.value)
    with pytest.raises(ValueError, match=r"spool=\.\.\. and sync_mode=True contradict"):
        TrackingConfig(url=MATOMO, spool="m.sqlite3", sender="external", sync_mode=True)


def test_defaults() -> None:
    config = TrackingConfig(url=MATOMO)

    assert config.site_id == 1
    assert config.token_auth is None
    assert config.ignore_methods == frozenset({"OPTIONS", "HEAD"})
    assert config.redact_query_params == DEFAULT_REDACTED_QUERY_PARAMS
    assert (config.batch_max_hits, config.batch_max_bytes, config.batch_max_age) == (
        100,
        524288,
        1.0,
    )
    assert (config.queue_max_hits, config.queue_max_bytes) == (10_000, 32 * 1024 * 1024)
    assert (config.timeout, config.shutdown_timeout, config.backoff_max) == (30.0, 5.0, 60.0)
    assert (config.connect_timeout, config.probe_interval) == (2.0, 2.0)
    assert config.max_hit_age == 23 * 3600
    assert config.bots == "exclude"


def test_values_are_normalised_once() -> None:
    config = TrackingConfig(
        url=MATOMO,
        ignore_paths=["/health/", "/", "/static"],
        ignore_methods=["options", "Trace"],
        ignore_status_codes=[404, 404, 500],
        trusted_proxies=["10.0.0.0/8", "2001:db8::1"],
        allowed_hosts=["Example.ORG"],
        redact_query_params=("SID", "Password"),
        dimensions={1: "a"},
        site_id=lambda request: 3,
        user_id=lambda request: None,
        sample_rate=0,
        timeout=1,
    )

    assert config.ignore_paths == ("/health", "/", "/static")
    assert config.ignore_methods == frozenset({"OPTIONS", "TRACE"})
    assert config.ignore_status_codes == frozenset({404, 500})
    assert config.trusted_proxies == ("10.0.0.0/8", "2001:db8::1")
    assert config.allowed_hosts == ("example.org",)
    assert config.redact_query_params == frozenset({"sid", "password"})
    assert config.dimensions == {1: "a"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.timeout = 2.0  # type: ignore[misc]


def test_infinite_durations_are_allowed() -> None:
    config = TrackingConfig(url=MATOMO, max_hit_age=float("inf"), backoff_max=float("inf"))

    assert config.max_hit_age == float("inf")


def test_from_kwargs_names_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown configuration key") as caught:
        TrackingConfig.from_kwargs({"url": MATOMO, "siteid": 1, "tokenauth": TOKEN})

    message = str(caught.value)
    assert "siteid, tokenauth;" in message
    assert "accepted: " in message
    assert "site_id" in message
    assert TOKEN not in message


def test_from_kwargs_needs_url() -> None:
    with pytest.raises(ValueError, match="url is required"):
        TrackingConfig.from_kwargs({"site_id": 2})


def test_from_kwargs_builds_a_validated_config() -> None:
    config = TrackingConfig.from_kwargs({"url": MATOMO, "site_id": 2, "ignore_paths": ["/x/"]})

    assert config == TrackingConfig(url=MATOMO, site_id=2, ignore_paths=("/x",))
    with pytest.raises(ValueError, match="site_id=0"):
        TrackingConfig.from_kwargs({"url": MATOMO, "site_id": 0})


def test_tracking_options_list_every_key() -> None:
    assert set(TrackingOptions.__annotations__) == {
        f.name for f in dataclasses.fields(TrackingConfig)
    }


ENDPOINTS = [
    ("https://matomo.example.org", "https://matomo.example.org/matomo.php"),
    ("https://matomo.example.org/", "https://matomo.example.org/matomo.php"),
    ("https://example.org/analytics", "https://example.org/analytics/matomo.php"),
    ("http://m.example.org:8080/stats/", "http://m.example.org:8080/stats/matomo.php"),
    ("https://matomo.example.org/?x=1#top", "https://matomo.example.org/matomo.php"),
    ("https://matomo.example.org/matomo.php", "https://matomo.example.org/matomo.php"),
    ("https://matomo.example.org/piwik.php", "https://matomo.example.org/piwik.php"),
    ("https://example.org/a/proxy-matomo.php", "https://example.org/a/proxy-matomo.php"),
    (
        "https://matomo.example.org/matomo.php?queuedtracking=0",
        "https://matomo.example.org/matomo.php?queuedtracking=0",
    ),
]


@pytest.mark.parametrize(("url", "endpoint"), ENDPOINTS, ids=[u for u, _ in ENDPOINTS])
def test_endpoint_url(url: str, endpoint: str) -> None:
    assert endpoint_url(url) == endpoint
    assert TrackingConfig(url=url).endpoint == endpoint


@pytest.mark.parametrize(
    ("value", "shown"),
    [("ai", "'ai'"), (["ai", "robots"], "['ai', 'robots']"), (3, "3")],
    ids=["a-string", "unknown-category", "an-int"],
)
def test_ignore_bots_categories_refused(value: Any, shown: str) -> None:
    with pytest.raises(ValueError, match="ignore_bots=") as caught:
        TrackingConfig(url=MATOMO, ignore_bots=value)

    assert str(caught.value).startswith(
        f"ignore_bots={shown} is invalid: expected True, False, or bot categories to skip: ai, "
    )


def test_ignore_bots_categories_accepted() -> None:
    config = TrackingConfig(url=MATOMO, ignore_bots=["ai", "seo"])

    assert config.ignore_bots == frozenset({"ai", "seo"})
    assert TrackingConfig(url=MATOMO, ignore_bots=True).ignore_bots is True


@pytest.mark.parametrize(
    "url",
    [
        f"https://matomo.example.org/matomo.php?token_auth={TOKEN}",
        f"https://matomo.example.org/?x=1&%20Token_Auth%20={TOKEN}",
    ],
    ids=["plain", "encoded-name"],
)
@pytest.mark.parametrize("key", ["url", "base_url"])
def test_token_in_a_url_is_refused_and_not_shown(key: str, url: str) -> None:
    kwargs: dict[str, Any] = {"url": MATOMO, key: url}

    with pytest.raises(ValueError, match="token_auth") as caught:
        TrackingConfig(**kwargs)

    assert str(caught.value) == (
        f"{key}='***' is invalid: expected a URL without token_auth: pass it as token_auth=..."
    )
