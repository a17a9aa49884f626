"""The standalone trackers as Matomo's PHP client behaves: later hits linked to their visitor's
page view (``pv_id``), amounts sent as given, custom tracking parameters, content pieces, and
what a script's hit carries without a user agent."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from matomo_tracking import TrackingConfig, TrackingContext, is_bot
from matomo_tracking.hits import Hit, HitBuilder
from matomo_tracking.request import ResponseView, request_from_wsgi
from matomo_tracking.tracker import _PAGE_VIEWS_REMEMBERED, SCRIPT_USER_AGENT
from tests.tracker.test_reference_client import NOW, PAGE, Recorder, accepted

ALICE = "0123456789abcdef"
BOB = "fedcba9876543210"


class Dropping(Recorder):
    """A tracker whose queue is full: every hit is dropped."""

    def _submit(self, hit: Hit) -> bool:
        return False


# -- page-view links (pv_id) ------------------------------------------------------------------


def test_hits_after_a_page_view_carry_its_pv_id(tracker: Recorder) -> None:
    pv_id = tracker.track_page_view("Cart")
    tracker.track_event("cart", "open")
    tracker.track_content_impression("Banner")
    tracker.track_goal(1)
    tracker.track_site_search("mugs")
    tracker.track_link("https://other.example/")
    tracker.ping(performance={"pf_dm1": 120})

    assert pv_id is not None
    assert re.fullmatch(r"[0-9A-Za-z]{6}", pv_id)
    assert [h.params["pv_id"] for h in tracker.hits] == [pv_id] * 7
    for hit in tracker.hits:
        accepted(hit)


def test_a_new_page_view_gets_a_new_id_that_later_hits_follow(tracker: Recorder) -> None:
    first = tracker.track_page_view("One")
    second = tracker.track_page_view("Two")
    tracker.track_event("c", "a")

    assert first != second
    assert tracker.hits[-1].params["pv_id"] == second


def test_page_views_are_remembered_per_visitor_never_across(tracker: Recorder) -> None:
    alice = tracker.track_page_view("A", visitor_id=ALICE)
    bob = tracker.track_page_view("B", visitor_id=BOB)
    tracker.track_event("c", "alice", visitor_id=ALICE)
    tracker.track_event("c", "bob", visitor_id=BOB)
    tracker.track_event("c", "carol", user_id="carol")
    tracker.track_event("c", "someone", user_agent="Other/1")

    by_action = {h.params.get("e_a"): h.params.get("pv_id") for h in tracker.hits}
    assert alice != bob
    assert by_action["alice"] == alice
    assert by_action["bob"] == bob
    assert by_action["carol"] is None  # never had a page view
    assert by_action["someone"] is None


def test_hits_before_any_page_view_carry_no_pv_id(tracker: Recorder) -> None:
    tracker.track_event("c", "a")

    assert "pv_id" not in tracker.hits[0].params


def test_a_page_view_id_set_by_the_caller_is_kept_and_followed(tracker: Recorder) -> None:
    returned = tracker.track_page_view("Cart", page_view_id="Ab12Cd")
    tracker.track_event("c", "a")
    tracker.track_event("c", "b", page_view_id="Zz99Zz")

    assert returned == "Ab12Cd"
    assert [h.params["pv_id"] for h in tracker.hits] == ["Ab12Cd", "Ab12Cd", "Zz99Zz"]


def test_track_page_view_returns_none_when_the_hit_was_dropped() -> None:
    tracker = Dropping()
    tracker.set(url=PAGE)

    assert tracker.track_page_view("Cart") is None
    assert tracker.track_product_view(sku="S") is None
    assert tracker.track_event("c", "a") is False


def test_remembered_page_views_are_bounded(tracker: Recorder) -> None:
    for n in range(_PAGE_VIEWS_REMEMBERED + 5):
        tracker.track_page_view("p", visitor_id=f"{n:016x}")
    tracker.hits.clear()
    tracker.track_event("c", "first", visitor_id=f"{0:016x}")
    tracker.track_event("c", "last", visitor_id=f"{_PAGE_VIEWS_REMEMBERED + 4:016x}")

    assert len(tracker._page_views) == _PAGE_VIEWS_REMEMBERED
    first, last = tracker.hits
    assert "pv_id" not in first.params  # the oldest was forgotten
    assert "pv_id" in last.params


# -- amounts as given -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (12.555, "12.555"),
        (2.675, "2.675"),
        (Decimal("0.125"), "0.125"),
        ("19.999", "19.999"),
        (10, "10"),
        (Decimal("1E+2"), "100"),
    ],
)
def test_amounts_are_sent_as_given(tracker: Recorder, amount: Any, text: str) -> None:
    tracker.track_ecommerce_order(
        "o-1",
        amount,
        subtotal=amount,
        tax=amount,
        shipping=amount,
        discount=amount,
        items=[{"sku": "S", "price": amount, "quantity": 2}],
    )
    tracker.track_goal(1, amount)
    tracker.track_product_view(sku="S", price=amount)
    order, goal, product = (h.params for h in tracker.hits)

    assert [order[k] for k in ("revenue", "ec_st", "ec_tx", "ec_sh", "ec_dt")] == [text] * 5
    assert order["ec_items"] == f'[["S","","",{text},2]]'
    assert json.loads(order["ec_items"], parse_float=Decimal)[0][3] == Decimal(text)
    assert (goal["revenue"], product["_pkp"]) == (text, text)
    accepted(tracker.hits[0])


# -- custom tracking parameters ---------------------------------------------------------------


def test_custom_tracking_parameters_on_a_tracker(tracker: Recorder) -> None:
    tracker.set_custom_tracking_parameter("bw_bytes_plugin", 3)
    tracker.set_custom_tracking_parameter("ab_test", "green")
    tracker.track_page_view("p")
    tracker.track_event("c", "a", parameters={"ab_test": "blue", "flag": True})
    tracker.set_custom_tracking_parameter("ab_test", None)
    tracker.track_event("c", "b")

    page, blue, plain = (h.params for h in tracker.hits)
    assert (page["ab_test"], page["bw_bytes_plugin"]) == ("green", "3")
    assert (blue["ab_test"], blue["flag"], blue["bw_bytes_plugin"]) == ("blue", "1", "3")
    assert "ab_test" not in plain
    assert plain["bw_bytes_plugin"] == "3"


def test_custom_tracking_parameters_on_the_request_context() -> None:
    builder = HitBuilder(TrackingConfig(url="https://matomo.example"), salt=b"s")
    context = TrackingContext()
    context.set_custom_tracking_parameter("experiment", "B")
    context.track_event("c", "a")
    context.set_custom_tracking_parameter("late", 1.5)
    view = request_from_wsgi(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_HOST": "site.example"}
    )

    page, event = builder.build(view, ResponseView(status=200), context, now=NOW, rng=_Rng())

    for hit in (page, event):
        assert (hit.params["experiment"], hit.params["late"]) == ("B", "1.5")
    context.set_custom_tracking_parameter("late", None)
    assert dict(context.custom_parameters) == {"experiment": "B"}


class _Rng:
    def random(self) -> float:
        return 0.5

    def getrandbits(self, k: int, /) -> int:
        return 12345


@pytest.mark.parametrize(
    ("name", "names_the_method"),
    [
        ("token_auth", "token_auth setting"),
        ("send_image", "must not carry it"),
        ("idsite", "site_id"),
        ("ua", "user_agent="),
        ("cip", "ip="),
        ("cid", "set_visitor_id()"),
        ("_id", "visitor_id="),
        ("uid", "set_user_id()"),
        ("pv_id", "page_view_id="),
        ("cdt", "timestamp="),
        ("uadata", "client_hints="),
        ("dimension3", "set_dimension()"),
        ("pf_srv", "performance="),
        ("e_c", "track_event()"),
        ("ec_items", "items="),
        ("action_name", "set_action_name()"),
    ],
)
def test_custom_parameters_we_set_ourselves_are_refused_naming_the_method(
    tracker: Recorder, name: str, names_the_method: str
) -> None:
    for attempt in (
        lambda: tracker.set_custom_tracking_parameter(name, "x"),
        lambda: tracker.track_event("c", "a", parameters={name: "x"}),
        lambda: tracker.set(parameters={name: "x"}),
        lambda: TrackingContext().set_custom_tracking_parameter(name, "x"),
    ):
        with pytest.raises(ValueError, match=re.escape(names_the_method)):
            attempt()
    assert tracker.hits == []


@pytest.mark.parametrize("name", ["dimension", "dimensionX", "r", "_idts", "fla", "bots_x"])
def test_other_parameter_names_go_through_as_given(tracker: Recorder, name: str) -> None:
    tracker.track_event("c", "a", parameters={name: "v a+l"})

    assert tracker.hits[0].params[name] == "v a+l"


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("", "x", "name '' is invalid"),
        (" x", "x", "name ' x' is invalid"),
        ("x", object, "x=<class 'object'> is invalid"),
        ("x", float("nan"), "expected a finite number"),
    ],
)
def test_bad_custom_parameters(tracker: Recorder, name: str, value: Any, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        tracker.set_custom_tracking_parameter(name, value)
    with pytest.raises(ValueError, match="expected a mapping"):
        tracker.track_event("c", "a", parameters=[("x", "y")])


# -- content pieces and a script's user agent -------------------------------------------------


def test_content_without_a_piece_sends_unknown_as_php_and_js_do(tracker: Recorder) -> None:
    tracker.track_content_impression("Banner")
    tracker.track_content_interaction("click", "Banner")
    context = TrackingContext()
    context.track_content_impression("Banner", piece=" ")

    assert [h.params["c_p"] for h in tracker.hits] == ["Unknown", "Unknown"]
    assert context.extra_hits[0]["c_p"] == "Unknown"


def test_a_script_hit_without_a_user_agent_names_the_tracker_not_the_http_client(
    tracker: Recorder,
) -> None:
    tracker.track_event("job", "done")
    tracker.track_event("job", "done", user_agent="Mozilla/5.0 Firefox/128.0")
    tracker.track_event("job", "done", request={"REQUEST_METHOD": "GET", "HTTP_HOST": "h.example"})

    assert [h.params["ua"] for h in tracker.hits] == [
        SCRIPT_USER_AGENT,
        "Mozilla/5.0 Firefox/128.0",
        SCRIPT_USER_AGENT,
    ]
    accepted(tracker.hits[0])


def test_the_script_user_agent_is_recorded_by_matomo_not_excluded_as_a_bot() -> None:
    # Matomo excludes hits DeviceDetector calls bots: named bots, and the generic rule
    # (bot, crawl, spider, checker, archiver, transcoder, and agents carrying a URL).
    lowered = SCRIPT_USER_AGENT.lower()
    assert not is_bot(SCRIPT_USER_AGENT)
    for word in ("bot", "crawl", "spider", "checker", "archiver", "transcoder", "http", "www."):
        assert word not in lowered
    # and not a known HTTP library (TrackingSpamPrevention can block those)
    for library in ("httpx", "python", "requests", "curl", "wget", "urllib", "aiohttp"):
        assert library not in lowered
