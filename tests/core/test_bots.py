"""The user-agent classifier, on the full agent strings the clients really send."""

from __future__ import annotations

import pytest

from matomo_tracking import BotInfo, classify_user_agent, is_ai_bot, is_bot

BOTS: list[tuple[str, str, str, str]] = [
    # -- search engines ------------------------------------------------------------------
    (
        "googlebot-desktop",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html) Chrome/124.0.6367.155 Safari/537.36",
        "Googlebot",
        "search",
    ),
    (
        "googlebot-smartphone",
        "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, "
        "like Gecko) Chrome/124.0.6367.155 Mobile Safari/537.36 (compatible; Googlebot/2.1; "
        "+http://www.google.com/bot.html)",
        "Googlebot",
        "search",
    ),
    (
        "bingbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
        "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        "Bingbot",
        "search",
    ),
    (
        "yandexbot",
        "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
        "YandexBot",
        "search",
    ),
    (
        "baiduspider",
        "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
        "Baiduspider",
        "search",
    ),
    (
        "duckduckbot",
        "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
        "DuckDuckBot",
        "search",
    ),
    (
        "applebot",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
        "Applebot",
        "search",
    ),
    ("naver-yeti", "Mozilla/5.0 (compatible; Yeti/1.1; +http://naver.me/spd)", "Naver", "search"),
    (
        "petalbot",
        "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
        "PetalBot",
        "search",
    ),
    # -- AI crawlers and assistants ------------------------------------------------------
    (
        "gptbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
        "+https://openai.com/gptbot)",
        "GPTBot",
        "ai",
    ),
    (
        "chatgpt-user",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; "
        "+https://openai.com/bot",
        "ChatGPT-User",
        "ai",
    ),
    (
        "oai-searchbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; OAI-SearchBot/1.0; "
        "+https://openai.com/searchbot",
        "OAI-SearchBot",
        "ai",
    ),
    (
        "claudebot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; "
        "+claudebot@anthropic.com)",
        "ClaudeBot",
        "ai",
    ),
    (
        "claude-user",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Claude-User/1.0; "
        "+Claude-User@anthropic.com)",
        "Claude-User",
        "ai",
    ),
    (
        "perplexitybot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; "
        "+https://perplexity.ai/perplexitybot)",
        "PerplexityBot",
        "ai",
    ),
    (
        "perplexity-user",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Perplexity-User/1.0; "
        "+https://perplexity.ai/perplexity-user)",
        "Perplexity-User",
        "ai",
    ),
    (
        "bytespider",
        "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile "
        "Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
        "Bytespider",
        "ai",
    ),
    ("ccbot", "CCBot/2.0 (https://commoncrawl.org/faq/)", "CCBot", "ai"),
    # Google-Extended is a robots.txt product token (Google fetches as Googlebot); an agent
    # naming it is still an AI agent.
    ("google-extended-token", "Google-Extended", "Google-Extended", "ai"),
    (
        "meta-externalagent",
        "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
        "Meta-ExternalAgent",
        "ai",
    ),
    (
        "amazonbot",
        "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; "
        "+https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 Safari/537.36",
        "Amazonbot",
        "ai",
    ),
    # -- link previewers -----------------------------------------------------------------
    (
        "facebookexternalhit",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Facebook",
        "preview",
    ),
    ("twitterbot", "Twitterbot/1.0", "Twitterbot", "preview"),
    (
        "slackbot",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Slackbot",
        "preview",
    ),
    (
        "discordbot",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
        "Discordbot",
        "preview",
    ),
    ("whatsapp", "WhatsApp/2.23.20.0 A", "WhatsApp", "preview"),
    (
        "linkedinbot",
        "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
        "LinkedInBot",
        "preview",
    ),
    ("telegrambot", "TelegramBot (like TwitterBot)", "TelegramBot", "preview"),
    # -- monitors ------------------------------------------------------------------------
    (
        "uptimerobot",
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        "UptimeRobot",
        "monitor",
    ),
    ("pingdom", "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", "Pingdom", "monitor"),
    ("kube-probe", "kube-probe/1.29", "kube-probe", "monitor"),
    ("elb", "ELB-HealthChecker/2.0", "ELB-HealthChecker", "monitor"),
    ("google-health-check", "GoogleHC/1.0", "Google Health Check", "monitor"),
    # -- SEO tools and libraries -----------------------------------------------------------
    (
        "ahrefsbot",
        "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
        "AhrefsBot",
        "seo",
    ),
    (
        "semrushbot",
        "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
        "SemrushBot",
        "seo",
    ),
    ("curl", "curl/8.5.0", "curl", "library"),
    ("python-requests", "python-requests/2.31.0", "python-requests", "library"),
    ("python-httpx", "python-httpx/0.27.0", "python-httpx", "library"),
    ("go", "Go-http-client/1.1", "Go-http-client", "library"),
    (
        "headless-chrome",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/124.0.0.0 Safari/537.36",
        "HeadlessChrome",
        "library",
    ),
    # -- unknown automated clients ---------------------------------------------------------
    (
        "generic-bot",
        "Mozilla/5.0 (compatible; SomeNewBot/0.3; +https://example.com)",
        "Unknown bot",
        "other",
    ),
    ("generic-crawler", "ExampleCrawler/1.0", "Unknown crawler", "other"),
    ("generic-spider", "my-spider/2", "Unknown spider", "other"),
]

BROWSERS: list[tuple[str, str]] = [
    (
        "chrome-windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    ),
    (
        "chrome-android",
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36",
    ),
    (
        "firefox-windows",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    ),
    ("firefox-android", "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0"),
    (
        "safari-ios",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "safari-macos",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4.1 Safari/605.1.15",
    ),
    (
        "edge",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
    ),
    (
        "samsung-internet",
        "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    ),
    (
        "opera",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0",
    ),
    (
        "chrome-ios",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
    ),
    (
        "chrome-on-a-cubot-phone",
        "Mozilla/5.0 (Linux; Android 10; CUBOT X30) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.6099.144 Mobile Safari/537.36",
    ),
    (
        "naver-app-browser",
        "Mozilla/5.0 (Linux; Android 13; SM-S911N Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/118.0.5993.111 Mobile Safari/537.36 "
        "NAVER(inapp; search; 2000; 12.1.1)",
    ),
    (
        "facebook-app-browser",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/457.0.0.41.109;FBBV/577417164;FBDV/iPhone15,2]",
    ),
    ("empty", ""),
]


@pytest.mark.parametrize(
    ("ua", "name", "category"), [b[1:] for b in BOTS], ids=[b[0] for b in BOTS]
)
def test_bot(ua: str, name: str, category: str) -> None:
    assert classify_user_agent(ua) == BotInfo(name, category)  # type: ignore[arg-type]
    assert is_bot(ua) is True
    assert is_ai_bot(ua) is (category == "ai")


@pytest.mark.parametrize("ua", [b[1] for b in BROWSERS], ids=[b[0] for b in BROWSERS])
def test_browser_is_not_a_bot(ua: str) -> None:
    assert classify_user_agent(ua) is None
    assert is_bot(ua) is False
    assert is_ai_bot(ua) is False


def test_enough_rows() -> None:
    assert len([b for b in BROWSERS if b[1]]) >= 8
    assert {b[3] for b in BOTS} >= {"search", "ai", "preview", "monitor", "seo", "library", "other"}


@pytest.mark.parametrize(
    ("ua", "name"),
    [
        ("GOOGLEBOT/2.1", "Googlebot"),
        ("gptbot/1.0", "GPTBot"),
        # a specific row beats the generic "bot" wherever it sits in the agent
        ("RandomBot/1.0 compatible ClaudeBot/1.0", "ClaudeBot"),
    ],
)
def test_case_insensitive_and_specific_first(ua: str, name: str) -> None:
    info = classify_user_agent(ua)
    assert info is not None
    assert info.name == name


def test_unicode_case_folding_is_not_applied() -> None:
    # U+017F (long s) folds to "s" in Unicode: it must neither match "spider" nor break the
    # lookup
    assert classify_user_agent("Mozilla/5.0 \u017fpider") is None
    assert classify_user_agent("K\u212abot") == BotInfo("Unknown bot", "other")


def test_huge_agents_are_classified_without_caching() -> None:
    huge = "Mozilla/5.0 " + "x" * 10_000 + " Googlebot/2.1"

    assert classify_user_agent(huge) == BotInfo("Googlebot", "search")
    assert classify_user_agent("x" * 10_000) is None
