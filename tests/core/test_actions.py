"""Parameters of every hit type besides the page view, and the per-request context."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from matomo_tracking import EcommerceItem, Hit, TrackingContext
from matomo_tracking import actions as a
from tests.core.builders import NOW, assert_accepted

PARAMS: list[tuple[str, Callable[[], dict[str, str]], dict[str, str]]] = [
    ("event", lambda: a.event_params("Video", "Play"), {"e_c": "Video", "e_a": "Play", "ca": "1"}),
    (
        "event-full",
        lambda: a.event_params(" Video ", "Play\n", "Intro", 1.25),
        {"e_c": "Video", "e_a": "Play", "ca": "1", "e_n": "Intro", "e_v": "1.25"},
    ),
    (
        "event-int-value",
        lambda: a.event_params("C", "A", value=-3),
        {"e_c": "C", "e_a": "A", "ca": "1", "e_v": "-3"},
    ),
    (
        "event-tiny-float-no-exponent",
        lambda: a.event_params("C", "A", value=1e-7),
        {"e_c": "C", "e_a": "A", "ca": "1", "e_v": "0.0000001"},
    ),
    (
        "event-decimal",
        lambda: a.event_params("C", "A", value=Decimal("2.50")),
        {"e_c": "C", "e_a": "A", "ca": "1", "e_v": "2.5"},
    ),
    (
        "event-blank-name-dropped",
        lambda: a.event_params("C", "A", "  "),
        {"e_c": "C", "e_a": "A", "ca": "1"},
    ),
    ("site-search", lambda: a.site_search_params("mugs"), {"search": "mugs"}),
    (
        "site-search-full",
        lambda: a.site_search_params("mugs", "Shop", 0),
        {"search": "mugs", "search_cat": "Shop", "search_count": "0"},
    ),
    ("goal", lambda: a.goal_params(3), {"idgoal": "3"}),
    ("goal-revenue", lambda: a.goal_params(3, 10.505), {"idgoal": "3", "revenue": "10.505"}),
    (
        "goal-revenue-whole",
        lambda: a.goal_params(3, Decimal("10.00")),
        {"idgoal": "3", "revenue": "10"},
    ),
    (
        "order",
        lambda: a.order_params(
            " A-1 ",
            99.9,
            items=[
                EcommerceItem("SKU", "Mug", ["Home", "Kitchen"], 4.5, 2),
                {"sku": "S2", "price": 3},
            ],
            subtotal=90,
            tax=9.9,
            shipping=0,
            discount=0.001,
        ),
        {
            "idgoal": "0",
            "ec_id": "A-1",
            "revenue": "99.9",
            "ec_st": "90",
            "ec_tx": "9.9",
            "ec_sh": "0",
            "ec_dt": "0.001",
            "ec_items": '[["SKU","Mug",["Home","Kitchen"],4.5,2],["S2","","",3,1]]',
        },
    ),
    (
        "order-without-items",
        lambda: a.order_params("A-2", 5),
        {"idgoal": "0", "ec_id": "A-2", "revenue": "5"},
    ),
    (
        "cart-update",
        lambda: a.cart_update_params(12, items=[EcommerceItem("SKU", category="Home", price=12)]),
        {"idgoal": "0", "revenue": "12", "ec_items": '[["SKU","","Home",12,1]]'},
    ),
    (
        "cart-emptied",
        lambda: a.cart_update_params(0),
        {"idgoal": "0", "revenue": "0", "ec_items": "[]"},
    ),
    (
        "product-view",
        lambda: a.product_view_params(sku="S", name="Mug", category=["A", "B"], price=9),
        {"_pks": "S", "_pkn": "Mug", "_pkc": '["A", "B"]', "_pkp": "9"},
    ),
    ("category-view", lambda: a.product_view_params(category="Kitchen"), {"_pkc": "Kitchen"}),
    (
        "content-impression",
        lambda: a.content_impression_params("Banner"),
        {"c_n": "Banner", "ca": "1", "c_p": "Unknown"},
    ),
    (
        "content-interaction",
        lambda: a.content_interaction_params("click", "Banner", "img.png", "https://example.org/x"),
        {
            "c_i": "click",
            "c_n": "Banner",
            "ca": "1",
            "c_p": "img.png",
            "c_t": "https://example.org/x",
        },
    ),
    (
        "link",
        lambda: a.link_params(" https://other.example/x "),
        {"link": "https://other.example/x"},
    ),
    (
        "download",
        lambda: a.download_params("http://example.org/f.pdf"),
        {"download": "http://example.org/f.pdf"},
    ),
    ("ping", a.ping_params, {"ping": "1"}),
]


@pytest.mark.parametrize(("make", "params"), [p[1:] for p in PARAMS], ids=[p[0] for p in PARAMS])
def test_params(make: Callable[[], dict[str, str]], params: dict[str, str]) -> None:
    result = make()

    assert result == params
    hit = Hit({"idsite": "1", "rec": "1", "url": "http://example.org/", **result}, NOW)
    assert_accepted([hit])


ERRORS: list[tuple[str, Callable[[], object], str]] = [
    ("event-blank-category", lambda: a.event_params(" ", "A"), "category=' ' is invalid"),
    ("event-action-not-str", lambda: a.event_params("C", 5), "action=5 is invalid"),  # type: ignore[arg-type]
    ("event-name-not-str", lambda: a.event_params("C", "A", 5), "name=5 is invalid"),  # type: ignore[arg-type]
    ("event-value-str", lambda: a.event_params("C", "A", value="one"), "value='one' is invalid"),
    ("event-value-bool", lambda: a.event_params("C", "A", value=True), "value=True is invalid"),
    (
        "event-value-nan",
        lambda: a.event_params("C", "A", value=float("nan")),
        "value=nan is invalid",
    ),
    ("search-blank", lambda: a.site_search_params("  "), "keyword='  ' is invalid"),
    ("search-not-str", lambda: a.site_search_params(None), "keyword=None is invalid"),  # type: ignore[arg-type]
    ("search-category", lambda: a.site_search_params("k", 1), "category=1 is invalid"),  # type: ignore[arg-type]
    ("search-count-negative", lambda: a.site_search_params("k", None, -1), "count=-1 is invalid"),
    ("search-count-bool", lambda: a.site_search_params("k", None, True), "count=True is invalid"),
    ("goal-zero", lambda: a.goal_params(0), "goal_id=0 is invalid"),
    ("goal-bool", lambda: a.goal_params(True), "goal_id=True is invalid"),
    (
        "goal-negative-revenue",
        lambda: a.goal_params(1, -1),
        "revenue=-1 is invalid: expected a number >= 0",
    ),
    ("goal-infinite-revenue", lambda: a.goal_params(1, float("inf")), "revenue=inf is invalid"),
    ("order-blank-id", lambda: a.order_params(" ", 1), "order_id=' ' is invalid"),
    (
        "order-long-id",
        lambda: a.order_params("x" * 101, 1),
        "order_id is invalid: expected at most 100",
    ),
    ("order-bad-tax", lambda: a.order_params("A", 1, tax="1,5"), "tax='1,5' is invalid"),
    (
        "order-bad-item",
        lambda: a.order_params("A", 1, items=[("S", 1)]),
        "items: ('S', 1) is invalid",
    ),  # type: ignore[list-item]
    (
        "order-item-unknown-key",
        lambda: a.order_params("A", 1, items=[{"sku": "S", "qty": 2}]),
        "items: {'sku': 'S', 'qty': 2} is invalid",
    ),
    ("item-blank-sku", lambda: EcommerceItem(" "), "sku=' ' is invalid"),
    ("item-name", lambda: EcommerceItem("S", name=1), "name=1 is invalid"),  # type: ignore[arg-type]
    (
        "item-category-six",
        lambda: EcommerceItem("S", category=list("abcdef")),
        "category=['a', 'b', 'c', 'd', 'e', 'f'] is invalid",
    ),
    ("item-category-empty", lambda: EcommerceItem("S", category=[]), "category=[] is invalid"),
    ("item-category-int", lambda: EcommerceItem("S", category=5), "category=5 is invalid"),  # type: ignore[arg-type]
    ("item-negative-price", lambda: EcommerceItem("S", price=-1), "price=-1 is invalid"),
    ("item-quantity-zero", lambda: EcommerceItem("S", quantity=0), "quantity=0 is invalid"),
    ("item-quantity-float", lambda: EcommerceItem("S", quantity=1.5), "quantity=1.5 is invalid"),  # type: ignore[arg-type]
    (
        "product-view-nothing",
        lambda: a.product_view_params(),
        "a product view needs at least one of",
    ),
    ("product-view-blank-sku", lambda: a.product_view_params(sku=""), "sku='' is invalid"),
    ("content-blank-name", lambda: a.content_impression_params(""), "name='' is invalid"),
    (
        "interaction-blank",
        lambda: a.content_interaction_params(" ", "N"),
        "interaction=' ' is invalid",
    ),
    (
        "link-relative",
        lambda: a.link_params("/about"),
        "url='/about' is invalid: expected an absolute",
    ),
    (
        "link-javascript",
        lambda: a.link_params("javascript:alert(1)"),
        "url='javascript:alert(1)' is invalid",
    ),
    ("link-not-str", lambda: a.link_params(None), "url=None is invalid"),  # type: ignore[arg-type]
    (
        "download-broken-ipv6",
        lambda: a.download_params("http://[::1/x"),
        "url='http://[::1/x' is invalid",
    ),
    (
        "cvar-slot-zero",
        lambda: a.custom_variables_json({0: ("a", "b")}, 5),
        "custom variable slot 0 is invalid",
    ),
    (
        "cvar-slot-over",
        lambda: a.custom_variables_json({6: ("a", "b")}, 5),
        "custom variable slot 6 is invalid: expected 1 to 5",
    ),
]


@pytest.mark.parametrize(("make", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_argument(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=r"invalid|needs") as caught:
        make()

    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (-0.0, "0"),
        (1.005, "1.005"),
        (2.675, "2.675"),
        (12.555, "12.555"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
        (Decimal("0.10"), "0.1"),
        (Decimal("1E+3"), "1000"),
        ("0.125", "0.125"),
        (" 3.50 ", "3.5"),
        ("-2", "-2"),
        (7, "7"),
    ],
)
def test_number_text(value: Any, text: str) -> None:
    assert a.number_text("x", value, minimum=None) == text


def test_custom_variables_json() -> None:
    text = a.custom_variables_json({2: ("Plan", 3), 1: (" Role ", "x" * 300)}, 5)

    assert text == '{"1":["Role","' + "x" * 200 + '"],"2":["Plan","3"]}'


def test_absolute_url_is_cut_to_1024_bytes() -> None:
    assert (
        a.absolute_url("url", "https://example.org/" + "é" * 1000)
        == "https://example.org/" + "é" * 502
    )


# -- the context -------------------------------------------------------------------------------


def test_context_collects_hits_in_call_order() -> None:
    context = TrackingContext()
    context.track_event("Video", "Play")
    context.track_site_search("mugs")
    context.track_goal(1, 5)
    context.track_ecommerce_order("A-1", 10, items=[{"sku": "S"}])
    context.track_ecommerce_cart_update(3)
    context.track_content_impression("Banner")
    context.track_content_interaction("click", "Banner")
    context.track_link("https://other.example/")
    context.track_download("https://example.org/f.pdf")
    context.ping()

    keys = [next(iter(p)) for p in context.extra_hits]
    assert keys == [
        "e_c",
        "search",
        "idgoal",
        "idgoal",
        "idgoal",
        "c_n",
        "c_i",
        "link",
        "download",
        "ping",
    ]
    assert repr(context) == "TrackingContext(action_name=None, skipped=False, extra_hits=10)"


def test_context_page_view_settings() -> None:
    context = TrackingContext(max_custom_variables=2)
    context.set_action_name("Home")
    context.set_user_id("  u\n1 ")
    context.set_visitor_id("ABCDEF0123456789")
    context.set_dimension(4, " v " * 200)
    context.set_custom_variable(2, "Role", "admin")
    context.set_custom_variable(1, "Plan", "pro", scope="visit")
    context.track_product_view(sku="S")

    assert context.action_name == "Home"
    assert context.user_id == "u1"
    assert context.visitor_id == "abcdef0123456789"
    assert len(context.dimensions[4]) == 250
    assert context.page_variables == {2: ("Role", "admin")}
    assert context.visit_variables == {1: ("Plan", "pro")}
    assert context.page_params == {"_pks": "S"}
    context.set_user_id(None)
    assert context.user_id is None
    assert context.skipped is False
    context.skip()
    assert context.skipped is True


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.set_visitor_id("xyz"), "visitor_id='xyz' is invalid"),
        (lambda c: c.set_visitor_id(1234567890123456), "visitor_id=1234567890123456 is invalid"),
        (lambda c: c.set_dimension(0, "x"), "dimension_id=0 is invalid"),
        (lambda c: c.set_dimension(True, "x"), "dimension_id=True is invalid"),
        (lambda c: c.set_custom_variable(6, "a", "b"), "slot=6 is invalid: expected 1 to 5"),
        (lambda c: c.set_custom_variable(1, "a", "b", scope="event"), "scope='event' is invalid"),
    ],
    ids=["visitor-not-hex", "visitor-int", "dimension-zero", "dimension-bool", "slot", "scope"],
)
def test_context_errors(call: Callable[[TrackingContext], None], message: str) -> None:
    with pytest.raises(ValueError, match="is invalid") as caught:
        call(TrackingContext())

    assert str(caught.value).startswith(message)
