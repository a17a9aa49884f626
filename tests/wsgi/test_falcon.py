"""Falcon's WSGI app: the responder's ``uri_template`` is the action name (its router asked
again with the path); a router of an unknown version gives the path and one debug line."""

from __future__ import annotations

from typing import Any

import falcon
import pytest

from matomo_tracking.testing import Collector
from tests.wsgi.conftest import Track, client_for


class Item:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        resp.text = "item"

    def on_get_part(self, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        resp.text = params["part"]


def falcon_app(**options: Any) -> falcon.App:
    app = falcon.App(**options)
    app.add_route("/items/{item_id:int}", Item())
    app.add_route("/items/{item_id:int}/parts/{part}", Item(), suffix="part")
    return app


def _actions(track: Track, collector: Collector, app: Any, *paths: str) -> list[str]:
    with client_for(track(app)) as http:
        for path in paths:
            http.get(path)
    return [hit["action_name"] for hit in collector.hits]


def test_falcon_templates(track: Track, collector: Collector) -> None:
    actions = _actions(
        track, collector, falcon_app(), "/items/3", "/items/3/parts/lid", "/items/x", "/nope"
    )
    assert actions == [
        "/items/{item_id:int}",
        "/items/{item_id:int}/parts/{part}",
        "/items/x",  # no template takes "x" as an int: the path
        "/nope",
    ]


def test_the_app_strips_trailing_slashes_so_does_the_lookup(
    track: Track, collector: Collector
) -> None:
    app = falcon_app()
    app.req_options.strip_url_path_trailing_slash = True
    assert _actions(track, collector, app, "/items/3/") == ["/items/{item_id:int}"]


def test_a_router_of_an_unknown_version_gives_paths(
    track: Track, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    app = falcon_app()
    app._router = type("FutureRouter", (), {"find": lambda self, path: ("resource",)})()
    caplog.set_level("DEBUG", logger="matomo_wsgi.routes")
    with client_for(track(app)) as http:
        statuses = [http.get(path).status_code for path in ("/items/3", "/items/4")]
    assert statuses == [200, 200]  # Falcon keeps its own bound find(); only ours changed
    assert [hit["action_name"] for hit in collector.hits] == ["/items/3", "/items/4"]
    lines = [r for r in caplog.records if r.name == "matomo_wsgi.routes"]
    assert [r.levelname for r in lines] == ["DEBUG"]
    assert "using paths as action names" in lines[0].getMessage()
