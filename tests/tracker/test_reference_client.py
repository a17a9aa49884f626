"""One test per row of the reference client's method table (API reference §3.14): the call,
the exact parameters it produces, and that the collector accepts the hit."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import pytest

from matomo_tracking import EcommerceItem, TrackingConfig
from matomo_tracking.hits import Hit
from matomo_tracking.testing import Collector
from matomo_tracking.tracker import SCRIPT_USER_AGENT, BaseTracker
from matomo_tracking.wire import bulk_body, encode_hit
from tests.sentinel import SENTINEL_TOKEN

NOW = 1_700_000_000.0
PAGE = "https://shop.example/cart"
BASE = {"idsite": "1", "rec": "1", "apiv": "1", "url": PAGE, "ua": SCRIPT_USER_AGENT}


class Recorder(BaseTracker):
    def __init__(self, **options: Any) -> None:
        super().__init__(
            TrackingConfig(url="https://matomo.example", **options),
            clock=lambda: NOW,
            rng=random.Random(7),
        )
        self.hits: list[Hit] = []

    def _submit(self, hit: Hit) -> bool:
        self.hits.append(hit)
        return True


def accepted(hit: Hit, token: str | None = None) -> None:
    collector = Collector(token_auth=SENTINEL_TOKEN, clock=lambda: NOW)
    body = bulk_body([encode_hit(hit)], token_auth=token, now=NOW)
    status, _, answer = collector.handle("POST", "/matomo.php", "", body)
    assert status == 200
    assert json.loads(answer)["tracked"] == 1, collector.invalid


def only(hit: Hit, drop: tuple[str, ...] = ("rand",)) -> Mapping[str, str]:
    return {k: v for k, v in hit.params.items() if k not in drop}


def test_do_track_page_view(tracker: Recorder) -> None:
    tracker.track_page_view("Cart")
    hit = tracker.hits[0]
    assert only(hit, ("rand", "pv_id")) == {**BASE, "action_name": "Cart"}
    assert len(hit.params["pv_id"]) == 6
    assert hit.params["pv_id"].isalnum()
    accepted(hit)


def test_do_track_event(tracker: Recorder) -> None:
    tracker.track_event("Video", "Play", "Intro", 1.5)
    assert only(tracker.hits[0]) == {
        **BASE,
        "e_c": "Video",
        "e_a": "Play",
        "ca": "1",
        "e_n": "Intro",
        "e_v": "1.5",
    }
    accepted(tracker.hits[0])


def test_do_track_site_search(tracker: Recorder) -> None:
    tracker.track_site_search("shoes", "Catalog", 0)
    assert only(tracker.hits[0]) == {
        **BASE,
        "search": "shoes",
        "search_cat": "Catalog",
        "search_count": "0",
    }
    tracker.track_site_search("hats")
    assert "search_count" not in tracker.hits[1].params
    accepted(tracker.hits[0])


def test_do_track_goal(tracker: Recorder) -> None:
    tracker.track_goal(3, 9.99)
    tracker.track_goal(4)
    assert only(tracker.hits[0]) == {**BASE, "idgoal": "3", "revenue": "9.99"}
    assert only(tracker.hits[1]) == {**BASE, "idgoal": "4"}
    accepted(tracker.hits[0])


@pytest.mark.parametrize(
    ("method", "key"), [("track_link", "link"), ("track_download", "download")]
)
def test_do_track_action(tracker: Recorder, method: str, key: str) -> None:
    getattr(tracker, method)("https://elsewhere.example/file.pdf")
    assert only(tracker.hits[0]) == {**BASE, key: "https://elsewhere.example/file.pdf"}
    accepted(tracker.hits[0])


def test_do_track_content_impression(tracker: Recorder) -> None:
    tracker.track_content_impression("Banner", "img.png", "https://t.example/")
    assert only(tracker.hits[0]) == {
        **BASE,
        "c_n": "Banner",
        "ca": "1",
        "c_p": "img.png",
        "c_t": "https://t.example/",
    }
    accepted(tracker.hits[0])


def test_do_track_content_interaction(tracker: Recorder) -> None:
    tracker.track_content_interaction("click", "Banner", "img.png")
    assert only(tracker.hits[0]) == {
        **BASE,
        "c_i": "click",
        "c_n": "Banner",
        "ca": "1",
        "c_p": "img.png",
    }
    accepted(tracker.hits[0])


ITEMS = [
    EcommerceItem("SKU1", "Shirt", ["Clothes", "Summer"], 19.99, 2),
    {"sku": "SKU2", "name": "Hat", "price": 5, "quantity": 1},
]
ITEMS_JSON = '[["SKU1","Shirt",["Clothes","Summer"],19.99,2],["SKU2","Hat","",5,1]]'


def test_add_ecommerce_item_and_cart_update(tracker: Recorder) -> None:
    tracker.track_ecommerce_cart_update(44.98, items=ITEMS)
    assert only(tracker.hits[0]) == {
        **BASE,
        "idgoal": "0",
        "revenue": "44.98",
        "ec_items": ITEMS_JSON,
    }
    accepted(tracker.hits[0])


def test_do_track_ecommerce_order(tracker: Recorder) -> None:
    tracker.track_ecommerce_order(
        "A-1", 50, items=ITEMS, subtotal=44.98, tax=3.5, shipping=4, discount=2.48
    )
    assert only(tracker.hits[0]) == {
        **BASE,
        "idgoal": "0",
        "ec_id": "A-1",
        "revenue": "50",
        "ec_st": "44.98",
        "ec_tx": "3.5",
        "ec_sh": "4",
        "ec_dt": "2.48",
        "ec_items": ITEMS_JSON,
    }
    accepted(tracker.hits[0])


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ({"order_id": "", "revenue": 1}, "order_id"),
        ({"order_id": "A", "revenue": -1}, "revenue"),
        ({"order_id": "A", "revenue": float("nan")}, "revenue"),
        ({"order_id": "A", "revenue": 1, "items": [{"sku": "", "price": 1}]}, "sku"),
        ({"order_id": "A", "revenue": 1, "items": [{"sku": "X", "quantity": 0}]}, "quantity"),
        ({"order_id": "A", "revenue": 1, "items": [{"sku": "X", "price": "free"}]}, "price"),
    ],
)
def test_ecommerce_validation(tracker: Recorder, call: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        tracker.track_ecommerce_order(**call)


def test_set_ecommerce_view(tracker: Recorder) -> None:
    tracker.track_product_view(
        sku="SKU1", name="Shirt", category=["Clothes", "Summer"], price=19.99
    )
    tracker.track_product_view(category="Hats")
    assert only(tracker.hits[0], ("rand", "pv_id")) == {
        **BASE,
        "_pks": "SKU1",
        "_pkn": "Shirt",
        "_pkc": '["Clothes", "Summer"]',
        "_pkp": "19.99",
    }
    assert tracker.hits[1].params["_pkc"] == "Hats"
    accepted(tracker.hits[0])


def test_set_custom_variable(tracker: Recorder) -> None:
    tracker.track_page_view(
        "p", page_variables={1: ("Role", "admin")}, visit_variables={2: ("Plan", "pro")}
    )
    assert tracker.hits[0].params["cvar"] == '{"1":["Role","admin"]}'
    assert tracker.hits[0].params["_cvar"] == '{"2":["Plan","pro"]}'
    with pytest.raises(ValueError, match="1 to 5"):
        tracker.track_page_view("p", page_variables={6: ("a", "b")})
    accepted(tracker.hits[0])


def test_set_custom_dimension(tracker: Recorder) -> None:
    tracker.track_page_view("p", dimensions={3: "gold"})
    assert tracker.hits[0].params["dimension3"] == "gold"
    accepted(tracker.hits[0])


def test_set_user_id_and_visitor_id(tracker: Recorder) -> None:
    tracker.track_page_view("p", user_id="user@example.com", visitor_id="0123456789ABCDEF")
    assert tracker.hits[0].params["uid"] == "user@example.com"
    assert tracker.hits[0].params["cid"] == "0123456789abcdef"
    with pytest.raises(ValueError, match="visitor_id"):
        tracker.track_page_view("p", visitor_id="xyz")
    accepted(tracker.hits[0])


def test_set_force_visit_date_time(tracker: Recorder) -> None:
    tracker.track_page_view("p", timestamp=NOW - 3600)
    hit = tracker.hits[0]
    assert hit.created == NOW - 3600
    body = json.loads(bulk_body([encode_hit(hit)], token_auth=None, now=NOW))
    assert body["requests"][0]["cdo"] == "3600"
    accepted(hit)


def test_set_force_new_visit(tracker: Recorder) -> None:
    tracker.track_page_view("p", new_visit=True)
    assert tracker.hits[0].params["new_visit"] == "1"
    accepted(tracker.hits[0])


def test_set_ip_only_with_token() -> None:
    without = Recorder()
    without.track_page_view("p", url=PAGE, ip="203.0.113.9")
    assert "cip" not in without.hits[0].params
    with_token = Recorder(token_auth=SENTINEL_TOKEN)
    with_token.track_page_view("p", url=PAGE, ip="203.0.113.9")
    assert with_token.hits[0].params["cip"] == "203.0.113.9"
    accepted(with_token.hits[0], token=SENTINEL_TOKEN)
    accepted(without.hits[0])


def test_set_user_agent_and_browser_language(tracker: Recorder) -> None:
    tracker.track_page_view("p", user_agent="Mozilla/5.0 X", language="fr-CH,fr;q=0.8")
    assert tracker.hits[0].params["ua"] == "Mozilla/5.0 X"
    assert tracker.hits[0].params["lang"] == "fr-CH,fr;q=0.8"
    accepted(tracker.hits[0])


def test_set_client_hints(tracker: Recorder) -> None:
    hints = {
        "brands": [{"brand": "Chromium", "version": "124"}],
        "mobile": False,
        "platform": "Linux",
    }
    tracker.track_page_view("p", client_hints=hints)
    assert json.loads(tracker.hits[0].params["uadata"]) == hints
    accepted(tracker.hits[0])


def test_set_performance_timings(tracker: Recorder) -> None:
    timings = {"pf_net": 10, "pf_srv": 20, "pf_tfr": 5, "pf_dm1": 100, "pf_dm2": 50, "pf_onl": 3}
    tracker.track_page_view("p", performance=timings)
    assert {k: tracker.hits[0].params[k] for k in timings} == {
        k: str(v) for k, v in timings.items()
    }
    assert "pv_id" in tracker.hits[0].params
    with pytest.raises(ValueError, match="pf_srv"):
        tracker.track_page_view("p", performance={"pf_srv": -1})
    accepted(tracker.hits[0])


def test_set_location_needs_token() -> None:
    with pytest.raises(ValueError, match="token_auth"):
        Recorder().track_page_view("p", url=PAGE, country="FR")
    t = Recorder(token_auth=SENTINEL_TOKEN)
    t.track_page_view(
        "p", url=PAGE, country="FR", region="75", city="Paris", latitude=48.85, longitude=2.35
    )
    assert {k: t.hits[0].params[k] for k in ("country", "region", "city", "lat", "long")} == {
        "country": "fr",
        "region": "75",
        "city": "Paris",
        "lat": "48.85",
        "long": "2.35",
    }
    accepted(t.hits[0], token=SENTINEL_TOKEN)


def test_local_time_resolution_charset_attribution(tracker: Recorder) -> None:
    tracker.track_page_view(
        "p",
        local_time=(13, 5, 9),
        resolution="1920x1080",
        charset="ISO-8859-1",
        attribution=("spring", "shoes", 1_699_000_000, "https://ref.example/"),
    )
    p = tracker.hits[0].params
    assert (p["h"], p["m"], p["s"], p["res"], p["cs"]) == (
        "13",
        "5",
        "9",
        "1920x1080",
        "ISO-8859-1",
    )
    assert (p["_rcn"], p["_rck"], p["_refts"], p["_ref"]) == (
        "spring",
        "shoes",
        "1699000000",
        "https://ref.example/",
    )
    accepted(tracker.hits[0])


def test_disable_send_image_response_is_never_sent_in_bulk() -> None:
    # PHP's disableSendImageResponse() adds send_image=0; in a bulk body it would make Matomo
    # answer 204 without the tracked/invalid counts, so our bulk bodies never carry it.
    body = json.loads(bulk_body([], token_auth=None, now=NOW))
    assert "send_image" not in body


def test_do_ping(tracker: Recorder) -> None:
    tracker.ping()
    assert only(tracker.hits[0]) == {**BASE, "ping": "1"}
    accepted(tracker.hits[0])


def test_do_track_crash(tracker: Recorder) -> None:
    tracker.track_crash(
        "TypeError: x", type="TypeError", category="js", stack="at f", location=("app.js", 3, 7)
    )
    assert only(tracker.hits[0]) == {
        **BASE,
        "ca": "1",
        "cra": "TypeError: x",
        "cra_tp": "TypeError",
        "cra_ct": "js",
        "cra_st": "at f",
        "cra_ru": "app.js",
        "cra_rl": "3",
        "cra_rc": "7",
    }
    accepted(tracker.hits[0])


def test_do_track_page_view_if_ai_bot(tracker: Recorder) -> None:
    tracker.track_bot_request(
        status=200, response_bytes=512, server_time_ms=12, source="web", user_agent="GPTBot/1.0"
    )
    assert only(tracker.hits[0]) == {
        **BASE,
        "ua": "GPTBot/1.0",
        "recMode": "1",
        "http_status": "200",
        "bw_bytes": "512",
        "pf_srv": "12",
        "source": "web",
    }
    accepted(tracker.hits[0])


def test_bulk_tracking_is_the_only_transport(tracker: Recorder) -> None:
    for n in range(3):
        tracker.track_event("c", "a", str(n))
    body = json.loads(
        bulk_body([encode_hit(h) for h in tracker.hits], token_auth=SENTINEL_TOKEN, now=NOW)
    )
    assert [r["e_n"] for r in body["requests"]] == ["0", "1", "2"]
    assert body["token_auth"] == SENTINEL_TOKEN


def test_request_copies_user_agent_language_referrer_and_ip() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/p",
        "QUERY_STRING": "a=1",
        "HTTP_HOST": "site.example",
        "HTTP_USER_AGENT": "UA/1",
        "HTTP_ACCEPT_LANGUAGE": "de",
        "HTTP_REFERER": "https://from.example/",
        "REMOTE_ADDR": "198.51.100.7",
        "wsgi.url_scheme": "https",
    }
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/p",
        "query_string": b"a=1",
        "headers": [
            (b"host", b"site.example"),
            (b"user-agent", b"UA/1"),
            (b"accept-language", b"de"),
            (b"referer", b"https://from.example/"),
        ],
        "client": ("198.51.100.7", 5000),
        "scheme": "https",
    }
    for source in (environ, scope):
        t = Recorder(token_auth=SENTINEL_TOKEN)
        t.track_event("c", "a", request=source)
        p = t.hits[0].params
        assert (p["url"], p["ua"], p["lang"], p["urlref"], p["cip"]) == (
            "https://site.example/p?a=1",
            "UA/1",
            "de",
            "https://from.example/",
            "198.51.100.7",
        )


def test_unknown_variable_is_named(tracker: Recorder) -> None:
    with pytest.raises(ValueError, match="colour"):
        tracker.track_page_view("p", colour="red")
    with pytest.raises(ValueError, match="colour"):
        tracker.set(colour="red")
