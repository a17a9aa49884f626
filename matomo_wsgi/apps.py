"""Django app configuration: add ``"matomo_wsgi"`` to ``INSTALLED_APPS`` to use
``{% load matomo %}{% matomo_tracking_code %}`` in templates. The app has no models."""

from __future__ import annotations

from pathlib import Path

from django.apps import AppConfig

__all__ = ["MatomoConfig"]


class MatomoConfig(AppConfig):
    """The ``matomo_wsgi`` Django app (template tags only)."""

    name = "matomo_wsgi"
    label = "matomo_wsgi"
    verbose_name = "Matomo tracking"
    # Explicit, so Django finds the templatetags even when the package is seen through more
    # than one path entry (namespace or editable installs).
    path = str(Path(__file__).resolve().parent)
