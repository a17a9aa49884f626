"""A fast user-agent classifier for crawlers, AI agents, link previewers and monitors.

The known agents are data: add a row to ``BOT_PATTERNS`` (token, name, category) and it is
compiled into the single regular expression used for every lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

__all__ = ["BOT_PATTERNS", "BotCategory", "BotInfo", "classify_user_agent", "is_ai_bot", "is_bot"]

BotCategory = Literal["ai", "search", "preview", "monitor", "seo", "library", "other"]

#: (case-insensitive token found in the user agent, bot name, category). The first match wins,
#: so specific tokens come before generic ones.
BOT_PATTERNS: tuple[tuple[str, str, BotCategory], ...] = (
    # AI crawlers and assistants
    ("GPTBot", "GPTBot", "ai"),
    ("ChatGPT-User", "ChatGPT-User", "ai"),
    ("OAI-SearchBot", "OAI-SearchBot", "ai"),
    ("ClaudeBot", "ClaudeBot", "ai"),
    ("Claude-User", "Claude-User", "ai"),
    ("Claude-SearchBot", "Claude-SearchBot", "ai"),
    ("Claude-Web", "Claude-Web", "ai"),
    ("anthropic-ai", "anthropic-ai", "ai"),
    ("PerplexityBot", "PerplexityBot", "ai"),
    ("Perplexity-User", "Perplexity-User", "ai"),
    ("Google-Extended", "Google-Extended", "ai"),
    ("Google-CloudVertexBot", "Google-CloudVertexBot", "ai"),
    ("Applebot-Extended", "Applebot-Extended", "ai"),
    ("Bytespider", "Bytespider", "ai"),
    ("CCBot", "CCBot", "ai"),
    ("cohere-ai", "cohere-ai", "ai"),
    ("cohere-training-data-crawler", "cohere-training-data-crawler", "ai"),
    ("Meta-ExternalAgent", "Meta-ExternalAgent", "ai"),
    ("Meta-ExternalFetcher", "Meta-ExternalFetcher", "ai"),
    ("FacebookBot", "FacebookBot", "ai"),
    ("Amazonbot", "Amazonbot", "ai"),
    ("YouBot", "YouBot", "ai"),
    ("DuckAssistBot", "DuckAssistBot", "ai"),
    ("MistralAI-User", "MistralAI-User", "ai"),
    ("Diffbot", "Diffbot", "ai"),
    ("AI2Bot", "AI2Bot", "ai"),
    ("Timpibot", "Timpibot", "ai"),
    ("omgili", "omgili", "ai"),
    ("ImagesiftBot", "ImagesiftBot", "ai"),
    ("PetalBot", "PetalBot", "search"),
    # search engines
    ("Googlebot", "Googlebot", "search"),
    ("Google-InspectionTool", "Google-InspectionTool", "search"),
    ("Storebot-Google", "Storebot-Google", "search"),
    ("AdsBot-Google", "AdsBot-Google", "search"),
    ("Mediapartners-Google", "Mediapartners-Google", "search"),
    ("bingbot", "Bingbot", "search"),
    ("BingPreview", "BingPreview", "preview"),
    ("DuckDuckBot", "DuckDuckBot", "search"),
    ("YandexBot", "YandexBot", "search"),
    ("YandexImages", "YandexImages", "search"),
    ("Baiduspider", "Baiduspider", "search"),
    ("Applebot", "Applebot", "search"),
    ("Sogou", "Sogou", "search"),
    ("Exabot", "Exabot", "search"),
    ("SeznamBot", "SeznamBot", "search"),
    ("Qwantify", "Qwantbot", "search"),
    ("Qwantbot", "Qwantbot", "search"),
    ("MojeekBot", "MojeekBot", "search"),
    ("Slurp", "Yahoo! Slurp", "search"),
    ("NaverBot", "Naver", "search"),
    ("Yeti/", "Naver", "search"),
    # link previewers
    ("facebookexternalhit", "Facebook", "preview"),
    ("TelegramBot", "TelegramBot", "preview"),  # before Twitterbot: "TelegramBot (like TwitterBot)"
    ("Twitterbot", "Twitterbot", "preview"),
    ("LinkedInBot", "LinkedInBot", "preview"),
    ("Slackbot", "Slackbot", "preview"),
    ("Slack-ImgProxy", "Slackbot", "preview"),
    ("Discordbot", "Discordbot", "preview"),
    ("WhatsApp", "WhatsApp", "preview"),
    ("SkypeUriPreview", "Skype", "preview"),
    ("Pinterestbot", "Pinterestbot", "preview"),
    ("redditbot", "Redditbot", "preview"),
    ("Embedly", "Embedly", "preview"),
    ("Iframely", "Iframely", "preview"),
    ("vkShare", "VK", "preview"),
    ("Mastodon", "Mastodon", "preview"),
    # monitoring
    ("UptimeRobot", "UptimeRobot", "monitor"),
    ("Pingdom", "Pingdom", "monitor"),
    ("StatusCake", "StatusCake", "monitor"),
    ("Site24x7", "Site24x7", "monitor"),
    ("Better Uptime", "Better Uptime", "monitor"),
    ("BetterStack", "Better Stack", "monitor"),
    ("Datadog", "Datadog", "monitor"),
    ("NewRelicPinger", "New Relic", "monitor"),
    ("kube-probe", "kube-probe", "monitor"),
    ("ELB-HealthChecker", "ELB-HealthChecker", "monitor"),
    ("GoogleHC", "Google Health Check", "monitor"),
    # SEO tools
    ("AhrefsBot", "AhrefsBot", "seo"),
    ("SemrushBot", "SemrushBot", "seo"),
    ("MJ12bot", "MJ12bot", "seo"),
    ("DotBot", "DotBot", "seo"),
    ("rogerbot", "Rogerbot", "seo"),
    ("Screaming Frog", "Screaming Frog", "seo"),
    ("BLEXBot", "BLEXBot", "seo"),
    ("DataForSeoBot", "DataForSeoBot", "seo"),
    ("serpstatbot", "Serpstatbot", "seo"),
    # HTTP libraries and command-line clients
    ("curl/", "curl", "library"),
    ("Wget/", "Wget", "library"),
    ("python-requests", "python-requests", "library"),
    ("python-httpx", "python-httpx", "library"),
    ("python-urllib", "python-urllib", "library"),
    ("aiohttp/", "aiohttp", "library"),
    ("Go-http-client", "Go-http-client", "library"),
    ("okhttp", "OkHttp", "library"),
    ("axios/", "axios", "library"),
    ("node-fetch", "node-fetch", "library"),
    ("HeadlessChrome", "HeadlessChrome", "library"),
    ("Scrapy", "Scrapy", "library"),
    ("libwww-perl", "libwww-perl", "library"),
    ("Java/", "Java", "library"),
    # generic tokens, last
    ("bot", "Unknown bot", "other"),
    ("crawler", "Unknown crawler", "other"),
    ("spider", "Unknown spider", "other"),
    ("scraper", "Unknown scraper", "other"),
)


@dataclass(frozen=True, slots=True)
class BotInfo:
    """A recognised automated client."""

    name: str
    category: BotCategory


_TOKENS = [token.lower() for token, _, _ in BOT_PATTERNS]
_RANK = {token: rank for rank, token in reversed(list(enumerate(_TOKENS)))}
# ASCII-only case folding: with Unicode folding, U+017F (long s) + "pider" would match
# "spider" and then miss the rank table.
_REGEX = re.compile(
    "|".join(re.escape(token) for token, _, _ in BOT_PATTERNS), re.IGNORECASE | re.ASCII
)
# Device names that contain a generic token but are phones running ordinary browsers.
_NOT_BOTS = re.compile("cubot", re.IGNORECASE | re.ASCII)
# Longer agents are classified without caching, so that random huge headers cannot fill
# the cache with megabytes.
_MAX_CACHED_CHARS = 512


def classify_user_agent(user_agent: str) -> BotInfo | None:
    """The bot a user agent belongs to, or None for an ordinary browser (or an empty agent).

    When several tokens occur, the earliest row of ``BOT_PATTERNS`` wins, so a specific name
    beats a generic ``bot``.
    """
    if len(user_agent) > _MAX_CACHED_CHARS:
        return _classify(user_agent)
    return _classify_cached(user_agent)


def _classify(user_agent: str) -> BotInfo | None:
    best: int | None = None
    for match in _REGEX.finditer(_NOT_BOTS.sub(" ", user_agent)):
        rank = _RANK[match.group(0).lower()]
        if best is None or rank < best:
            best = rank
    if best is None:
        return None
    _, name, category = BOT_PATTERNS[best]
    return BotInfo(name, category)


_classify_cached = lru_cache(maxsize=4096)(_classify)


def is_bot(user_agent: str) -> bool:
    """Whether the user agent is any automated client (crawler, AI agent, previewer, monitor,
    SEO tool or HTTP library)."""
    return classify_user_agent(user_agent) is not None


def is_ai_bot(user_agent: str) -> bool:
    """Whether the user agent is an AI crawler or assistant."""
    info = classify_user_agent(user_agent)
    return info is not None and info.category == "ai"
