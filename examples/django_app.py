"""Django in one file, tracked by settings:
`MATOMO_URL=... gunicorn examples.django_app:application` (WSGI) or
`MATOMO_URL=... uvicorn examples.django_app:asgi_application` (ASGI)."""

import os

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only"),
    MIDDLEWARE=["matomo_wsgi.django.MatomoMiddleware"],
    MATOMO_API_TRACKING={
        "url": os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
        "site_id": int(os.environ.get("MATOMO_SITE_ID", "1")),
        "token_auth": os.environ.get("MATOMO_TOKEN_AUTH") or None,
        "ignore_paths": ["/admin"],
    },
)
django.setup()


def article(request: HttpRequest, slug: str) -> JsonResponse:
    return JsonResponse({"slug": slug})


urlpatterns = [path("articles/<slug:slug>/", article)]

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
asgi_application = get_asgi_application()
