"""Hostile values in every user-controlled slot: the HTML keeps exactly its own elements and
the script, run in a JavaScript engine, queues exactly the intended commands and values."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from matomo_tracking.snippet import tracking_code
from tests.snippet.harness import parse, run_script

BASE = "https://matomo.example.org/sub/"
NONCE = "n0nce+/="

HOSTILE = {
    "end-script": "</script><script>alert(1)</script>",
    "end-script-upper-space": "</SCRIPT >alert(1)",
    "end-script-slash": "</script/x>",
    "comment-open": "<!--<script>",
    "comment-close": "--> <!-- -->",
    "script-tag": "<script>alert(1)</script>",
    "cdata": "<![CDATA[ ]]>",
    "img-onerror": '<img src=x onerror="alert(1)">',
    "single-quote": "it's ' + alert(1) + '",
    "double-quote": '"; alert(1); "',
    "backslashes": "\\ \\\\ \\' \\\" \\u003c \\x3c \\n",
    "template-literal": "`${alert(1)}`",
    "line-separators": "a\u2028b\u2029c",
    "newlines": "a\nb\r\nc\rd",
    "nul": "nul\x00byte",
    "controls": "".join(chr(c) for c in range(32)) + "\x7f\x85\xa0",
    "entities": "&lt;script&gt; &amp; &#x3c; &quot;",
    "ampersand": "a&b&&c",
    "emoji": "emoji 😀 🏳️‍🌈 👩🏽‍💻",
    "non-latin": "Zoë Ελληνικά 中文 العربية",
    "bidi": "\u202eevil\u202c",
    "lone-surrogate": "x\ud800y",
    "long-ascii": "x" * 100_000,
    "long-script-breakers": "</script>" * 5_000,
    "long-non-ascii": "é😀" * 20_000,
}


def _noscript_value(value: str) -> str:
    """What survives UTF-8 in a URL: lone surrogates become "?"."""
    return value.encode("utf-8", "replace").decode("utf-8")


def _expected_paq(value: str, extra: list[list[Any]]) -> list[list[Any]]:
    return [
        ["setDocumentTitle", value],
        ["setUserId", value],
        ["setCustomDimension", 1, value],
        ["setCustomDimension", 7, value],
        *extra,
        ["trackPageView"],
        ["enableLinkTracking"],
        ["setTrackerUrl", BASE + "matomo.php"],
        ["setSiteId", "3"],
    ]


@pytest.mark.parametrize("noscript", [True, False], ids=["noscript", "script-only"])
@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_value_stays_data(node: str, value: str, noscript: bool) -> None:
    extra: list[list[Any]] = [["setCustomData", {"key": value, "list": [value, 1, None]}]]
    code = tracking_code(
        url=BASE,
        site_id=3,
        user_id=value,
        document_title=value,
        dimensions={7: value, 1: value},
        nonce=NONCE,
        noscript=noscript,
        extra_commands=extra,
    )
    assert code.isascii()
    assert code.lower().count("</script") == 1

    parsed = parse(code)
    tags = [(tag, parent) for tag, _, parent in parsed.elements]
    if noscript:
        assert tags == [("script", None), ("noscript", None), ("img", "noscript")]
    else:
        assert tags == [("script", None)]
    assert parsed.elements[0][1] == {"nonce": NONCE}
    assert parsed.text.strip() == ""
    assert parsed.comments == []
    (script,) = parsed.scripts
    assert "<" not in script

    result = run_script(node, script)
    assert result["paq"] == _expected_paq(value, extra)
    assert result["inserted"] == [
        {"tag": "script", "src": BASE + "matomo.js", "async": True, "nonce": NONCE}
    ]

    if noscript:
        attrs = parsed.elements[2][1]
        assert set(attrs) == {"referrerpolicy", "src", "style", "alt"}
        src = attrs["src"]
        assert src is not None
        assert src.isascii()
        assert not any(c.isspace() or c in "\"'<>" for c in src)
        parts = urlsplit(src)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BASE + "matomo.php"
        expected = _noscript_value(value)
        assert parse_qsl(parts.query, keep_blank_values=True, max_num_fields=None) == [
            ("idsite", "3"),
            ("rec", "1"),
            ("action_name", expected),
            ("uid", expected),
            ("dimension1", expected),
            ("dimension7", expected),
        ]


@pytest.mark.parametrize(
    "url",
    ["https://matomo.example.org", "//matomo.example.org/a/matomo.php", "http://[::1]:8080/m/"],
)
def test_tracker_url_runs_as_given(node: str, url: str) -> None:
    code = tracking_code(url=url, site_id=12, link_tracking=False)
    (script,) = parse(code).scripts
    result = run_script(node, script)
    base = url.removesuffix("matomo.php").rstrip("/") + "/"
    assert result["paq"] == [
        ["trackPageView"],
        ["setTrackerUrl", base + "matomo.php"],
        ["setSiteId", "12"],
    ]
    assert result["inserted"] == [
        {"tag": "script", "src": base + "matomo.js", "async": True, "nonce": None}
    ]


def test_existing_queue_is_kept(node: str) -> None:
    """A page that pushed commands before the snippet keeps them (``window._paq || []``)."""
    code = tracking_code(url=BASE, site_id=1)
    (script,) = parse(code).scripts
    result = run_script(node, 'window._paq = [["setCustomUrl", "/x"]];\n' + script)
    assert result["paq"][0] == ["setCustomUrl", "/x"]
    assert result["paq"][1] == ["trackPageView"]
