"""The ``matomo_tracking_code`` Jinja2 global in a plain environment, Flask and Starlette."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jinja2
import pytest
from flask import Flask, render_template_string
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

import matomo_tracking.snippet
from matomo_tracking.snippet import install_jinja, tracking_code
from tests.snippet.harness import parse

URL = "https://matomo.example.org"
HOSTILE = "</script><script>alert('x\")</script>&amp;"


def test_module_does_not_import_template_engines() -> None:
    source = Path(matomo_tracking.snippet.__file__).read_text()
    for name in ("jinja2", "markupsafe", "django", "flask", "starlette"):
        assert f"import {name}" not in source
        assert f"from {name}" not in source


@pytest.mark.parametrize("autoescape", [True, False])
def test_jinja_global_renders_unescaped(autoescape: bool) -> None:
    env = jinja2.Environment(autoescape=autoescape)  # noqa: S701 - both modes are tested
    install_jinja(env, url=URL, site_id=1)
    template = env.from_string(
        "<p>{{ name }}</p>{{ matomo_tracking_code(user_id=name, document_title=title) }}"
    )
    html = template.render(name=HOSTILE, title="Tom & Jerry")
    code = tracking_code(url=URL, site_id=1, user_id=HOSTILE, document_title="Tom & Jerry")
    assert html.endswith(code)
    if autoescape:
        assert html.startswith("<p>&lt;/script&gt;")  # the page itself is still escaped
        assert [tag for tag, _, _ in parse(html).elements] == ["p", "script"]


def test_jinja_global_with_select_autoescape_and_set() -> None:
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(default_for_string=True))
    install_jinja(env, url=URL, site_id=1)
    template = env.from_string(
        "{% set code = matomo_tracking_code(noscript=True) %}{{ code }}{{ code | e }}"
    )
    code = tracking_code(url=URL, site_id=1, noscript=True)
    assert template.render() == code + code


def test_flask_render_template_string() -> None:
    app = Flask(__name__)
    install_jinja(app.jinja_env, url=URL, site_id=5)

    @app.get("/")
    def index() -> str:
        return render_template_string(
            "<title>{{ title }}</title>\n"
            "{{ matomo_tracking_code(user_id=user, document_title=title, nonce=nonce) }}",
            user=HOSTILE,
            title="Q&A",
            nonce="abc123",
        )

    response = app.test_client().get("/")
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert body == "<title>Q&amp;A</title>\n" + tracking_code(
        url=URL, site_id=5, user_id=HOSTILE, document_title="Q&A", nonce="abc123"
    )


def test_starlette_jinja2_templates(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        "<h1>{{ user }}</h1>\n{{ matomo_tracking_code(user_id=user, nonce=request.state.nonce) }}"
    )
    templates = Jinja2Templates(directory=tmp_path)
    install_jinja(templates.env, url=URL, site_id=2)

    async def page(request: Request) -> Response:
        request.state.nonce = "n0nce"
        return templates.TemplateResponse(request, "page.html", {"user": HOSTILE})

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=Starlette(routes=[Route("/", page)]))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/")

    response = asyncio.run(get())
    assert response.status_code == 200
    code = tracking_code(url=URL, site_id=2, user_id=HOSTILE, nonce="n0nce")
    assert response.text.endswith(code)
    assert [tag for tag, _, _ in parse(response.text).elements] == ["h1", "script"]
