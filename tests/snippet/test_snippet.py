"""``tracking_code``: exact output, each option, validation, and token safety."""

from __future__ import annotations

import inspect
import json
from urllib.parse import parse_qsl

import pytest

from matomo_tracking.config import TrackingConfig
from matomo_tracking.snippet import (
    TrackingCode,
    install_jinja,
    tracker_base,
    tracking_code,
    tracking_code_for,
)

URL = "https://matomo.example.org"

BASIC = """\
<script>
  var _paq = window._paq = window._paq || [];
  _paq.push(["trackPageView"]);
  _paq.push(["enableLinkTracking"]);
  (function() {
    var u="https://matomo.example.org/";
    _paq.push(["setTrackerUrl", u+"matomo.php"]);
    _paq.push(["setSiteId", "1"]);
    var d=document, g=d.createElement("script"), s=d.getElementsByTagName("script")[0];
    g.async=true; g.src=u+"matomo.js"; s.parentNode.insertBefore(g,s);
  })();
</script>
"""

FULL = """\
<script nonce="r4nd0m+/=">
  var _paq = window._paq = window._paq || [];
  _paq.push(["setDocumentTitle", "Home \\u0026 away"]);
  _paq.push(["setUserId", "alice@example.org"]);
  _paq.push(["setCustomDimension", 1, "free"]);
  _paq.push(["setCustomDimension", 4, "\\u003cb\\u003e"]);
  _paq.push(["disableCookies"]);
  _paq.push(["setDomains", ["*.example.org"]]);
  _paq.push(["trackPageView"]);
  (function() {
    var u="//matomo.example.org/stats/";
    _paq.push(["setTrackerUrl", u+"matomo.php"]);
    _paq.push(["setSiteId", "42"]);
    var d=document, g=d.createElement("script"), s=d.getElementsByTagName("script")[0];
    g.async=true; g.src=u+"matomo.js"; g.nonce="r4nd0m+/="; s.parentNode.insertBefore(g,s);
  })();
</script>
<noscript><img referrerpolicy="no-referrer-when-downgrade" \
src="//matomo.example.org/stats/matomo.php?idsite=42&amp;rec=1&amp;action_name=Home%20%26%20away\
&amp;uid=alice%40example.org&amp;dimension1=free&amp;dimension4=%3Cb%3E" \
style="border:0" alt=""></noscript>
"""


def test_basic_call_exact_output() -> None:
    code = tracking_code(url=URL, site_id=1)
    assert code == BASIC
    assert type(code) is TrackingCode


def test_every_option_exact_output() -> None:
    code = tracking_code(
        url="//matomo.example.org/stats/matomo.php",
        site_id=42,
        user_id="alice@example.org",
        dimensions={4: "<b>", 1: "free"},
        document_title="Home & away",
        disable_cookies=True,
        link_tracking=False,
        nonce="r4nd0m+/=",
        noscript=True,
        extra_commands=[["setDomains", ["*.example.org"]]],
    )
    assert code == FULL


def test_output_is_ascii() -> None:
    code = tracking_code(url=URL, site_id=1, user_id="Zoë 😀", document_title="\u2028")
    assert code.isascii()
    assert '"Zo\\u00eb \\ud83d\\ude00"' in code


def test_tracking_code_is_safe_html() -> None:
    code = tracking_code(url=URL, site_id=1)
    assert code.__html__() is code
    assert str(code) == code


@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        ({"user_id": "u1"}, '_paq.push(["setUserId", "u1"]);'),
        ({"document_title": "T"}, '_paq.push(["setDocumentTitle", "T"]);'),
        ({"dimensions": {3: "x"}}, '_paq.push(["setCustomDimension", 3, "x"]);'),
        ({"disable_cookies": True}, '_paq.push(["disableCookies"]);'),
        ({"nonce": "abc"}, '<script nonce="abc">'),
        ({"nonce": "abc"}, 'g.nonce="abc";'),
        ({"noscript": True}, "<noscript><img "),
        ({"extra_commands": [["enableHeartBeatTimer", 15]]}, '["enableHeartBeatTimer", 15]'),
    ],
    ids=lambda value: next(iter(value)) if isinstance(value, dict) else "",
)
def test_option_adds_its_line(kwargs: dict[str, object], line: str) -> None:
    assert line not in tracking_code(url=URL, site_id=1)
    assert line in tracking_code(url=URL, site_id=1, **kwargs)  # type: ignore[arg-type]


def test_link_tracking_can_be_turned_off() -> None:
    assert "enableLinkTracking" in tracking_code(url=URL, site_id=1, link_tracking=True)
    assert "enableLinkTracking" not in tracking_code(url=URL, site_id=1, link_tracking=False)


@pytest.mark.parametrize("empty", [None, ""])
def test_empty_values_set_nothing(empty: str | None) -> None:
    code = tracking_code(url=URL, site_id=1, user_id=empty, document_title=empty, nonce=empty)
    assert code == BASIC


def test_configuration_comes_before_track_page_view_in_a_fixed_order() -> None:
    code = tracking_code(
        url=URL,
        site_id=1,
        user_id="u",
        dimensions={2: "b", 1: "a"},
        document_title="t",
        disable_cookies=True,
        extra_commands=[("setCookieDomain", "*.example.org")],
    )
    order = [
        "setDocumentTitle",
        '"setUserId"',
        '"setCustomDimension", 1',
        '"setCustomDimension", 2',
        "disableCookies",
        "setCookieDomain",
        "trackPageView",
        "enableLinkTracking",
        "setTrackerUrl",
        "setSiteId",
    ]
    positions = [code.index(item) for item in order]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://matomo.example.org", "https://matomo.example.org/"),
        ("https://matomo.example.org/", "https://matomo.example.org/"),
        ("http://matomo.example.org:8080/sub", "http://matomo.example.org:8080/sub/"),
        ("https://matomo.example.org/sub/", "https://matomo.example.org/sub/"),
        ("https://matomo.example.org/matomo.php", "https://matomo.example.org/"),
        ("https://matomo.example.org/sub/piwik.php", "https://matomo.example.org/sub/"),
        ("//matomo.example.org", "//matomo.example.org/"),
        ("//matomo.example.org/matomo.php", "//matomo.example.org/"),
        ("HTTPS://Matomo.example.org", "HTTPS://Matomo.example.org/"),
        ("https://matomo.php", "https://matomo.php/"),  # a host, not an endpoint
        ("https://[::1]:8443/m", "https://[::1]:8443/m/"),
        ("https://bücher.example/matomo", "https://bücher.example/matomo/"),
    ],
)
def test_tracker_base(url: str, base: str) -> None:
    assert tracker_base(url) == base
    assert f"var u={json.dumps(base)};" in tracking_code(url=url, site_id=1)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "matomo.example.org",
        "/matomo",
        "ftp://matomo.example.org",
        "javascript:alert(1)//",
        "https://",
        "https://matomo.example.org/a b",
        "https://matomo.example.org/\t",
        "https://matomo.example.org/\n",
        "https://matomo.example.org/\x00",
        "https://matomo.example.org/\x7f",
        'https://matomo.example.org/"',
        "https://matomo.example.org/'",
        "https://matomo.example.org/`",
        "https://matomo.example.org/<",
        "https://matomo.example.org/>",
        "https://matomo.example.org\\@evil.example",
        "https://user:pass@matomo.example.org",
        "https://matomo.example.org/?a=1",
        "https://matomo.example.org/#x",
        "https://matomo.example.org:99999",
        "https://matomo.example.org\u2028",
        "https://matomo.example.org/\u202e",
        "https://matomo.example.org/\u200b",
        "https://matomo.example.org/\x85",
        b"https://matomo.example.org",
        None,
    ],
)
def test_bad_url_is_refused(url: object) -> None:
    with pytest.raises(ValueError, match=r"^url="):
        tracking_code(url=url, site_id=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("site_id", [0, -1, True, False, "1", 1.0, None, [1]])
def test_bad_site_id_is_refused(site_id: object) -> None:
    with pytest.raises(ValueError, match=r"^site_id=.*positive int"):
        tracking_code(url=URL, site_id=site_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("user_id", 42),
        ("user_id", b"bytes"),
        ("document_title", ["t"]),
        ("dimensions", {0: "x"}),
        ("dimensions", {-1: "x"}),
        ("dimensions", {True: "x"}),
        ("dimensions", {"1": "x"}),
        ("dimensions", {1: 2}),
        ("dimensions", {1: None}),
        ("dimensions", [(1, "x")]),
        ("disable_cookies", "yes"),
        ("link_tracking", 1),
        ("noscript", None),
        ("nonce", "a b"),
        ("nonce", 'a"b'),
        ("nonce", "a<b"),
        ("nonce", "a&b"),
        ("nonce", "x" * 257),
        ("nonce", 123),
        ("extra_commands", "setDomains"),
        ("extra_commands", [[]]),
        ("extra_commands", ["trackPageView"]),
        ("extra_commands", [[1, 2]]),
        ("extra_commands", [["bad name"]]),
        ("extra_commands", [["alert(1)//"]]),
        ("extra_commands", [["setDomains", object()]]),
        ("extra_commands", [["setX", float("nan")]]),
        ("extra_commands", 5),
        ("page_variables", [("Plan", "pro")]),
        ("page_variables", {0: ("Plan", "pro")}),
        ("visit_variables", {1: ("Plan",)}),
        ("visit_variables", {1: ("Plan", 3)}),
    ],
)
def test_bad_value_is_refused_naming_the_argument(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{key}="):
        tracking_code(url=URL, site_id=1, **{key: value})  # type: ignore[arg-type]


def test_long_values_are_shortened_in_errors() -> None:
    with pytest.raises(ValueError, match=r"\.\.\. is invalid") as info:
        tracking_code(url=URL, site_id=1, user_id=["x" * 1000])  # type: ignore[arg-type]
    assert len(str(info.value)) < 300


def test_extra_commands_accept_json_values() -> None:
    code = tracking_code(
        url=URL,
        site_id=1,
        extra_commands=[
            ("setCustomVariable", 1, "k", "v", "page"),
            ["setDomains", ["*.a", "*.b"]],
            ["setSecureCookie", True],
            ["setVisitorCookieTimeout", 3600.5],
            ["setReferralCookieTimeout", None],
            ["setCustomData", {"a": [1, {"b": "</script>"}]}],
        ],
    )
    assert '_paq.push(["setCustomVariable", 1, "k", "v", "page"]);' in code
    assert '{"a": [1, {"b": "\\u003c/script\\u003e"}]}' in code


# -- token_auth never reaches the browser -------------------------------------------------

SECRET = "0123456789abcdef0123456789abcdef"


def test_token_auth_is_not_an_argument() -> None:
    parameters = inspect.signature(tracking_code).parameters
    assert not any("token" in name for name in parameters)
    with pytest.raises(TypeError):
        tracking_code(url=URL, site_id=1, token_auth=SECRET)  # type: ignore[call-arg]


def test_tracking_code_for_never_outputs_the_token() -> None:
    config = TrackingConfig(url=URL + "/matomo.php", site_id=7, token_auth=SECRET)
    code = tracking_code_for(config, user_id="u", noscript=True)
    assert SECRET not in code
    assert "token" not in code
    assert code == tracking_code(url=URL, site_id=7, user_id="u", noscript=True)
    with pytest.raises(TypeError):
        tracking_code_for(config, token_auth=SECRET)


def test_tracking_code_for_overrides_and_callable_site_id() -> None:
    config = TrackingConfig(url=URL, site_id=lambda view: 3)
    with pytest.raises(ValueError, match="site_id"):
        tracking_code_for(config)
    assert tracking_code_for(config, site_id=9) == tracking_code(url=URL, site_id=9)
    plain = TrackingConfig(url=URL, site_id=2)
    assert tracking_code_for(plain, site_id=5) == tracking_code(url=URL, site_id=5)


def test_extra_commands_cannot_carry_the_token() -> None:
    with pytest.raises(ValueError, match="token_auth"):
        tracking_code(
            url=URL, site_id=1, extra_commands=[["appendToTrackingUrl", "token_auth=" + SECRET]]
        )


class _Env:
    def __init__(self) -> None:
        self.globals: dict[str, object] = {}


def test_install_jinja_refuses_unknown_or_token_arguments() -> None:
    with pytest.raises(TypeError, match="token_auth"):
        install_jinja(_Env(), url=URL, site_id=1, token_auth=SECRET)
    with pytest.raises(ValueError, match=r"^url="):
        install_jinja(_Env(), url="not a url", site_id=1)


def test_install_jinja_defaults_and_overrides() -> None:
    env = _Env()
    function = install_jinja(env, url=URL, site_id=1)
    assert env.globals["matomo_tracking_code"] is function
    assert function() == BASIC
    assert function(site_id=2, user_id="u") == tracking_code(url=URL, site_id=2, user_id="u")
    with pytest.raises(TypeError, match="token_auth"):
        function(token_auth=SECRET)
    later = install_jinja(_Env(), site_id=1)  # url may be given per page
    assert later(url=URL) == BASIC


def test_custom_variables_in_the_script_and_the_noscript_image_as_python_piwik_sent() -> None:
    # python-piwik's tracking_code() pushed setCustomVariable per scope and its <noscript>
    # image carried cvar/_cvar (with the title and user id); so do these.
    code = tracking_code(
        url=URL,
        site_id=3,
        document_title="Pricing",
        user_id="u-1",
        page_variables={1: ("Plan", "pro")},
        visit_variables={2: ("Role", "admin")},
        noscript=True,
    )

    assert '_paq.push(["setCustomVariable", 1, "Plan", "pro", "page"]);' in code
    assert '_paq.push(["setCustomVariable", 2, "Role", "admin", "visit"]);' in code
    assert code.index("setCustomVariable") < code.index("trackPageView")
    image = code.split('src="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    query = dict(parse_qsl(image.split("?", 1)[1]))
    assert query == {
        "idsite": "3",
        "rec": "1",
        "action_name": "Pricing",
        "uid": "u-1",
        "cvar": '{"1":["Plan","pro"]}',
        "_cvar": '{"2":["Role","admin"]}',
    }
