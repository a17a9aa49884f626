"""Django app configuration: add ``"matomo_wsgi"`` to ``INSTALLED_APPS`` to use
``{% load matomo %}{% matomo_tracking_code %}`` in templates. The app has no models."""

from __future__ import annotations

from django.apps import AppConfig


class MatomoConfig(AppConfig):
    """The ``matomo_wsgi`` Django app (template tags only)."""

    name = "matomo_wsgi"
    label = "matomo_wsgi"
    verbose_name = "Matomo tracking"
