"""Shared fixtures. The collector fixtures (``matomo_collector``, ``matomo_server``) come from
the project's own pytest plugin, ``matomo_tracking.testing.plugin``."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Registered here, not through the "matomo" entry point (disabled in pyproject's addopts):
# entry-point plugins are imported before coverage starts, so the whole core would be
# measured as never imported.
pytest_plugins = ["matomo_tracking.testing.plugin"]

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("long", max_examples=20_000, deadline=None)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# -- the token must never leak ------------------------------------------------------------
# Every test that configures a token uses SENTINEL_TOKEN. For the whole session every log
# record (all loggers, DEBUG and up, httpx and httpcore included, tracebacks formatted) and
# every failing test's report are searched for it; finding it fails the session.
import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from tests.sentinel import SENTINEL_TOKEN  # noqa: E402


class _SentinelHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []
        self.records = 0
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        try:
            text = self.format(record)
        except Exception:  # a broken record is not our concern here
            return
        if SENTINEL_TOKEN in text:
            self.leaks.append(text[:500])


_HANDLER = _SentinelHandler()


@pytest.fixture(scope="session", autouse=True)
def _token_never_logged() -> Iterator[_SentinelHandler]:
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(_HANDLER)
    root.setLevel(logging.DEBUG)
    for name in ("httpx", "httpcore", "matomo_tracking", "matomo_asgi", "matomo_wsgi"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield _HANDLER
    root.removeHandler(_HANDLER)
    root.setLevel(old_level)
    assert not _HANDLER.leaks, f"token_auth leaked into logs: {_HANDLER.leaks[:3]}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    leaked = call.excinfo is not None and SENTINEL_TOKEN in str(report.longrepr)
    if leaked and "allow_token_in_report" not in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"token_auth appeared in an exception or traceback of {item.nodeid}"
