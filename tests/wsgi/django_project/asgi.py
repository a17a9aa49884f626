"""ASGI entry point of the test Django project (for uvicorn)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wsgi.django_project.settings")
application = get_asgi_application()
