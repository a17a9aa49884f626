"""Flask behind the WSGI middleware: matched rules as action names, ``get_context(request)``,
errors, files and streams, through Flask's test client."""

from __future__ import annotations

import os
from typing import Any

import pytest
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from matomo_tracking.testing import Collector
from tests.wsgi.conftest import Track, client_for
from tests.wsgi.flask_app import DATA_FILE, create_app

# buffered=True: the test client then closes the response, as a server does (else it waits
# for the test to call response.close(), and the hits with it).


@pytest.fixture
def app(track: Track) -> Flask:
    flask_app = create_app()
    flask_app.wsgi_app = track(  # type: ignore[method-assign]
        flask_app.wsgi_app, status_dimension=1, bytes_dimension=3
    )
    return flask_app


def test_the_matched_rule_is_the_action_name(app: Flask, collector: Collector) -> None:
    client = app.test_client()
    assert client.get("/items/42?color=red", buffered=True).json == {"id": 42, "pid": os.getpid()}
    assert client.get("/shop/products/blue-shoes", buffered=True).text == "blue-shoes"
    assert client.get("/nowhere/7", buffered=True).status_code == 404
    item, product, missing = collector.hits
    assert item["action_name"] == "/items/<int:item_id>"
    assert item["url"] == "http://localhost/items/42?color=red"
    assert item["dimension2"] == str(os.getpid())  # set by the view through get_context
    assert product["action_name"] == "/shop/products/<slug>"
    assert (missing["action_name"], missing["dimension1"]) == ("/nowhere/7", "404")


def test_context_from_the_flask_request(app: Flask, collector: Collector) -> None:
    client = app.test_client()
    client.get("/event", buffered=True)
    client.get("/skipped", buffered=True)
    page, event = collector.hits
    assert page["action_name"] == "Custom name"
    assert (event["e_c"], event["e_a"], event["e_n"]) == ("shop", "view", "item")


def test_a_view_error_is_tracked_as_500_without_its_text(app: Flask, collector: Collector) -> None:
    response = app.test_client().get("/boom", buffered=True)
    assert response.status_code == 500
    [hit] = collector.hits
    assert hit["dimension1"] == "500"
    assert hit["action_name"] == "/boom"
    assert all("secret" not in value for value in hit.params.values())


def test_propagated_errors_are_reraised_unchanged(app: Flask, collector: Collector) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="secret failure detail"):
        app.test_client().get("/boom", buffered=True)
    [hit] = collector.hits
    assert hit["dimension1"] == "500"


def test_files_and_streams_are_counted(app: Flask, collector: Collector) -> None:
    client = app.test_client()
    download = client.get("/download", buffered=True)
    assert download.data == DATA_FILE.read_bytes()
    stream = client.get("/stream", buffered=True)
    assert stream.data == b"x" * 1000
    files, streamed = collector.hits
    assert files["dimension3"] == str(DATA_FILE.stat().st_size)
    assert files["action_name"] == "/download"
    assert streamed["dimension3"] == "1000"
    assert streamed["action_name"] == "/stream"


def test_a_mounted_app_names_actions_with_the_mount(track: Track, collector: Collector) -> None:
    shop = create_app()

    def front(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"front"]

    app = track(DispatcherMiddleware(front, {"/store": shop.wsgi_app}))
    with client_for(app) as client:
        assert client.get("/store/items/5").json()["id"] == 5
        assert client.get("/").text == "front"
    mounted, front_page = collector.hits
    assert mounted["url"] == "http://testserver/store/items/5"
    assert mounted["action_name"] == "/store/items/<int:item_id>"
    assert front_page["action_name"] == "/"
