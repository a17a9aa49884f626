"""MkDocs hook: the build fails when a public name (in a package's ``__all__``), or a public
method of a public class, has no docstring, so the API reference never shows an empty entry."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from mkdocs.exceptions import PluginError

DOCUMENTED = (
    "matomo_asgi",
    "matomo_wsgi",
    "matomo_wsgi.django",
    "matomo_wsgi.gunicorn",
    "matomo_wsgi.celery",
    "matomo_tracking",
    "matomo_tracking.testing",
    "matomo_tracking.metrics",
)


def undocumented() -> list[str]:
    """Every public name of the documented modules that lacks a docstring."""
    missing = []
    for name in DOCUMENTED:
        module = importlib.import_module(name)
        if not inspect.getdoc(module):
            missing.append(name)
        for public in getattr(module, "__all__", ()):
            item = getattr(module, public)
            if not (inspect.isclass(item) or inspect.isfunction(item)):
                continue
            if not inspect.getdoc(item):
                missing.append(f"{name}.{public}")
            if inspect.isclass(item):
                for attribute, member in vars(item).items():
                    if attribute.startswith("_") or not callable(member):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{name}.{public}.{attribute}")
    return missing


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Refuse to build the site while a public name has no docstring."""
    missing = undocumented()
    if missing:
        raise PluginError("public names without a docstring: " + ", ".join(sorted(missing)))
