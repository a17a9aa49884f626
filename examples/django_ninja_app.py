"""Django Ninja, tracked by the Django middleware (the route comes from Django's resolver):
`MATOMO_URL=... gunicorn examples.django_ninja_app:application`."""

import os

import django
from django.conf import settings
from django.urls import path

settings.configure(
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only"),
    MIDDLEWARE=["matomo_wsgi.django.MatomoMiddleware"],
    MATOMO_API_TRACKING={
        "url": os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
        "site_id": int(os.environ.get("MATOMO_SITE_ID", "1")),
        "token_auth": os.environ.get("MATOMO_TOKEN_AUTH") or None,
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from ninja import NinjaAPI  # noqa: E402

api = NinjaAPI()


@api.get("/items/{item_id}")
def read_item(request: object, item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


urlpatterns = [path("api/", api.urls)]
application = get_wsgi_application()
