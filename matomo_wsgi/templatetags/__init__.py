"""Django template tag libraries of ``matomo_wsgi`` (``{% load matomo %}``)."""
