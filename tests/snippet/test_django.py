"""``{% load matomo %}{% matomo_tracking_code %}`` in Django templates.

Rendering runs in a subprocess with its own ``settings.configure`` (see ``django_render.py``);
the argument handling is also tested in-process through ``tracking_code_from_settings``,
which needs no settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from matomo_tracking.snippet import tracking_code
from matomo_wsgi.apps import MatomoConfig
from matomo_wsgi.templatetags.matomo import tracking_code_from_settings
from tests.servers import ROOT
from tests.snippet.harness import parse

SECRET = "0123456789abcdef0123456789abcdef"
SETTINGS = {
    "url": "http://matomo.internal:8080/matomo.php",
    "js_url": "https://matomo.example.org",
    "site_id": 3,
    "token_auth": SECRET,
    "ignore_paths": ["/health"],
}
JS_URL = "https://matomo.example.org"
HOSTILE = "</script><script>alert('x\")</script>&amp;\u2028"


def render(cases: list[dict[str, Any]], matomo: object = SETTINGS) -> list[dict[str, str]]:
    payload = {"settings": {"MATOMO_API_TRACKING": matomo}, "cases": cases}
    result = subprocess.run(
        [sys.executable, "-W", "error", str(Path(__file__).with_name("django_render.py"))],
        input=json.dumps(payload).encode(),
        capture_output=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out: list[dict[str, str]] = json.loads(result.stdout)
    return out


def test_app_config() -> None:
    assert MatomoConfig.name == "matomo_wsgi"
    assert MatomoConfig.label == "matomo_wsgi"


def test_django_templates_render_the_tag() -> None:
    context = {"user": HOSTILE, "title": "Q&A", "nonce": "abc+/=", "plan": "<pro>"}
    results = render(
        [
            {"template": "{% load matomo %}{% matomo_tracking_code %}"},
            {
                "template": (
                    "{% load matomo %}<p>{{ user }}</p>"
                    "{% matomo_tracking_code user_id=user title=title nonce=nonce"
                    " dimension2=plan dimension5='x' noscript=True %}"
                ),
                "context": context,
            },
            {
                "template": (
                    "{% load matomo %}{% matomo_tracking_code site_id=9 link_tracking=False"
                    " disable_cookies=True as code %}{{ code }}|{{ code|escape }}"
                ),
            },
            {
                "template": (
                    "{% load matomo %}{% autoescape off %}"
                    "{% matomo_tracking_code user_id='' %}{% endautoescape %}"
                ),
            },
            {"template": "{% load matomo %}{% matomo_tracking_code token_auth='x' %}"},
            {"template": "{% load matomo %}{% matomo_tracking_code site_id=0 %}"},
        ]
    )
    basic = tracking_code(url=JS_URL, site_id=3)
    assert results[0] == {"html": basic}

    html = results[1]["html"]
    code = tracking_code(
        url=JS_URL,
        site_id=3,
        user_id=HOSTILE,
        document_title="Q&A",
        nonce="abc+/=",
        dimensions={2: "<pro>", 5: "x"},
        noscript=True,
    )
    assert html.startswith("<p>&lt;/script&gt;")
    assert html.endswith(code)
    assert [tag for tag, _, _ in parse(html).elements] == ["p", "script", "noscript", "img"]

    other = tracking_code(url=JS_URL, site_id=9, link_tracking=False, disable_cookies=True)
    assert results[2] == {"html": other + "|" + other}
    assert results[3] == {"html": basic}
    assert results[4]["error"].startswith("TypeError: matomo_tracking_code: unknown argument")
    assert results[5]["error"].startswith("ValueError: site_id=0")
    for result in results:
        assert SECRET not in json.dumps(result)


def test_django_without_setting_is_improperly_configured() -> None:
    (result,) = render([{"template": "{% load matomo %}{% matomo_tracking_code %}"}], None)
    assert result["error"].startswith("ImproperlyConfigured: settings.MATOMO_API_TRACKING")


# -- argument handling, in-process ---------------------------------------------------------


def test_url_is_used_without_js_url() -> None:
    code = tracking_code_from_settings({"url": "https://m.example.org/piwik.php", "site_id": 2})
    assert code == tracking_code(url="https://m.example.org", site_id=2)


def test_site_id_defaults_to_one_like_the_middleware() -> None:
    code = tracking_code_from_settings({"url": JS_URL})
    assert code == tracking_code(url=JS_URL, site_id=1)


def test_template_values_become_strings() -> None:
    class User:
        pk = 42

        def __str__(self) -> str:
            return "alice"

    code = tracking_code_from_settings(
        SETTINGS,
        user_id=User.pk,
        title=User(),
        nonce="n",
        dimension1=7,
        dimension2=None,
        dimension3="",
        dimensions={4: "d"},
        extra_commands=[["setDomains", ["*.example.org"]]],
    )
    assert code == tracking_code(
        url=JS_URL,
        site_id=3,
        user_id="42",
        document_title="alice",
        nonce="n",
        dimensions={1: "7", 4: "d"},
        extra_commands=[["setDomains", ["*.example.org"]]],
    )
    assert tracking_code_from_settings(SETTINGS, user_id=None, document_title="t") == (
        tracking_code(url=JS_URL, site_id=3, document_title="t")
    )


def test_custom_variables_pass_through_the_tag() -> None:
    variables = {"page_variables": {1: ("Plan", "pro")}, "visit_variables": {2: ("Role", "x")}}

    code = tracking_code_from_settings(SETTINGS, noscript=True, **variables)

    assert code == tracking_code(url=JS_URL, site_id=3, noscript=True, **variables)
    assert "setCustomVariable" in code


def test_callable_site_id_needs_the_argument() -> None:
    options = {"url": JS_URL, "site_id": lambda view: 1}
    with pytest.raises(ValueError, match="site_id"):
        tracking_code_from_settings(options)
    assert tracking_code_from_settings(options, site_id=4) == tracking_code(url=JS_URL, site_id=4)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (None, ImproperlyConfigured, "MATOMO_API_TRACKING"),
        ("https://m.example.org", ImproperlyConfigured, "MATOMO_API_TRACKING"),
        ({"site_id": 1}, ImproperlyConfigured, r"\['url'\] is required"),
        ({"url": "javascript:alert(1)"}, ValueError, r"^MATOMO_API_TRACKING\['url'\]="),
        ({"url": JS_URL, "js_url": "x y"}, ValueError, r"^MATOMO_API_TRACKING\['js_url'\]="),
        ({"url": JS_URL, "site_id": "1"}, ValueError, "^site_id="),
    ],
)
def test_bad_settings(options: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        tracking_code_from_settings(options)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="unknown argument 'token_auth'"):
        tracking_code_from_settings(SETTINGS, token_auth=SECRET)
    with pytest.raises(TypeError, match="unknown argument 'dimension0'"):
        tracking_code_from_settings(SETTINGS, dimension0="x")
    with pytest.raises(ValueError, match="dimensions="):
        tracking_code_from_settings(SETTINGS, dimensions="x", dimension1="y")
    with pytest.raises(ValueError, match=r"^nonce="):
        tracking_code_from_settings(SETTINGS, nonce='"><script>')
