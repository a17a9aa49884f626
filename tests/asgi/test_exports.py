"""The public names of matomo_asgi are exactly its ``__all__``, each documented."""

from __future__ import annotations

import inspect
import subprocess
import sys

import matomo_asgi
from tests.servers import ROOT

PUBLIC = {
    "AsyncTracker",
    "AsyncioDispatcher",
    "DispatchStats",
    "EcommerceItem",
    "MatomoMiddleware",
    "TrackingContext",
    "get_context",
}


def test_all_is_what_is_meant() -> None:
    assert set(matomo_asgi.__all__) == PUBLIC
    assert sorted(matomo_asgi.__all__) == matomo_asgi.__all__
    for name in matomo_asgi.__all__:
        assert getattr(matomo_asgi, name) is not None


def test_every_public_name_and_method_has_a_docstring() -> None:
    for name in matomo_asgi.__all__:
        item = getattr(matomo_asgi, name)
        assert inspect.getdoc(item), name
        if inspect.isclass(item):
            for attribute, member in vars(item).items():
                if attribute.startswith("_") or not callable(member):
                    continue
                assert inspect.getdoc(member), f"{name}.{attribute}"


def test_importing_it_imports_no_django() -> None:
    code = "import sys, matomo_asgi; print('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_same_names_as_matomo_wsgi_but_the_executor_and_tracker() -> None:
    import matomo_wsgi

    own = {"AsyncTracker", "AsyncioDispatcher"}
    theirs = {"ThreadDispatcher", "Tracker"}
    assert set(matomo_asgi.__all__) - own == set(matomo_wsgi.__all__) - theirs
    for name in ("DispatchStats", "EcommerceItem", "TrackingContext"):  # the core's, shared
        assert getattr(matomo_asgi, name) is getattr(matomo_wsgi, name), name
