"""The test kit as a user meets it: after ``pip install matomo-middleware`` the ``matomo``
pytest plugin is registered by its entry point, and a user's own test file can use the
``matomo_server`` and ``matomo_collector`` fixtures with no conftest and no import of them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.servers import BIN, ROOT

USER_TESTS = """
import httpx
from flask import Flask

from matomo_wsgi import MatomoMiddleware


def make_app(matomo_url, **options):
    app = Flask(__name__)

    @app.get("/hello/<name>")
    def hello(name):
        return f"hello {name}"

    app.wsgi_app = MatomoMiddleware(
        app.wsgi_app, url=matomo_url, site_id=1, visitor_salt="tests", **options
    )
    return app


def test_each_page_is_a_hit(matomo_server):
    app = make_app(matomo_server.base_url, sync_mode=True)
    # A WSGI response is tracked when it is closed: buffered=True (or `with`) closes it.
    assert app.test_client().get("/hello/ada?ref=docs", buffered=True).status_code == 200
    (hit,) = matomo_server.collector.wait_for(1)
    assert hit["action_name"] == "/hello/<name>"
    assert hit["url"] == "http://localhost/hello/ada?ref=docs"


def test_in_process_collector(matomo_collector):
    client = httpx.Client(transport=httpx.WSGITransport(app=matomo_collector.wsgi))
    app = make_app("http://matomo.test", sync_mode=True, http_client=client)
    with app.test_client().get("/hello/bob") as response:
        assert response.text == "hello bob"
    assert [h["url"] for h in matomo_collector.hits] == ["http://localhost/hello/bob"]
"""


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "MATOMO_"))}
    return subprocess.run(
        [str(BIN / "python"), "-m", "pytest", "-p", "no:cacheprovider", *args, str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_users_tests_get_the_fixtures_from_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (tmp_path / "test_users_app.py").write_text(textwrap.dedent(USER_TESTS))

    result = run_pytest(tmp_path, "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout

    # The fixtures came from the installed plugin: without it they do not exist.
    result = run_pytest(tmp_path, "-q", "-p", "no:matomo")
    assert result.returncode == 1
    assert "fixture 'matomo_server' not found" in result.stdout


IMPORTS = """
import sys
import pytest
before = set(sys.modules)
import matomo_tracking.testing.plugin
roots = {name.split(".")[0] for name in set(sys.modules) - before}
print(sorted(roots - set(sys.stdlib_module_names) - {"matomo_tracking"}))
"""


def test_the_plugin_imports_only_the_core_pytest_and_the_standard_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
