"""WSGI entry point of the test Django project (for gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wsgi.django_project.settings")
application = get_wsgi_application()
