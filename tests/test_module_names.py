"""Every module of the three packages says what it exports: an ``__all__`` whose names all
exist (the packages' own ``__init__`` lists are checked by the export tests)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import matomo_asgi
import matomo_tracking
import matomo_wsgi


def _modules() -> list[str]:
    names = []
    for package in (matomo_tracking, matomo_asgi, matomo_wsgi):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_every_module_has_a_complete_all(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional framework missing here (Celery, Django, ...)
        pytest.skip(f"{name}: {exc}")
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    for attribute in exported:
        assert hasattr(module, attribute), f"{name}.__all__ names {attribute}, which is missing"
