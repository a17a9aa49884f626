"""Skipping bot traffic locally: all bots, or chosen categories (e.g. keep only AI crawlers)."""

from __future__ import annotations

import pytest

from matomo_tracking import TrackingConfig
from matomo_tracking.filters import Filters
from matomo_tracking.request import request_from_wsgi

AGENTS = {
    "ai": "Mozilla/5.0 (compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
    "search": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "preview": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "browser": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0",
}


def _skipped(ignore_bots: object) -> dict[str, bool]:
    filters = Filters(TrackingConfig(url="https://m.example", ignore_bots=ignore_bots))  # type: ignore[arg-type]
    return {
        kind: filters.skip_request(
            request_from_wsgi({"PATH_INFO": "/", "HTTP_USER_AGENT": ua}), 0.0
        )
        == "bot"
        for kind, ua in AGENTS.items()
    }


def test_ignore_bots_true_skips_every_bot_but_not_browsers() -> None:
    assert _skipped(True) == {"ai": True, "search": True, "preview": True, "browser": False}


def test_ignore_everything_but_ai_crawlers() -> None:
    others = {"search", "preview", "monitor", "seo", "library", "other"}
    assert _skipped(others) == {"ai": False, "search": True, "preview": True, "browser": False}


def test_default_skips_no_bot() -> None:
    assert not any(_skipped(False).values())


def test_unknown_category_is_named() -> None:
    with pytest.raises(ValueError, match="ignore_bots"):
        TrackingConfig(url="https://m.example", ignore_bots={"robots"})
