"""The README's "Migrating from python-piwik" table, row by row: each tracking variable of
python-piwik's ``PARAMETERS`` table (attribute -> Tracking API parameter) has the equivalent
the guide names, and that equivalent sends the same parameter with the same value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.sentinel import SENTINEL_TOKEN
from tests.tracker.test_reference_client import NOW, PAGE, Recorder, accepted

Call = Callable[[Recorder], object]


def variables(**given: Any) -> Call:
    """A page view with the guide's tracking variables."""
    return lambda t: t.track_page_view("p", **given)


#: (python-piwik attribute, the parameter it sent, the guide's equivalent, the value sent)
PYTHON_PIWIK: list[tuple[str, str, Call, str]] = [
    ("url", "url", variables(url="https://x.example/a"), "https://x.example/a"),
    ("action_name", "action_name", lambda t: t.track_page_view("Help"), "Help"),
    ("referer", "urlref", variables(referrer="https://r.example/"), "https://r.example/"),
    (
        "visit_custom_vars",
        "_cvar",
        variables(visit_variables=dict(enumerate({"Plan": "pro"}.items(), start=1))),
        '{"1":["Plan","pro"]}',
    ),
    (
        "page_custom_vars",
        "cvar",
        variables(page_variables=dict(enumerate({"a": "1", "b": "2"}.items(), start=1))),
        '{"1":["a","1"],"2":["b","2"]}',
    ),
    ("visit_count", "_idvc", variables(parameters={"_idvc": 3}), "3"),
    ("view_timestamp", "_viewts", variables(parameters={"_viewts": "1700000000"}), "1700000000"),
    ("first_visit_timestamp", "_idts", variables(parameters={"_idts": 1}), "1"),
    ("campaign_name", "_rcn", variables(attribution=("spring", "shoes", 1, "")), "spring"),
    ("campaign_keywords", "_rck", variables(attribution=("spring", "shoes", 1, "")), "shoes"),
    ("resolution", "res", variables(resolution="1280x1024"), "1280x1024"),
    ("hour", "h", variables(local_time=(13, 4, 5)), "13"),
    ("minute", "m", variables(local_time=(13, 4, 5)), "4"),
    ("second", "s", variables(local_time=(13, 4, 5)), "5"),
    *(
        (name, param, variables(parameters={param: "1"}), "1")
        for name, param in (
            ("flash", "fla"),
            ("java", "java"),
            ("director", "dir"),
            ("quicktime", "qt"),
            ("real_player", "realp"),
            ("pdf", "pdf"),
            ("wma", "wma"),
            ("gears", "gears"),
            ("silverlight", "ag"),
            ("cookie", "cookie"),
        )
    ),
    ("user_agent", "ua", variables(user_agent="UA/1"), "UA/1"),
    ("lang", "lang", variables(language="de-CH"), "de-CH"),
    ("user_id", "uid", variables(user_id="ada"), "ada"),
    ("visitor_id", "cid", variables(visitor_id="0123456789ABCDEF"), "0123456789abcdef"),
    ("new_visit", "new_visit", variables(new_visit=True), "1"),
    ("link", "link", lambda t: t.track_link("https://o.example/"), "https://o.example/"),
    (
        "download",
        "download",
        lambda t: t.track_download("https://o.example/f"),
        "https://o.example/f",
    ),
    ("search_keyword", "search", lambda t: t.track_site_search("mugs", "Shop", 3), "mugs"),
    ("search_category", "search_cat", lambda t: t.track_site_search("mugs", "Shop", 3), "Shop"),
    ("search_count", "search_count", lambda t: t.track_site_search("mugs", "Shop", 3), "3"),
    ("goal_id", "idgoal", lambda t: t.track_goal(4, 12.555), "4"),
    ("revenue", "revenue", lambda t: t.track_goal(4, 12.555), "12.555"),
    ("gt_ms", "pf_srv", variables(performance={"pf_srv": 120}), "120"),
    ("charset", "cs", variables(charset="iso-8859-1"), "iso-8859-1"),
    ("event_category", "e_c", lambda t: t.track_event("Video", "Play", "Intro", 2.5), "Video"),
    ("event_action", "e_a", lambda t: t.track_event("Video", "Play", "Intro", 2.5), "Play"),
    ("event_name", "e_n", lambda t: t.track_event("Video", "Play", "Intro", 2.5), "Intro"),
    ("event_value", "e_v", lambda t: t.track_event("Video", "Play", "Intro", 2.5), "2.5"),
    ("content_name", "c_n", lambda t: t.track_content_impression("Ad", "img", "https://t/"), "Ad"),
    (
        "content_piece",
        "c_p",
        lambda t: t.track_content_impression("Ad", "img", "https://t/"),
        "img",
    ),
    (
        "content_target",
        "c_t",
        lambda t: t.track_content_impression("Ad", "img", "https://t/"),
        "https://t/",
    ),
    (
        "content_interaction",
        "c_i",
        lambda t: t.track_content_interaction("click", "Ad", "img"),
        "click",
    ),
    ("client_ip", "cip", variables(ip="198.51.100.4"), "198.51.100.4"),
    ("country", "country", variables(country="FR"), "fr"),
    ("region", "region", variables(region="75"), "75"),
    ("city", "city", variables(city="Paris"), "Paris"),
    ("lat", "lat", variables(latitude=48.85), "48.85"),
    ("long", "long", variables(longitude=2.35), "2.35"),
]


@pytest.mark.parametrize(
    ("param", "call", "value"),
    [row[1:] for row in PYTHON_PIWIK],
    ids=[row[0] for row in PYTHON_PIWIK],
)
def test_python_piwik_tracking_variables_have_the_equivalent_the_guide_names(
    param: str, call: Call, value: str
) -> None:
    tracker = Recorder(token_auth=SENTINEL_TOKEN)  # python-piwik sent cip & co. with a token
    tracker.set(url=PAGE)

    call(tracker)

    (hit,) = tracker.hits
    assert hit.params[param] == value
    accepted(hit, SENTINEL_TOKEN)


def test_python_piwik_client_dt_is_the_timestamp_variable_sent_as_the_hits_age() -> None:
    tracker = Recorder()
    tracker.set(url=PAGE)

    tracker.track_page_view("p", timestamp=NOW - 3600)

    (hit,) = tracker.hits
    assert hit.created == NOW - 3600  # the wire adds cdo=3600 when it is sent


def test_python_piwik_parameters_needing_a_token_are_refused_without_one() -> None:
    tracker = Recorder()
    tracker.set(url=PAGE)

    tracker.track_page_view("p", ip="198.51.100.4")  # not sent, as python-piwik skipped it
    with pytest.raises(ValueError, match="country: Matomo accepts location overrides only"):
        tracker.track_page_view("p", country="fr")

    (hit,) = tracker.hits
    assert "cip" not in hit.params
