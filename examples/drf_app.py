"""Django REST framework, tracked by the Django middleware (the route comes from Django's
resolver): `MATOMO_URL=... gunicorn examples.drf_app:application`."""

import os

import django
from django.conf import settings

settings.configure(
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only"),
    INSTALLED_APPS=["rest_framework"],
    REST_FRAMEWORK={"DEFAULT_AUTHENTICATION_CLASSES": [], "UNAUTHENTICATED_USER": None},
    MIDDLEWARE=["matomo_wsgi.django.MatomoMiddleware"],
    MATOMO_API_TRACKING={
        "url": os.environ.get("MATOMO_URL", "http://127.0.0.1:8765"),
        "site_id": int(os.environ.get("MATOMO_SITE_ID", "1")),
        "token_auth": os.environ.get("MATOMO_TOKEN_AUTH") or None,
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from rest_framework import routers, viewsets  # noqa: E402
from rest_framework.response import Response  # noqa: E402


class BookViewSet(viewsets.ViewSet):
    def retrieve(self, request: object, pk: str) -> Response:
        return Response({"book": pk})


router = routers.DefaultRouter(use_regex_path=False)
router.register("books", BookViewSet, basename="book")
urlpatterns = router.urls
application = get_wsgi_application()
