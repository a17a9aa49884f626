"""URLs of the test Django project."""

from __future__ import annotations

from django.urls import path, re_path

from tests.wsgi.django_project import views

urlpatterns = [
    path("items/<int:pk>/", views.item),
    path("async-items/<int:pk>/", views.async_item),
    path("event/", views.event),
    path("clone/", views.clone),
    path("skipped/", views.skipped),
    path("boom/", views.boom),
    path("stream/", views.stream),
    path("async-stream/", views.async_stream),
    path("download/", views.download),
    path("html/", views.html),
    re_path(r"^legacy/(?P<year>[0-9]{4})/$", views.html),
]
