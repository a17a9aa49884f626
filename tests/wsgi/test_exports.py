"""The public names of ``matomo_wsgi`` are what is meant, documented, and import nothing
they should not (Flask, Django, the ASGI adapter)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import matomo_wsgi
from matomo_wsgi import django as django_middleware
from matomo_wsgi import gunicorn
from tests.servers import ROOT


def test_the_public_names() -> None:
    assert sorted(matomo_wsgi.__all__) == [
        "DispatchStats",
        "EcommerceItem",
        "MatomoMiddleware",
        "ThreadDispatcher",
        "Tracker",
        "TrackingContext",
        "get_context",
    ]
    assert django_middleware.__all__ == [
        "SETTING",
        "MatomoMiddleware",
        "authenticated_user_id",
        "config_from_settings",
    ]
    assert gunicorn.__all__ == ["worker_exit"]


def test_every_public_object_has_a_docstring() -> None:
    modules = (matomo_wsgi, django_middleware, gunicorn)
    for module in modules:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"
                for member_name, member in vars(value).items():
                    if inspect.isfunction(member) and not member_name.startswith("_"):
                        assert inspect.getdoc(member), f"{name}.{member_name} has no docstring"


def test_importing_the_adapter_imports_no_framework() -> None:
    code = (
        "import sys, matomo_wsgi, matomo_wsgi.gunicorn;"
        "bad = [m for m in ('flask', 'django', 'werkzeug', 'matomo_asgi', 'starlette')"
        " if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
