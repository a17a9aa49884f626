"""Django template tag libraries of ``matomo_wsgi`` (``{% load matomo %}``)."""

__all__: list[str] = []
