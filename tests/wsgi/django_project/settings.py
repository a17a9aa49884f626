"""Settings of the test Django project. In-process tests configure Django from ``BASE`` (and
override per test); the servers of the end-to-end tests import this module as
``DJANGO_SETTINGS_MODULE`` and read the Matomo options from environment variables."""

from __future__ import annotations

import os
from typing import Any

BASE: dict[str, Any] = {
    "DEBUG": False,
    "SECRET_KEY": "matomo-middleware-tests",
    "ALLOWED_HOSTS": ["*"],
    "ROOT_URLCONF": "tests.wsgi.django_project.urls",
    "INSTALLED_APPS": [],
    "MIDDLEWARE": ["matomo_wsgi.django.MatomoMiddleware"],
    "DATABASES": {},
    "USE_TZ": True,
    "LOGGING_CONFIG": None,
}


def matomo_from_env() -> dict[str, Any]:
    """The MATOMO_API_TRACKING dict the end-to-end servers use."""
    return {
        "url": os.environ.get("MATOMO_URL", "http://127.0.0.1:9/"),
        "site_id": os.environ.get("MATOMO_SITE_ID", "1"),  # text, as the older app allowed
        "visitor_salt": "e2e-salt",
        "status_dimension": 1,
        "bytes_dimension": 3,
        "timeout": float(os.environ.get("MATOMO_TIMEOUT", "5")),
        "shutdown_timeout": float(os.environ.get("MATOMO_SHUTDOWN_TIMEOUT", "5")),
        "batch_max_age": float(os.environ.get("MATOMO_BATCH_MAX_AGE", "0.2")),
    }


globals().update(BASE)
MATOMO_API_TRACKING = matomo_from_env()
