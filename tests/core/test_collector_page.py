"""The collector's live page: each hit's type and status, rejected hits with their reason,
every parameter one click away (token_auth masked), the counts; every value escaped."""

from __future__ import annotations

import json
import re

import pytest

from matomo_tracking.testing import Collector
from matomo_tracking.testing.page import hit_type

BASE = {"idsite": "1", "rec": "1", "url": "http://shop.example/x"}

TYPES = {
    "page view": {"action_name": "Home"},
    "event": {"e_c": "video", "e_a": "play", "e_n": "intro"},
    "site search": {"search": "lamp", "search_count": "3"},
    "goal": {"idgoal": "4", "revenue": "9.5"},
    "ecommerce": {"idgoal": "0", "ec_id": "A-1", "revenue": "20"},
    "content": {"c_n": "Banner", "c_p": "/img.png"},
    "download": {"download": "http://shop.example/f.pdf"},
    "outlink": {"link": "https://elsewhere.example/"},
    "ping": {"ping": "1"},
    "custom action": {"ca": "1", "ma_id": "video-1"},
}


@pytest.mark.parametrize(("kind", "params"), TYPES.items(), ids=list(TYPES))
def test_hit_type(kind: str, params: dict[str, str]) -> None:
    assert hit_type({**BASE, **params}) == kind


def test_a_cart_update_is_ecommerce_and_a_ping_wins() -> None:
    assert hit_type({"idgoal": "0", "ec_items": "[]"}) == "ecommerce"
    assert hit_type({"ping": "1", "e_c": "a", "e_a": "b"}) == "ping"
    assert hit_type({"e_c": "only a category"}) == "page view"  # Matomo needs e_c and e_a


def _bulk(*entries: dict[str, str]) -> bytes:
    return json.dumps({"requests": list(entries)}).encode()


def _rows(page: str, table: str) -> list[list[str]]:
    body = page.split(f"<table id='{table}'>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body)[1:]
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows
    ]


def test_the_page_shows_types_statuses_rejections_and_counts() -> None:
    collector = Collector(status_dimension=1)
    entries = [
        {**BASE, "action_name": "Missing", "dimension1": "404"},
        {**BASE, "e_c": "shop", "e_a": "buy"},
        {**BASE, "action_name": "bot", "http_status": "500", "recMode": "1"},
        {**BASE, "idsite": "9", "action_name": "elsewhere"},  # no such site
        {**BASE, "cip": "10.0.0.1"},  # cip without a token
    ]
    collector.handle("POST", "/matomo.php", "", _bulk(*entries))
    page = collector.page()
    assert "<meta http-equiv='refresh' content='2'>" in page
    assert "<script" not in page
    assert "tracked: <strong id='tracked'>3</strong>" in page
    assert "invalid: <strong id='invalid'>2</strong>" in page
    hits = _rows(page, "hits")
    assert [(row[1], row[2], row[4]) for row in hits] == [  # newest first
        ("bot", "page view", "500"),
        ("shop / buy", "event", ""),
        ("Missing", "page view", "404"),
    ]
    rejected = _rows(page, "rejected")
    assert [(row[0], row[1]) for row in rejected] == [
        ("cip requires a valid token_auth", "page view"),
        ("idsite: unknown or invalid site", "page view"),
    ]
    assert "href='/hit/0'" in page
    assert "href='/rejected/1'" in page


def test_a_click_shows_every_parameter_with_the_token_masked() -> None:
    collector = Collector(token_auth="s3cret-token")
    hit = {**BASE, "action_name": "<b>Home</b>", "uid": "ann", "dimension2": "x&y"}
    collector.handle("POST", "/matomo.php", "", _bulk(hit))
    status, headers, payload = collector.handle("GET", "/hit/0", "", b"")
    page = payload.decode()
    assert status == 200
    assert headers == [("content-type", "text/html; charset=utf-8")]
    params = dict(re.findall(r"<tr><th><code>(.*?)</code></th><td><code>(.*?)</code>", page))
    assert params == {
        "action_name": "&lt;b&gt;Home&lt;/b&gt;",
        "dimension2": "x&amp;y",
        "idsite": "1",
        "rec": "1",
        "uid": "ann",
        "url": "http://shop.example/x",
    }
    assert "<th>type</th><td>page view</td>" in page

    # A rejected hit that carried its own token: shown masked, never in clear.
    collector.invalid.append(({**BASE, "token_auth": "s3cret-token"}, "a reason"))
    page = collector.handle("GET", "/rejected/0", "", b"")[2].decode()
    assert "s3cret-token" not in page
    assert "<code>token_auth</code></th><td><code>••••••</code>" in page
    assert "<th>rejected because</th><td>a reason</td>" in page


@pytest.mark.parametrize("path", ["/hit/5", "/hit/x", "/rejected/0", "/hit/-1"])
def test_a_hit_that_is_not_there_is_a_404(path: str) -> None:
    assert Collector().handle("GET", path, "", b"")[0] == 404
